"""dpt_node with image_transport:=compressed: jpeg in, depth out; a corrupt jpeg and one whose header
claims 10000x10000 are rejected (the second before decoding)."""
import time

import cv2
import numpy as np
import pytest

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]


def test_compressed_input_and_corrupt_jpeg(tmp_path):
    from sensor_msgs.msg import CompressedImage, Image

    from dpt_ros.msg import InferenceStats
    from support.ros_harness import Harness, start_executable, stop

    log = tmp_path / "dpt_node.log"
    process = start_executable(
        "dpt_node", "-r", "__ns:=/cmp", "-r", "image:=camera/color", "-p", "image_transport:=compressed",
        "-p", "model.variant:=dpt_tiny", "-p", "model.weights:=''", "-p", "model.allow_random_weights:=true",
        "-p", "device:=cpu", "-p", "input_size:=64", "-p", "qos.input.reliability:=reliable", log_path=log)
    harness = Harness("compressed_test")
    try:
        harness.subscribe(Image, "/cmp/depth/relative")
        harness.subscribe(InferenceStats, "/cmp/dpt_node/stats")
        # image_transport naming: the remapped base topic + /compressed.
        publisher = harness.publisher(CompressedImage, "/cmp/camera/color/compressed")
        harness.wait_for_node(process, log, publisher)

        bgr = np.zeros((48, 64, 3), np.uint8)
        bgr[:, :32] = (0, 0, 255)
        good = CompressedImage(format="jpeg", data=cv2.imencode(".jpg", bgr)[1].tobytes())
        good.header.stamp.sec, good.header.frame_id = 7, "cam_optical"
        corrupt = CompressedImage(format="jpeg", data=b"\xff\xd8\xff\xe0garbage" * 10)
        corrupt.header.stamp.sec = 8
        # A 641-byte JPEG whose header claims 10000x10000 (286 MiB decoded): refused unread.
        huge = bytearray(good.data)
        sof = bytes(huge).index(b"\xff\xc0")
        huge[sof + 5:sof + 9] = (10000).to_bytes(2, "big") * 2
        claims_huge = CompressedImage(format="jpeg", data=bytes(huge))
        claims_huge.header.stamp.sec = 9
        publisher.publish(corrupt)
        time.sleep(0.5)
        publisher.publish(claims_huge)
        time.sleep(0.5)
        publisher.publish(good)
        harness.wait_for(lambda: harness.messages("/cmp/depth/relative"), 60, "depth/relative")
        depth = harness.messages("/cmp/depth/relative")[0]
        assert (depth.width, depth.height, depth.header.stamp.sec, depth.header.frame_id) == (64, 48, 7, "cam_optical")
        harness.wait_for(lambda: harness.messages("/cmp/dpt_node/stats"), 30, "stats")
        stats = harness.messages("/cmp/dpt_node/stats")[-1]
        assert (stats.frames_received, stats.frames_rejected, stats.frames_processed) == (3, 2, 1)
        assert process.poll() is None
    finally:
        code = stop(process)
        harness.close()
    assert code in (0, -2), log.read_text()
    assert "rejected" in log.read_text()
    assert "10000x10000 = 100000000 pixels, more than the 16777216 accepted" in log.read_text()
