"""launch/dpt.launch.py end to end with launch_pytest: demo_camera -> dpt_node -> depth/relative.

Runs the installed launch file with demo:=true, the dpt_tiny variant (random weights, allowed by a
parameter file written for the test, which also exercises params_file:=) on the CPU, in a
namespace, and waits for the node's first relative depth image.

launch, launch_ros and launch_pytest are not installable from PyPI, so where they are missing the
whole module is skipped (with the reason) before anything that needs them is imported; a ROS 2
installation from the ROS apt repository has them.
"""
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.ros

_WHY = "the ROS 2 launch packages are not installed (not available from PyPI); install ros-jazzy-launch-pytest"
launch_pytest = pytest.importorskip("launch_pytest", reason=_WHY)
pytest.importorskip("launch_ros", reason=_WHY)

import launch  # noqa: E402  (only importable once the skips above have passed)
from launch.actions import IncludeLaunchDescription, RegisterEventHandler  # noqa: E402
from launch.event_handlers import OnProcessIO  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402

NAMESPACE = "dpt_launch_test"
DEPTH_TIMEOUT_S = 180.0  # model construction and the first CPU inference included


def share_directory():
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory("dpt_ros"))


@pytest.fixture
def params_file(tmp_path):
    """The installed default parameters, with random weights allowed (dpt_tiny has no checkpoint)."""
    document = yaml.safe_load((share_directory() / "config" / "dpt.yaml").read_text())
    model = document["/**"]["ros__parameters"]["model"]
    model["weights"] = ""
    model["allow_random_weights"] = True
    path = tmp_path / "dpt_tiny_random.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
def process_output():
    """Process name (e.g. 'dpt_node-1') -> everything it has printed so far, stdout and stderr."""
    return {}


@launch_pytest.fixture
def dpt_demo_launch(params_file, process_output):
    def record(event):
        text = event.text.decode(errors="replace")
        process_output[event.process_name] = process_output.get(event.process_name, "") + text

    return launch.LaunchDescription([
        # Registered before the include, so no line of the nodes' output is missed.
        RegisterEventHandler(OnProcessIO(on_stdout=record, on_stderr=record)),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(str(share_directory() / "launch" / "dpt.launch.py")),
            launch_arguments={
                "demo": "true",
                "namespace": NAMESPACE,
                "variant": "dpt_tiny",
                "device": "cpu",
                "params_file": str(params_file),
            }.items(),
        ),
        launch_pytest.actions.ReadyToTest(),
    ])


def wait_for_message(topic, msg_type, timeout_s):
    import rclpy
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import qos_profile_sensor_data

    received = []
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("dpt_launch_observer", context=context)
    node.create_subscription(msg_type, topic, received.append, qos_profile_sensor_data)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    deadline = time.monotonic() + timeout_s
    try:
        while not received and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    return received[0] if received else None


def printed(process_output):
    return "\n".join(f"--- {name}\n{text}" for name, text in sorted(process_output.items()))


@pytest.mark.launch(fixture=dpt_demo_launch)
def test_demo_frames_come_out_as_relative_depth_in_the_namespace(process_output):
    from sensor_msgs.msg import Image

    depth = wait_for_message(f"/{NAMESPACE}/depth/relative", Image, DEPTH_TIMEOUT_S)
    assert depth is not None, f"no /{NAMESPACE}/depth/relative within {DEPTH_TIMEOUT_S:.0f} s\n{printed(process_output)}"
    # Same size and optical frame as the demo camera's image (640x480 by default).
    assert (depth.width, depth.height, depth.encoding) == (640, 480, "32FC1")
    assert depth.header.frame_id == "demo_camera_optical_frame"
    values = np.frombuffer(bytes(depth.data), dtype="<f4" if not depth.is_bigendian else ">f4")
    assert values.size == 640 * 480 and np.isfinite(values).any()

    # Both nodes ran under launch, and dpt_node logged under its own name in the namespace.
    names = set(process_output)
    assert any(name.startswith("dpt_node") for name in names), printed(process_output)
    assert any(name.startswith("demo_camera") for name in names), printed(process_output)
    node_output = "".join(text for name, text in process_output.items() if name.startswith("dpt_node"))
    assert "dpt_node]" in node_output, printed(process_output)
