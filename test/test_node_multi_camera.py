"""One dpt_node serving two cameras: outputs under each namespace, frames batched together."""
import time

import numpy as np
import pytest

from support.frames import decode_float_image, make_camera_info, make_image

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

CAMERAS = ("cam_a", "rig/cam_b")


def test_two_cameras_are_served_and_batched(tmp_path):
    from sensor_msgs.msg import CameraInfo, Image

    from dpt_ros.msg import InferenceStats
    from support.ros_harness import Harness, start_executable, stop

    log = tmp_path / "dpt_node.log"
    process = start_executable(
        "dpt_node", "-r", "__ns:=/multi", "-p", f"cameras:=[{', '.join(CAMERAS)}]",
        "-p", "model.variant:=dpt_tiny", "-p", "model.weights:=''", "-p", "model.allow_random_weights:=true",
        "-p", "device:=cpu", "-p", "input_size:=64", "-p", "depth.scale:=1e-6", "-p", "depth.shift:=0.5",
        "-p", "qos.input.reliability:=reliable", "-p", "max_rate_hz:=2", log_path=log)
    harness = Harness("multi_camera_test")
    try:
        publishers = {}
        for camera in CAMERAS:
            harness.subscribe(Image, f"/multi/{camera}/depth/image")
            harness.subscribe(InferenceStats, f"/multi/dpt_node/{camera}/stats")
            publishers[camera] = (harness.publisher(Image, f"/multi/{camera}/image"),
                                  harness.publisher(CameraInfo, f"/multi/{camera}/camera_info"))
        for image_pub, _ in publishers.values():
            harness.wait_for_node(process, log, image_pub)

        # Both cameras publish "at the same time"; the rate limit holds the worker between batches,
        # so frames of both cameras are pending together when it takes them.
        for seq in range(6):
            for index, camera in enumerate(CAMERAS):
                image = make_image(seq * 10 + index)
                image.header.frame_id = f"{camera.replace('/', '_')}_optical_frame"
                info = make_camera_info(seq * 10 + index)
                info.header.frame_id = image.header.frame_id
                publishers[camera][1].publish(info)
                publishers[camera][0].publish(image)
            time.sleep(0.5)

        for index, camera in enumerate(CAMERAS):
            topic = f"/multi/{camera}/depth/image"
            harness.wait_for(lambda: harness.messages(topic), 60, topic)
            for msg in harness.messages(topic):
                assert msg.header.frame_id == f"{camera.replace('/', '_')}_optical_frame"
                assert (msg.header.stamp.sec - 1000) % 10 == index  # this camera's frames only
                assert np.isfinite(decode_float_image(msg)).all()
        batch_sizes = [m.batch_size for camera in CAMERAS for m in harness.messages(f"/multi/dpt_node/{camera}/stats")]
        assert 2 in batch_sizes, batch_sizes
        assert max(batch_sizes) <= len(CAMERAS)
    finally:
        code = stop(process)
        harness.close()
    assert code in (0, -2), log.read_text()


def test_invalid_camera_names_are_refused_at_start(tmp_path):
    from support.ros_harness import start_executable

    log = tmp_path / "bad.log"
    process = start_executable("dpt_node", "-r", "__ns:=/multi_bad", "-p", "cameras:=[front, front]",
                               "-p", "model.variant:=dpt_tiny", "-p", "model.weights:=''",
                               "-p", "model.allow_random_weights:=true", "-p", "device:=cpu", log_path=log)
    assert process.wait(timeout=120) == 1
    assert "duplicate" in log.read_text()
