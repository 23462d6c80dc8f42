"""dpt_node and evaluate_bag give the same bytes for the same frames.

The installed dpt_node runs in its own process, driven over DDS (as in test_node_integration.py);
evaluate_bag reads a bag holding the very messages that were published (serialized by rclpy).
Both load the same checkpoints and use the same depth settings, and every compared output is
equal byte for byte as serialized CDR: depth/image, depth/relative, segmentation/labels, points,
depth/camera_info.  (Fast CDR, under rclpy, leaves alignment padding uninitialised, so both sides
are compared as canonical CDR: deserialized and serialized again by rosbags, which zeroes the
padding; two messages give the same canonical bytes exactly when every field is byte-equal.)
"""
from __future__ import annotations

import numpy as np
import pytest

from support.bags import write_tiny_checkpoints
from support.frames import decode_float_image, make_camera_info, make_image

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

NAMESPACE = "/parity"
FRAMES = 3
# A negative shift, as fitted shifts often are: some pixels have non-positive inverse depth, and
# some lie beyond the range, so the depth validity rule is compared too, not only finite values.
DEPTH = {"scale": 0.5, "shift": -0.2, "max_range": 8.0}
RECORDING_DELAY_NS = 5_000_000
COMPARED = ("depth/image", "depth/relative", "segmentation/labels", "points", "depth/camera_info")


def write_input_bag(path, images, infos) -> None:
    """The published messages, serialized by rclpy, written into an mcap bag with rosbags."""
    from rclpy.serialization import serialize_message
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_JAZZY)
    writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
    writer.open()
    image_conn = writer.add_connection("/cam/image", "sensor_msgs/msg/Image", typestore=typestore)
    info_conn = writer.add_connection("/cam/camera_info", "sensor_msgs/msg/CameraInfo", typestore=typestore)
    for image, info in zip(images, infos):
        recorded = image.header.stamp.sec * 1_000_000_000 + RECORDING_DELAY_NS
        writer.write(info_conn, recorded, serialize_message(info))
        writer.write(image_conn, recorded + 1, serialize_message(image))
    writer.close()


def canonical_cdr(raw: bytes, msgtype: str) -> bytes:
    """The CDR bytes of a message with zeroed alignment padding."""
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_JAZZY)
    return bytes(typestore.serialize_cdr(typestore.deserialize_cdr(raw, msgtype), msgtype))


def bagged_outputs(path) -> dict[tuple[str, int], tuple[str, bytes]]:
    """{(topic without prefix, stamp sec): (type, canonical CDR)} of the evaluator's output bag."""
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    typestore = get_typestore(Stores.ROS2_JAZZY)
    outputs = {}
    with Reader(path) as reader:
        for connection, _, raw in reader.messages():
            name = connection.topic.removeprefix("/dpt/")
            if name in COMPARED:
                stamp = typestore.deserialize_cdr(raw, connection.msgtype).header.stamp.sec
                outputs[(name, stamp)] = (connection.msgtype, canonical_cdr(raw, connection.msgtype))
    return outputs


def test_node_and_evaluate_bag_give_the_same_bytes(tmp_path, capsys):
    from rclpy.serialization import serialize_message
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from dpt_ros.evaluation.cli import main
    from support.ros_harness import Harness, start_executable, stop

    depth_weights, segmentation_weights = write_tiny_checkpoints(tmp_path)
    images = [make_image(seq) for seq in range(FRAMES)]
    infos = [make_camera_info(seq) for seq in range(FRAMES)]

    write_input_bag(tmp_path / "in", images, infos)
    code = main([str(tmp_path / "in"), "--image-topic", "/cam/image", "--camera-info-topic", "/cam/camera_info",
                 "--variant", "dpt_tiny", "--weights", str(depth_weights),
                 "--segmentation-weights", str(segmentation_weights), "--tasks", "depth", "segmentation",
                 "--device", "cpu", "--input-size", "64", "--depth-scale", str(DEPTH["scale"]),
                 "--depth-shift", str(DEPTH["shift"]), "--depth-max-range", str(DEPTH["max_range"]),
                 "--output-bag", str(tmp_path / "out"), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    bagged = bagged_outputs(tmp_path / "out")

    log = tmp_path / "dpt_node.log"
    process = start_executable(
        "dpt_node", "-r", f"__ns:={NAMESPACE}",
        "-p", "model.variant:=dpt_tiny", "-p", f"model.weights:={depth_weights}",
        "-p", f"model.segmentation_weights:={segmentation_weights}", "-p", "model.tasks:=both",
        "-p", "device:=cpu", "-p", "input_size:=64", "-p", f"depth.scale:={DEPTH['scale']}",
        "-p", f"depth.shift:={DEPTH['shift']}", "-p", f"depth.max_range:={DEPTH['max_range']}",
        "-p", "qos.input.reliability:=reliable", "-p", "qos.input.depth:=100", log_path=log)
    harness = Harness("parity_harness")
    try:
        types = {"points": PointCloud2, "depth/camera_info": CameraInfo}
        for name in COMPARED:
            harness.subscribe(types.get(name, Image), f"{NAMESPACE}/{name}")
        image_pub = harness.publisher(Image, f"{NAMESPACE}/image")
        info_pub = harness.publisher(CameraInfo, f"{NAMESPACE}/camera_info")
        harness.wait_for_node(process, log, image_pub)
        harness.wait_for_subscribers(info_pub)

        def received(name: str, stamp: int):
            return [m for m in harness.messages(f"{NAMESPACE}/{name}") if m.header.stamp.sec == stamp]

        for image, info in zip(images, infos):  # one at a time: the node keeps only the newest frame
            stamp = image.header.stamp.sec
            info_pub.publish(info)
            image_pub.publish(image)
            harness.wait_for(lambda: all(received(name, stamp) for name in COMPARED), 60,
                             f"every output of frame {stamp}\n{log.read_text()}")

        for image in images:
            stamp = image.header.stamp.sec
            for name in COMPARED:
                (published,) = received(name, stamp)
                msgtype, bagged_bytes = bagged[(name, stamp)]
                assert canonical_cdr(serialize_message(published), msgtype) == bagged_bytes, (name, stamp)
        # What was compared covers valid and invalid depth (the validity rule), and labels.
        depth = decode_float_image(received("depth/image", images[0].header.stamp.sec)[0])
        assert np.isfinite(depth).any() and not np.isfinite(depth).all()
        assert len(set(bytes(received("segmentation/labels", images[0].header.stamp.sec)[0].data))) > 1
        assert len(bagged) == len(COMPARED) * FRAMES
    finally:
        code = stop(process)
        harness.close()
    assert code in (0, -2), f"dpt_node exit code {code}:\n{log.read_text()}"
