"""dpt_node as a managed (lifecycle) node, driven across processes with the lifecycle services.

configure loads the model, activate subscribes, deactivate stops taking frames but keeps the
model, cleanup frees it, shutdown ends the node from any state. The node runs a relative model
(no depth.scale), so it also shows that depth/camera_info accompanies depth/relative.
"""
from __future__ import annotations

import time

import pytest

from support.frames import make_camera_info, make_image

pytestmark = [pytest.mark.ros, pytest.mark.timeout(400)]

NS = "/lc"


def test_lifecycle_transitions_across_processes(tmp_path):
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import ChangeState, GetState
    from sensor_msgs.msg import CameraInfo, Image

    from support.ros_harness import Harness, start_executable, stop

    log = tmp_path / "dpt_node.log"
    process = start_executable(
        "dpt_node", "-r", f"__ns:={NS}", "-p", "managed:=true", "-p", "model.variant:=dpt_tiny",
        "-p", "model.weights:=''", "-p", "model.allow_random_weights:=true", "-p", "device:=cpu",
        "-p", "input_size:=64", "-p", "qos.input.reliability:=reliable", log_path=log)
    harness = Harness("lifecycle_test")
    node = harness.node

    def state() -> int:
        return harness.call(GetState, f"{NS}/dpt_node/get_state", GetState.Request(), timeout=120).current_state.id

    def change(transition_id: int) -> bool:
        request = ChangeState.Request(transition=Transition(id=transition_id))
        return harness.call(ChangeState, f"{NS}/dpt_node/change_state", request, timeout=120).success

    def frame_comes_out(seq: int, timeout: float) -> bool:
        harness.clear()
        infos.publish(make_camera_info(seq))
        time.sleep(0.02)
        images.publish(make_image(seq))
        try:
            harness.wait_for(lambda: harness.messages(f"{NS}/depth/relative"), timeout, "depth/relative")
            return True
        except AssertionError:
            return False

    try:
        harness.subscribe(Image, f"{NS}/depth/relative")
        harness.subscribe(CameraInfo, f"{NS}/depth/camera_info")
        images = harness.publisher(Image, f"{NS}/image")
        infos = harness.publisher(CameraInfo, f"{NS}/camera_info")

        assert state() == State.PRIMARY_STATE_UNCONFIGURED
        assert "loaded dpt_tiny" not in log.read_text()  # no model before configure
        assert images.get_subscription_count() == 0

        assert change(Transition.TRANSITION_CONFIGURE)
        assert state() == State.PRIMARY_STATE_INACTIVE and "loaded dpt_tiny" in log.read_text()
        harness.wait_for(lambda: node.count_publishers(f"{NS}/depth/relative") == 1, 10, "depth/relative publisher")
        time.sleep(0.5)
        assert images.get_subscription_count() == 0  # inactive: not taking frames

        assert change(Transition.TRANSITION_ACTIVATE)
        assert state() == State.PRIMARY_STATE_ACTIVE
        harness.wait_for_subscribers(images)
        assert frame_comes_out(1, 60)
        # depth/camera_info accompanies the relative depth image too (no metric depth here).
        harness.wait_for(lambda: harness.messages(f"{NS}/depth/camera_info"), 10, "depth/camera_info")
        info = harness.messages(f"{NS}/depth/camera_info")[-1]
        assert info.header.stamp == harness.messages(f"{NS}/depth/relative")[-1].header.stamp

        assert change(Transition.TRANSITION_DEACTIVATE)
        assert state() == State.PRIMARY_STATE_INACTIVE
        harness.wait_for(lambda: images.get_subscription_count() == 0, 10, "the image subscription to go")
        assert not frame_comes_out(2, 2.0)
        assert "model released" not in log.read_text()

        assert change(Transition.TRANSITION_CLEANUP)
        assert state() == State.PRIMARY_STATE_UNCONFIGURED and "model released" in log.read_text()
        harness.wait_for(lambda: node.count_publishers(f"{NS}/depth/relative") == 0, 10, "publishers to go")

        # And back up again: configure and activate reload the model and serve frames.
        assert change(Transition.TRANSITION_CONFIGURE) and change(Transition.TRANSITION_ACTIVATE)
        harness.wait_for_subscribers(images)
        assert frame_comes_out(3, 60)

        assert change(Transition.TRANSITION_ACTIVE_SHUTDOWN)
        code = process.wait(timeout=10)  # finalized: the process ends by itself
    finally:
        if process.poll() is None:
            stop(process)
        harness.close()
    text = log.read_text()
    assert code == 0, text
    assert "ERROR" not in text and "Traceback" not in text, text


def test_configure_failure_is_reported_and_the_node_stays_unconfigured(tmp_path):
    from lifecycle_msgs.msg import State, Transition
    from lifecycle_msgs.srv import ChangeState, GetState

    from support.ros_harness import Harness, start_executable, stop

    log = tmp_path / "dpt_node.log"
    process = start_executable("dpt_node", "-r", "__ns:=/lcfail", "-p", "managed:=true",
                               "-p", "model.variant:=dpt_tiny", "-p", "model.weights:=/missing/tiny.pt",
                               "-p", "device:=cpu", log_path=log)
    harness = Harness("lifecycle_fail_test")
    try:
        request = ChangeState.Request(transition=Transition(id=Transition.TRANSITION_CONFIGURE))
        assert not harness.call(ChangeState, "/lcfail/dpt_node/change_state", request, timeout=120).success
        state = harness.call(GetState, "/lcfail/dpt_node/get_state", GetState.Request()).current_state.id
        assert state == State.PRIMARY_STATE_UNCONFIGURED
        assert "configure failed" in log.read_text() and "/missing/tiny.pt" in log.read_text()
        assert process.poll() is None  # a managed node waits for the next attempt
    finally:
        assert stop(process) == 0, log.read_text()
        harness.close()
