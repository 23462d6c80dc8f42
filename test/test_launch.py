"""launch/dpt.launch.py end to end with launch_pytest: every `ros2 launch` example of the README.

Each example is included with the arguments the README gives (test/support/launch_examples.py
lists them, and test_install_layout.py checks that list against the README). Where an example
needs weights that cannot be downloaded here, the node runs the tiny model with random weights
instead (the only arguments added); the example that needs the KITTI checkpoint and a GPU must end
the whole launch with the node's one error line.

launch, launch_ros and launch_pytest are not installable from PyPI, so where they are missing the
whole module is skipped (with the reason) before anything that needs them is imported; a ROS 2
installation from the ROS apt repository has them.
"""
import time
from pathlib import Path

import numpy as np
import pytest

from support.launch_examples import EXAMPLES, launch_arguments

pytestmark = pytest.mark.ros

_WHY = "the ROS 2 launch packages are not installed (not available from PyPI); install ros-jazzy-launch-pytest"
launch_pytest = pytest.importorskip("launch_pytest", reason=_WHY)
pytest.importorskip("launch_ros", reason=_WHY)

import launch  # noqa: E402  (only importable once the skips above have passed)
from launch.actions import IncludeLaunchDescription, RegisterEventHandler  # noqa: E402
from launch.event_handlers import OnProcessIO  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

TIMEOUT_S = 180.0  # model construction and the first CPU inference on a loaded machine included
OFFLINE = {"variant": "dpt_tiny", "allow_random_weights": "true", "device": "cpu"}


def share_directory():
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("dpt_ros"))


def example(kind: str) -> str:
    return next(arguments for arguments, behaviour in EXAMPLES.items() if behaviour == kind)


def included(arguments: dict, process_output: dict):
    def record(event):
        text = event.text.decode(errors="replace")
        process_output[event.process_name] = process_output.get(event.process_name, "") + text

    return launch.LaunchDescription([
        # Registered before the include, so no line of the nodes' output is missed.
        RegisterEventHandler(OnProcessIO(on_stdout=record, on_stderr=record)),
        IncludeLaunchDescription(PythonLaunchDescriptionSource(str(share_directory() / "launch" / "dpt.launch.py")),
                                 launch_arguments=arguments.items()),
        launch_pytest.actions.ReadyToTest(),
    ])


@pytest.fixture
def process_output():
    """Process name (e.g. 'dpt_node-1') -> everything it has printed so far, stdout and stderr."""
    return {}


def printed(process_output):
    return "\n".join(f"--- {name}\n{text}" for name, text in sorted(process_output.items()))


def node_output(process_output) -> str:
    """What the dpt_node process(es) of the launch printed so far."""
    return "".join(text for name, text in process_output.items() if name.startswith("dpt_node"))


class Observer:
    """A node of the test's own, in its own context, spun by hand while waiting."""

    def __init__(self):
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node("dpt_launch_observer", context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)

    def spin_until(self, condition, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if condition():
                return True
            self.executor.spin_once(timeout_sec=0.1)
        return condition()

    def first_message(self, topic, msg_type, timeout_s, between=None):
        from rclpy.qos import qos_profile_sensor_data

        received = []
        self.node.create_subscription(msg_type, topic, received.append, qos_profile_sensor_data)
        deadline = time.monotonic() + timeout_s
        while not received and time.monotonic() < deadline:
            if between is not None:
                between()
            self.executor.spin_once(timeout_sec=0.1)
        return received[0] if received else None

    def call(self, srv_type, name, request, timeout_s=60.0):
        client = self.node.create_client(srv_type, name)
        assert self.spin_until(client.service_is_ready, timeout_s), f"service {name} not available"
        future = client.call_async(request)
        assert self.spin_until(future.done, timeout_s), f"no reply from {name}"
        return future.result()

    def close(self):
        import rclpy

        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def observer():
    node = Observer()
    yield node
    node.close()


def assert_relative_depth(message, width=640, height=480):
    assert message is not None
    assert (message.width, message.height, message.encoding) == (width, height, "32FC1")
    values = np.frombuffer(bytes(message.data), dtype="<f4")
    assert values.size == width * height and np.isfinite(values).any()


def assert_no_traceback(process_output):
    assert "Traceback" not in printed(process_output), printed(process_output)


# ---------------------------------------------------------------------------------------------
# ros2 launch dpt_ros dpt.launch.py image:=/camera/color/image_raw camera_info:=/camera/color/camera_info
# ---------------------------------------------------------------------------------------------

@launch_pytest.fixture
def camera_launch(process_output):
    return included({**launch_arguments(example("camera")), **OFFLINE}, process_output)


@pytest.mark.launch(fixture=camera_launch)
def test_readme_camera_example_reads_the_remapped_topics(process_output, observer):
    from sensor_msgs.msg import CameraInfo, Image

    from support.frames import HEIGHT, WIDTH, make_camera_info, make_image

    images = observer.node.create_publisher(Image, "/camera/color/image_raw", 10)
    infos = observer.node.create_publisher(CameraInfo, "/camera/color/camera_info", 10)
    sequence = iter(range(10_000))

    def publish_frame():
        seq = next(sequence)
        if seq % 5 == 0:
            infos.publish(make_camera_info(seq))
            images.publish(make_image(seq))

    depth = observer.first_message("/depth/relative", Image, TIMEOUT_S, between=publish_frame)
    assert depth is not None, printed(process_output)
    assert_relative_depth(depth, WIDTH, HEIGHT)
    assert depth.header.frame_id == "test_optical_frame"
    assert_no_traceback(process_output)


# ---------------------------------------------------------------------------------------------
# ros2 launch dpt_ros dpt.launch.py demo:=true variant:=dpt_tiny allow_random_weights:=true
# ---------------------------------------------------------------------------------------------

@launch_pytest.fixture
def demo_launch(process_output):
    return included(launch_arguments(example("demo")), process_output)


@pytest.mark.launch(fixture=demo_launch)
def test_readme_demo_example_works_verbatim(process_output, observer):
    from sensor_msgs.msg import Image

    depth = observer.first_message("/depth/relative", Image, TIMEOUT_S)
    assert depth is not None, f"no /depth/relative within {TIMEOUT_S:.0f} s\n{printed(process_output)}"
    assert_relative_depth(depth)
    assert depth.header.frame_id == "demo_camera_optical_frame"
    names = set(process_output)
    assert any(name.startswith("dpt_node") for name in names), printed(process_output)
    assert any(name.startswith("demo_camera") for name in names), printed(process_output)
    # The demo camera publishes camera_info before the image: every frame pairs without a warning.
    assert "no camera_info" not in node_output(process_output), printed(process_output)
    assert_no_traceback(process_output)


# ---------------------------------------------------------------------------------------------
# ros2 launch dpt_ros dpt.launch.py namespace:=front variant:=dpt_hybrid_kitti device:=cuda
# ---------------------------------------------------------------------------------------------

@launch_pytest.fixture
def kitti_launch(process_output):
    return included(launch_arguments(example("fails_without_weights_or_gpu")), process_output)


@pytest.mark.launch(fixture=kitti_launch)
def test_readme_kitti_example_without_weights_ends_the_launch_with_one_error(process_output, launch_service):
    """Here (no downloadable checkpoint, no GPU) dpt_node must fail with one error line, and the whole
    launch must end with it (the launch file's on_exit=Shutdown)."""
    deadline = time.monotonic() + TIMEOUT_S
    while "ERROR" not in node_output(process_output) and time.monotonic() < deadline:
        time.sleep(0.2)
    while not launch_service.task.done() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert launch_service.task.done(), f"the launch did not end with dpt_node\n{printed(process_output)}"
    errors = [line for line in node_output(process_output).splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "dpt_hybrid_kitti" in errors[0], printed(process_output)
    assert_no_traceback(process_output)


# ---------------------------------------------------------------------------------------------
# ros2 launch dpt_ros dpt.launch.py cameras:='[front, left]' demo:=true variant:=dpt_tiny ...
# ---------------------------------------------------------------------------------------------

@launch_pytest.fixture
def cameras_launch(process_output):
    return included(launch_arguments(example("cameras")), process_output)


@pytest.mark.launch(fixture=cameras_launch)
def test_readme_cameras_example_serves_one_demo_camera_per_namespace(process_output, observer):
    from sensor_msgs.msg import Image

    for camera in ("front", "left"):
        depth = observer.first_message(f"/{camera}/depth/relative", Image, TIMEOUT_S)
        assert depth is not None, f"no /{camera}/depth/relative\n{printed(process_output)}"
        assert_relative_depth(depth)
    assert sum(name.startswith("demo_camera") for name in process_output) == 2, printed(process_output)
    assert_no_traceback(process_output)


# ---------------------------------------------------------------------------------------------
# ros2 launch dpt_ros dpt.launch.py lifecycle:=true demo:=true variant:=dpt_tiny ...
# ---------------------------------------------------------------------------------------------

@launch_pytest.fixture
def lifecycle_launch(process_output):
    return included(launch_arguments(example("lifecycle")), process_output)


@pytest.mark.launch(fixture=lifecycle_launch)
def test_readme_lifecycle_example_waits_for_configure_and_activate(process_output, observer):
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from sensor_msgs.msg import Image

    state = observer.call(GetState, "/dpt_node/get_state", GetState.Request(), TIMEOUT_S).current_state.id
    assert state == State.PRIMARY_STATE_UNCONFIGURED
    for transition in (Transition.TRANSITION_CONFIGURE, Transition.TRANSITION_ACTIVATE):
        request = ChangeState.Request(transition=Transition(id=transition))
        assert observer.call(ChangeState, "/dpt_node/change_state", request, TIMEOUT_S).success
    assert_relative_depth(observer.first_message("/depth/relative", Image, TIMEOUT_S))
    assert_no_traceback(process_output)


# ---------------------------------------------------------------------------------------------
# ros2 launch dpt_ros dpt.launch.py params_file:=my_scale.yaml image:=/camera/image_raw camera_info:=...
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def my_scale_yaml(tmp_path, monkeypatch):
    """The README's my_scale.yaml, written where the example's relative path finds it."""
    from support.launch_examples import readme_yaml_block

    (tmp_path / "my_scale.yaml").write_text(readme_yaml_block("my_scale.yaml"))
    monkeypatch.chdir(tmp_path)
    return tmp_path / "my_scale.yaml"


@launch_pytest.fixture
def fixed_scale_launch(my_scale_yaml, process_output):
    return included({**launch_arguments(example("fixed_scale")), **OFFLINE}, process_output)


@pytest.mark.launch(fixture=fixed_scale_launch)
def test_readme_fixed_scale_example_publishes_metres(process_output, observer, my_scale_yaml):
    import yaml
    from sensor_msgs.msg import CameraInfo, Image

    from support.frames import make_camera_info, make_image

    depth_settings = yaml.safe_load(my_scale_yaml.read_text())["/**"]["ros__parameters"]["depth"]
    images = observer.node.create_publisher(Image, "/camera/image_raw", 10)
    infos = observer.node.create_publisher(CameraInfo, "/camera/camera_info", 10)
    sequence = iter(range(10_000))

    def publish_frame():
        seq = next(sequence)
        if seq % 5 == 0:
            infos.publish(make_camera_info(seq))
            images.publish(make_image(seq))

    depth = observer.first_message("/depth/image", Image, TIMEOUT_S, between=publish_frame)
    assert depth is not None, printed(process_output)
    metres = np.frombuffer(bytes(depth.data), dtype="<f4")
    # 1 / (scale * output + shift) with the file's small scale: close to 1 / shift everywhere.
    assert np.nanmax(np.abs(metres - 1.0 / depth_settings["shift"])) < 0.5 / depth_settings["shift"]
    assert_no_traceback(process_output)


# ---------------------------------------------------------------------------------------------
# ros2 launch dpt_ros dpt.launch.py namespace:=front params_file:=$(ros2 pkg prefix dpt_ros)/.../lidar_aligned.yaml
# ---------------------------------------------------------------------------------------------

@launch_pytest.fixture
def lidar_aligned_launch(process_output):
    from ament_index_python.packages import get_package_prefix

    return included({**launch_arguments(example("lidar_aligned"), get_package_prefix("dpt_ros")), **OFFLINE},
                    process_output)


@pytest.mark.launch(fixture=lidar_aligned_launch)
def test_readme_lidar_aligned_example_reports_its_alignment_in_the_namespace(process_output, observer):
    """Without a lidar publishing, every frame still gets its depth/alignment (no estimate yet) and
    relative depth, in the example's namespace."""
    from sensor_msgs.msg import CameraInfo, Image

    from dpt_ros.msg import DepthAlignment
    from support.frames import make_camera_info, make_image

    images = observer.node.create_publisher(Image, "/front/image", 10)
    infos = observer.node.create_publisher(CameraInfo, "/front/camera_info", 10)
    sequence = iter(range(10_000))

    def publish_frame():
        seq = next(sequence)
        if seq % 5 == 0:
            infos.publish(make_camera_info(seq))
            images.publish(make_image(seq))

    alignment = observer.first_message("/front/depth/alignment", DepthAlignment, TIMEOUT_S, between=publish_frame)
    assert alignment is not None, printed(process_output)
    assert alignment.state == DepthAlignment.STATE_NONE and alignment.header.frame_id == "test_optical_frame"
    assert_no_traceback(process_output)


# ---------------------------------------------------------------------------------------------
# ros2 launch dpt_ros dpt.launch.py --show-args
# ---------------------------------------------------------------------------------------------

def test_readme_show_args_lists_every_documented_argument():
    """What --show-args prints: the launch description's declared arguments, each documented."""
    assert EXAMPLES["--show-args"] == "show_args"
    source = PythonLaunchDescriptionSource(str(share_directory() / "launch" / "dpt.launch.py"))
    declared = {argument.name: argument.description for argument in
                source.get_launch_description(launch.LaunchContext()).get_launch_arguments()}
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for name, description in declared.items():
        assert description, name
        assert f"`{name}`" in readme, f"launch argument {name} is not in the README's table"
