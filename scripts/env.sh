# Source this file (bash): puts the project's virtualenv and the colcon install space in place, so
# install/dpt_ros/lib/dpt_ros/<executable> --ros-args ... runs exactly as `ros2 run` would.
_dpt_ros_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -x "$_dpt_ros_root/.venv/bin/python" ]; then
  echo "dpt_ros: no .venv yet; run scripts/setup.sh (or make setup) first" >&2
  return 1 2>/dev/null || exit 1
fi
# shellcheck disable=SC1091
source "$_dpt_ros_root/.venv/bin/activate"
# The ROS 2 wheels install into the virtualenv's prefix: it is the underlay that ament and CMake
# search (what /opt/ros/jazzy is on a normal install).
case ":${AMENT_PREFIX_PATH:-}:" in *":$VIRTUAL_ENV:"*) ;; *) export AMENT_PREFIX_PATH="$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}";; esac
case ":${CMAKE_PREFIX_PATH:-}:" in *":$VIRTUAL_ENV:"*) ;; *) export CMAKE_PREFIX_PATH="$VIRTUAL_ENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}";; esac
export ROS_DISTRO=jazzy
export ROS_VERSION=2
export ROS_PYTHON_VERSION=3
export RMW_IMPLEMENTATION="${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}"
# Discovery stays on this host unless the caller says otherwise (tests and the demo need no network).
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
# The wheels' libraries live in the venv's lib/ and site-packages/ros_*.libs; set the library path
# here too so child processes (colcon, CMake's generators, our executables) find them.
for _dpt_ros_lib in "$VIRTUAL_ENV/lib" "$VIRTUAL_ENV"/lib/python3.11/site-packages/ros_*.libs; do
  case ":${LD_LIBRARY_PATH:-}:" in *":$_dpt_ros_lib:"*) ;; *) export LD_LIBRARY_PATH="$_dpt_ros_lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}";; esac
done
mkdir -p "$_dpt_ros_root/log"
if [ -f "$_dpt_ros_root/install/setup.bash" ]; then
  # colcon's setup scripts read unset variables; relax nounset while sourcing them.
  _dpt_ros_nounset="$(set +o | grep nounset)"; set +u
  # shellcheck disable=SC1091
  source "$_dpt_ros_root/install/setup.bash"
  eval "$_dpt_ros_nounset"
  # Our executables by name (evaluate_bag, dpt_node, demo_camera), as `ros2 run dpt_ros <name>` finds them.
  case ":${PATH}:" in *":$_dpt_ros_root/install/dpt_ros/lib/dpt_ros:"*) ;; *) export PATH="$_dpt_ros_root/install/dpt_ros/lib/dpt_ros:$PATH";; esac
fi
unset _dpt_ros_root _dpt_ros_lib _dpt_ros_nounset
