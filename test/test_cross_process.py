"""Our messages and a sensor_msgs/Image cross from one OS process to another over DDS, intact."""
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.ros

TEST_DIR = Path(__file__).parent


@pytest.fixture
def sample_publisher():
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TEST_DIR), os.environ.get("PYTHONPATH", "")]))
    process = subprocess.Popen([sys.executable, str(TEST_DIR / "support" / "publish_samples.py"), "60"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    yield process
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()


def receive_one_of_each(topics_and_types, timeout_s=30.0):
    import rclpy

    from rclpy.executors import SingleThreadedExecutor

    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("sample_receiver", context=context)
    received = {}
    for topic, msg_type in topics_and_types:
        node.create_subscription(msg_type, topic, lambda msg, t=topic: received.setdefault(t, msg), 10)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    deadline = time.monotonic() + timeout_s
    try:
        while len(received) < len(topics_and_types) and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.shutdown(context=context)
    return received


def test_messages_cross_processes_intact(sample_publisher):
    from sensor_msgs.msg import Image

    from dpt_ros.msg import InferenceStats, LabelInfo
    from support import sample_messages

    received = receive_one_of_each([("samples/image", Image), ("samples/label_info", LabelInfo),
                                    ("samples/stats", InferenceStats)])
    if len(received) < 3:
        sample_publisher.terminate()
        output = sample_publisher.communicate(timeout=10)[0].decode(errors="replace")
        pytest.fail(f"received only {sorted(received)}; publisher output:\n{output}")

    image = received["samples/image"]
    assert (image.height, image.width, image.encoding, image.step) == (48, 64, "rgb8", 192)
    assert image.header == sample_messages.header()
    pixels = np.frombuffer(bytes(image.data), dtype=np.uint8).reshape(48, 64, 3)
    np.testing.assert_array_equal(pixels, sample_messages.image_pixels())

    # Generated message classes compare every field, nested headers and arrays included.
    assert received["samples/label_info"] == sample_messages.label_info()
    stats = received["samples/stats"]
    assert stats == sample_messages.inference_stats()
    assert stats.frames_received == 2**40 + 4 and stats.frames_failed == 1  # uint64 survives the wire


def test_our_messages_come_from_the_install_space():
    import dpt_ros.msg

    module_file = Path(dpt_ros.msg.__file__).resolve()
    assert "install" in module_file.parts, module_file
    # The generated C extension is what DDS uses; it must sit beside the module.
    assert list(module_file.parent.parent.glob("dpt_ros_s__rosidl_typesupport_*.so"))
