"""dpt_node as a process: start-up errors, unknown parameter names, and a clean stop on signals."""
from __future__ import annotations

import signal
import subprocess
import time

import pytest

from support.frames import make_camera_info, make_image

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

TINY = ("-p", "model.variant:=dpt_tiny", "-p", "model.weights:=''", "-p", "model.allow_random_weights:=true",
        "-p", "device:=cpu")


def run_to_exit(tmp_path, *ros_args: str, timeout: float = 120) -> tuple[int, str]:
    from support.ros_harness import start_executable

    log = tmp_path / "dpt_node.log"
    process = start_executable("dpt_node", *ros_args, log_path=log)
    return process.wait(timeout=timeout), log.read_text()


@pytest.mark.parametrize("ros_args, fragment", [
    (("--params-file", "/nonexistent/params.yaml"), "/nonexistent/params.yaml"),
    (("-p", "input_size:=[1,"), "input_size"),
])
def test_bad_ros_args_end_with_one_error_line(tmp_path, ros_args, fragment):
    """Finding 7: these ended in a Python traceback from rclpy.init."""
    code, text = run_to_exit(tmp_path, *ros_args)
    errors = [line for line in text.splitlines() if "ERROR" in line]
    assert code == 2, text
    assert len(errors) == 1 and "invalid command-line arguments" in errors[0] and fragment in errors[0], text
    assert "Traceback" not in text, text


def test_misspelled_parameters_are_warned_with_the_closest_name(tmp_path):
    """Finding 2: `varient:` or `cloud: {strid: 2}` were ignored silently."""
    from support.ros_harness import Harness, start_executable, stop

    params = tmp_path / "typo.yaml"
    params.write_text("/**:\n  ros__parameters:\n    varient: dpt_large\n    cloud:\n      strid: 2\n")
    log = tmp_path / "dpt_node.log"
    process = start_executable("dpt_node", "-r", "__ns:=/typo", *TINY, "--params-file", str(params),
                               "-p", "input_sise:=64", log_path=log)
    harness = Harness("typo_test")
    try:
        harness.wait_for(lambda: "listening on" in log.read_text() or process.poll() is not None, 120, "start-up")
        text = log.read_text()
        for name, suggestion in (("varient", "model.variant"), ("cloud.strid", "cloud.stride"),
                                 ("input_sise", "input_size")):
            lines = [line for line in text.splitlines() if f"unknown parameter '{name}'" in line]
            assert len(lines) == 1 and "WARN" in lines[0] and f"did you mean '{suggestion}'" in lines[0], text
    finally:
        assert stop(process) == 0, log.read_text()
        harness.close()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_while_frames_are_in_flight_exits_cleanly_within_two_seconds(tmp_path, signum):
    """Finding 6: Ctrl-C during a frame logged `[ERROR] frame failed: RCLError ... context is
    invalid`, and destroy_node could wait 10 s, longer than launch's 5 s before SIGTERM."""
    from sensor_msgs.msg import CameraInfo, Image

    from support.ros_harness import Harness, start_executable

    log = tmp_path / "dpt_node.log"
    # A large network input keeps the worker busy, so the signal lands while a frame is in flight.
    process = start_executable("dpt_node", "-r", "__ns:=/sig", *TINY, "-p", "input_size:=512",
                               "-p", "depth.scale:=0.001", "-p", "depth.shift:=0.1",
                               "-p", "qos.input.reliability:=reliable", log_path=log)
    harness = Harness("signal_test")
    try:
        harness.subscribe(Image, "/sig/depth/image")
        images = harness.publisher(Image, "/sig/image")
        infos = harness.publisher(CameraInfo, "/sig/camera_info")
        harness.wait_for_node(process, log, images)
        seq = 0
        while not harness.messages("/sig/depth/image") and seq < 600:
            infos.publish(make_camera_info(seq))
            images.publish(make_image(seq))
            seq += 1
            time.sleep(0.05)
        assert harness.messages("/sig/depth/image"), log.read_text()
        for _ in range(3):  # keep frames coming so one is in flight
            infos.publish(make_camera_info(seq))
            images.publish(make_image(seq))
            seq += 1
            time.sleep(0.05)
        sent = time.monotonic()
        process.send_signal(signum)
        code = process.wait(timeout=10)
        elapsed = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
        harness.close()
    text = log.read_text()
    assert code == 0, text
    assert elapsed < 2.0, f"took {elapsed:.1f} s to exit\n{text}"
    assert "ERROR" not in text and "Traceback" not in text, text
