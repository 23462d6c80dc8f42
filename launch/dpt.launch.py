"""Start dpt_node on one camera or several; optionally demo cameras too.

  ros2 launch dpt_ros dpt.launch.py image:=/camera/color/image_raw camera_info:=/camera/color/camera_info
  ros2 launch dpt_ros dpt.launch.py demo:=true variant:=dpt_tiny allow_random_weights:=true   # no camera needed
  ros2 launch dpt_ros dpt.launch.py namespace:=front variant:=dpt_hybrid_kitti device:=cuda
  ros2 launch dpt_ros dpt.launch.py cameras:='[front, left]' demo:=true variant:=dpt_tiny allow_random_weights:=true
  ros2 launch dpt_ros dpt.launch.py lifecycle:=true        # managed: ros2 lifecycle set /dpt_node configure
  ros2 launch dpt_ros dpt.launch.py --show-args             # every argument, documented

The node's parameters come from params_file (default: the installed config/dpt.yaml); the other
arguments override single parameters only when they are given, so an empty argument never replaces
what the file says. The whole launch ends when dpt_node exits (a model that cannot load, a
shutdown transition), so a supervisor sees it. Every node started here uses the installed Fast DDS
profile with large shared-memory segments (fastdds_profile:='' keeps the environment's settings).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction, Shutdown
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = 'dpt_ros'
# Default files, relative to the package's share directory (checked by test/test_install_layout.py,
# which reads these constants without importing launch).
DEFAULT_PARAMS_FILE = ('config', 'dpt.yaml')
DEFAULT_FASTDDS_PROFILE = ('config', 'fastdds_large_shm.xml')
LOG_LEVELS = ('debug', 'info', 'warn', 'error', 'fatal')

# name -> (default, description); None defaults are files of the installed package, filled in at
# launch time.
ARGUMENTS = {
    'params_file': (None, 'YAML parameter file of dpt_node (default: the installed config/dpt.yaml; '
                          'examples: config/metric_outdoor.yaml, config/indoor.yaml, config/multi_camera.yaml, '
                          'config/lidar_aligned.yaml, config/rgbd_aligned.yaml)'),
    'namespace': ('', "namespace of the node(s), e.g. a camera's name: topics become <namespace>/..."),
    'image': ('image', 'input image topic (sensor_msgs/Image); <image>/compressed for the compressed '
                       'transport (one camera only; with cameras, each reads <camera>/image)'),
    'camera_info': ('camera_info', 'input camera_info topic (sensor_msgs/CameraInfo; one camera only)'),
    'cameras': ('', "camera namespaces served by one dpt_node and batched together, e.g. '[front, left]' or "
                    "front,left; empty = the params file's (one camera unless it lists some)"),
    'variant': ('', "override model.variant (dpt_large, dpt_hybrid, dpt_base, dpt_hybrid_kitti, "
                    "dpt_hybrid_nyu, dpt_tiny); empty = the params file's"),
    'device': ('', "override device (auto, cpu, cuda, cuda:N); empty = the params file's"),
    'allow_random_weights': ('false', 'true: a variant without an official checkpoint (dpt_tiny) or empty '
                                      'weights run with random weights (tests, demos; outputs are meaningless)'),
    'lifecycle': ('false', 'true: dpt_node is a managed node waiting in unconfigured for lifecycle transitions '
                           '(ros2 lifecycle set, or a lifecycle manager); false: it starts active'),
    'log_level': ('info', 'log level of the nodes: ' + ', '.join(LOG_LEVELS)),
    'use_sim_time': ('false', 'use the /clock topic as the time source (true when playing bags; the '
                              'demo camera then publishes only while /clock runs)'),
    'demo': ('false', 'also start demo_camera (one per camera namespace), publishing a synthetic scene on '
                      'the topics dpt_node reads'),
    'fastdds_profile': (None, 'Fast DDS XML profile given to the started nodes (default: the installed '
                              "config/fastdds_large_shm.xml, 64 MB shared-memory segments); '' = none"),
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


def _camera_list(text):
    """'[front, left]', 'front,left' or 'front left' -> ['front', 'left']."""
    names = text.strip().strip('[]').replace(',', ' ').split()
    return [name.strip('\'"') for name in names]


def _actions(context):
    """The nodes, built once the arguments' values are known (an OpaqueFunction), so that empty
    overrides can be left out instead of being passed as empty strings."""
    value = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    params_file = value['params_file']
    if not os.path.isfile(params_file):
        raise FileNotFoundError(f"params_file {params_file!r} does not exist (launch argument params_file)")
    log_level = value['log_level'].strip().lower()
    if log_level not in LOG_LEVELS:
        raise ValueError(f"launch argument log_level:={log_level!r} is not one of {', '.join(LOG_LEVELS)}")
    namespace = value['namespace'] or None  # None: no namespace of its own, enclosing ones apply
    use_sim_time = _flag(context, 'use_sim_time')
    cameras = _camera_list(value['cameras'])
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
    if cameras:
        overrides['cameras'] = cameras
    if _flag(context, 'allow_random_weights'):
        overrides['model.allow_random_weights'] = True
    if _flag(context, 'lifecycle'):
        overrides['managed'] = True
    parameters = [params_file] + ([overrides] if overrides else []) + [{'use_sim_time': use_sim_time}]
    environment = {'FASTDDS_DEFAULT_PROFILES_FILE': value['fastdds_profile']} if value['fastdds_profile'] else {}
    common = dict(output='screen', emulate_tty=True, additional_env=environment,
                  arguments=['--ros-args', '--log-level', log_level])

    actions = [
        Node(
            package=PACKAGE,
            executable='dpt_node',
            name='dpt_node',
            namespace=namespace,
            parameters=parameters,
            remappings=remappings,
            # When dpt_node ends (a model that cannot load, a shutdown transition) the launch ends.
            on_exit=Shutdown(reason='dpt_node exited'),
            **common,
        ),
    ]
    if _flag(context, 'demo'):
        # Publishes exactly the topics dpt_node subscribes to, whatever they were remapped to; with
        # several cameras, one demo camera in each camera's namespace.
        for camera in cameras or ['']:
            camera_namespace = '/'.join(part for part in (value['namespace'], camera) if part) or None
            actions.append(Node(
                package=PACKAGE,
                executable='demo_camera',
                name='demo_camera',
                namespace=camera_namespace,
                parameters=[{'use_sim_time': use_sim_time}],
                remappings=[] if camera else remappings,
                **common,
            ))
    return actions


def generate_launch_description():
    share = get_package_share_directory(PACKAGE)
    files = {'params_file': os.path.join(share, *DEFAULT_PARAMS_FILE),
             'fastdds_profile': os.path.join(share, *DEFAULT_FASTDDS_PROFILE)}
    arguments = [
        DeclareLaunchArgument(name, default_value=files[name] if default is None else default,
                              description=description)
        for name, (default, description) in ARGUMENTS.items()
    ]
    return LaunchDescription(arguments + [OpaqueFunction(function=_actions)])
