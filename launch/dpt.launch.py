"""Start dpt_node on one camera; optionally the demo camera too.

  ros2 launch dpt_ros dpt.launch.py image:=/camera/image_raw camera_info:=/camera/camera_info
  ros2 launch dpt_ros dpt.launch.py demo:=true                  # no camera needed
  ros2 launch dpt_ros dpt.launch.py namespace:=front variant:=dpt_hybrid_kitti device:=cuda
  ros2 launch dpt_ros dpt.launch.py params_file:=$(ros2 pkg prefix dpt_ros)/share/dpt_ros/config/indoor.yaml
  ros2 launch dpt_ros dpt.launch.py --show-args                 # every argument, documented

The node's parameters come from params_file (default: the installed config/dpt.yaml); the
`variant` and `device` arguments override model.variant and device only when they are given, so an
empty argument never replaces what the file says.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = 'dpt_ros'
# Default parameter file, relative to the package's share directory (checked by
# test/test_install_layout.py, which reads this constant without importing launch).
DEFAULT_PARAMS_FILE = ('config', 'dpt.yaml')

# name -> (default, description); the default of params_file is filled in at launch time.
ARGUMENTS = {
    'params_file': (None, 'YAML parameter file of dpt_node (default: the installed config/dpt.yaml; '
                          'examples: config/metric_outdoor.yaml, config/indoor.yaml)'),
    'namespace': ('', "namespace of the node(s), e.g. a camera's name: topics become <namespace>/..."),
    'image': ('image', 'input image topic (sensor_msgs/Image); <image>/compressed for the compressed '
                       'transport'),
    'camera_info': ('camera_info', 'input camera_info topic (sensor_msgs/CameraInfo)'),
    'variant': ('', "override model.variant (dpt_large, dpt_hybrid, dpt_base, dpt_hybrid_kitti, "
                    "dpt_hybrid_nyu, dpt_tiny); empty = the params file's"),
    'device': ('', "override device (auto, cpu, cuda, cuda:N); empty = the params file's"),
    'use_sim_time': ('false', 'use the /clock topic as the time source (true when playing bags; the '
                              'demo camera then publishes only while /clock runs)'),
    'demo': ('false', 'also start demo_camera, publishing a synthetic scene on the same topics'),
}

_TRUE = ('true', '1', 'yes', 'on')
_FALSE = ('false', '0', 'no', 'off')


def _flag(context, name):
    text = LaunchConfiguration(name).perform(context).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError(f"launch argument {name}:={text!r} is neither true nor false")


def _actions(context):
    """The nodes, built once the arguments' values are known (an OpaqueFunction), so that empty
    overrides can be left out instead of being passed as empty strings."""
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    namespace = value['namespace'] or None  # None: no namespace of its own, enclosing ones apply
    use_sim_time = _flag(context, 'use_sim_time')
    image = value['image']
    # image_transport's convention: the compressed stream of topic T is T/compressed, so a remapped
    # input drags its compressed topic along.
    remappings = [
        ('image', image),
        ('camera_info', value['camera_info']),
        ('image/compressed', image.rstrip('/') + '/compressed'),
    ]

    # Only the arguments actually given: an empty string must not replace the params file's value.
    overrides = {key: value[name] for name, key in (('variant', 'model.variant'), ('device', 'device'))
                 if value[name]}
    parameters = [value['params_file']] + ([overrides] if overrides else []) + [{'use_sim_time': use_sim_time}]

    actions = [
        Node(
            package=PACKAGE,
            executable='dpt_node',
            name='dpt_node',
            namespace=namespace,
            parameters=parameters,
            remappings=remappings,
            output='screen',
            emulate_tty=True,
        ),
    ]
    if _flag(context, 'demo'):
        # Publishes exactly the topics dpt_node subscribes to, whatever they were remapped to.
        actions.append(Node(
            package=PACKAGE,
            executable='demo_camera',
            name='demo_camera',
            namespace=namespace,
            parameters=[{'use_sim_time': use_sim_time}],
            remappings=remappings,
            output='screen',
            emulate_tty=True,
        ))
    return actions


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory(PACKAGE), *DEFAULT_PARAMS_FILE)
    arguments = [
        DeclareLaunchArgument(name, default_value=default_params if default is None else default,
                              description=description)
        for name, (default, description) in ARGUMENTS.items()
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_actions)])
