"""dpt_node on a metric Depth Anything V2 variant (issue 14), across processes.

The real ViT-S network with random weights, on the CPU, at a small lower-bound network size: the
model's sigmoid x 20 m head gives metres by itself, so depth/image and points are published with no
depth.scale/shift, and the pre-processing is Depth Anything V2's (multiples of 14, lower bound).
"""
from __future__ import annotations

import struct

import numpy as np
import pytest

from support.frames import CX, CY, FX, FY, HEIGHT, WIDTH, decode_float_image, make_camera_info, make_image

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

NAMESPACE = "/dpt_da2"
VARIANT = "depth_anything_v2_metric_hypersim_vits"
HYPERSIM_MAX_DEPTH = 20.0
INPUT_SIZE = 70  # lower bound: a 60x80 image scales by 70/60 -> 70 x 93.3, width to the nearest multiple of 14
NETWORK_SIZE = (70, 98)
NODE_ARGS = (
    "-r", f"__ns:={NAMESPACE}",
    "-p", f"model.variant:={VARIANT}", "-p", "model.weights:=''", "-p", "model.allow_random_weights:=true",
    "-p", "model.tasks:=depth", "-p", "device:=cpu", "-p", f"input_size:={INPUT_SIZE}",
    "-p", "qos.input.reliability:=reliable", "-p", "qos.input.depth:=10",
)


def topic(name: str) -> str:
    return f"{NAMESPACE}/{name}"


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from dpt_ros.msg import InferenceStats
    from support.ros_harness import Harness, start_executable, stop

    log = tmp_path_factory.mktemp("dpt_node_da2") / "dpt_node.log"
    process = start_executable("dpt_node", *NODE_ARGS, log_path=log)
    harness = Harness("test_da2_harness")
    for name, msg_type in (("depth/image", Image), ("depth/relative", Image), ("depth/camera_info", CameraInfo),
                           ("points", PointCloud2), ("dpt_node/stats", InferenceStats)):
        harness.subscribe(msg_type, topic(name))
    harness.image_pub = harness.publisher(Image, topic("image"))
    harness.info_pub = harness.publisher(CameraInfo, topic("camera_info"))
    harness.process, harness.log = process, log
    try:
        harness.wait_for_node(process, log, harness.image_pub, timeout=180)
        harness.wait_for_subscribers(harness.info_pub)
        yield harness
    finally:
        code = stop(process)
        harness.close()
        assert code in (0, -2), f"dpt_node exit code {code}:\n{log.read_text()}"


def by_stamp(rig, name: str, stamp_sec: int):
    return rig.stamped(topic(name), stamp_sec, timeout=120)


def test_metric_depth_anything_publishes_metres_and_a_cloud_without_scale_parameters(rig):
    import time

    rig.info_pub.publish(make_camera_info(1))
    time.sleep(0.02)
    rig.image_pub.publish(make_image(1))

    depth_msg = by_stamp(rig, "depth/image", 1001)
    assert (depth_msg.encoding, depth_msg.width, depth_msg.height) == ("32FC1", WIDTH, HEIGHT)
    assert depth_msg.header.frame_id == "test_optical_frame"
    depth = decode_float_image(depth_msg)
    # sigmoid x max_depth: metres strictly inside (0, 20) and not one constant (the network ran)
    assert np.isfinite(depth).all() and 0.0 < depth.min() and depth.max() < HYPERSIM_MAX_DEPTH
    assert depth.std() > 0

    cloud = by_stamp(rig, "points", 1001)
    assert (cloud.height, cloud.width, cloud.header.frame_id) == (HEIGHT, WIDTH, "test_optical_frame")
    offsets = {field.name: field.offset for field in cloud.fields}
    data = bytes(cloud.data)
    for v, u in ((0, 0), (HEIGHT // 2, WIDTH // 3), (HEIGHT - 1, WIDTH - 1)):
        x, y, z = struct.unpack_from("<fff", data, v * cloud.row_step + u * cloud.point_step + offsets["x"])
        assert z == pytest.approx(depth[v, u], rel=1e-6)
        assert x == pytest.approx((u - CX) * z / FX, rel=1e-5, abs=1e-6)
        assert y == pytest.approx((v - CY) * z / FY, rel=1e-5, abs=1e-6)

    info = by_stamp(rig, "depth/camera_info", 1001)
    assert (info.width, info.height) == (WIDTH, HEIGHT)

    stats = by_stamp(rig, "dpt_node/stats", 1001)
    assert stats.model_variant == VARIANT
    assert (stats.network_height, stats.network_width) == NETWORK_SIZE
    # a metric model has no relative output to publish
    assert rig.messages(topic("depth/relative")) == []
    log = rig.log.read_text()
    assert "RANDOM" in log.upper() and "ERROR" not in log, log


def test_segmentation_without_a_segmentation_variant_is_one_clear_error(tmp_path):
    from support.ros_harness import failure_output

    error, _ = failure_output(tmp_path, "-r", "__ns:=/dpt_da2_fail", "-p", f"model.variant:={VARIANT}",
                              "-p", "model.weights:=''", "-p", "model.allow_random_weights:=true",
                              "-p", "model.tasks:=both", "-p", "device:=cpu")
    assert "set model.segmentation_variant" in error and VARIANT in error, error
