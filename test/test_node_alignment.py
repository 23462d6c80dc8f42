"""Online alignment in dpt_node, across processes (issue 12): the installed dpt_node with the tiny
random model, sparse metric depth published by this test process, outputs checked here.

Two nodes serve the module: one aligns to a registered 16UC1 depth image (an RGB-D camera), the
other to a lidar PointCloud2 through a static extrinsic.  The sparse depth is made from the
node's own relative output of the same image, ``1 / depth = SCALE * relative + SHIFT``, so the
scale and shift the node must find are known.  Stamps are synthetic and only grow (seconds of
image stamps are what alignment.timeout counts).
"""
from __future__ import annotations

import struct
import time

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus

from support.frames import HEIGHT, WIDTH, decode_float_image, make_camera_info, make_image, scene
from support.sparse_messages import LIDAR_IN_CAMERA, SCALE, SHIFT, depth_image_16uc1, lidar_cloud, stamped, true_depth

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

RGBD, LIDAR = "/dpt_align_rgbd", "/dpt_align_lidar"
TIMEOUT_S = 1.0
COMMON_ARGS = (
    "-p", "model.variant:=dpt_tiny", "-p", "model.weights:=''", "-p", "model.allow_random_weights:=true",
    "-p", "device:=cpu", "-p", "input_size:=64", "-p", "qos.input.reliability:=reliable",
    "-p", "qos.input.depth:=100", "-p", "diagnostics.period:=0.5", "-p", f"alignment.timeout:={TIMEOUT_S}",
)
NODE_ARGS = {
    RGBD: ("-p", "alignment.source:=depth_image"),
    LIDAR: ("-p", "alignment.source:=points",
            "-p", "alignment.extrinsic:=[" + ", ".join(str(value) for value in LIDAR_IN_CAMERA) + "]"),
}
OUTPUTS = ("depth/image", "depth/relative", "depth/alignment", "points")
STATE_NONE, STATE_CONVERGING, STATE_STALE = 0, 1, 4


class Rig:
    """Both nodes, one harness: publishers per node namespace, everything received by topic."""

    def __init__(self, harness, processes, logs):
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        from dpt_ros.msg import DepthAlignment

        self.harness, self.processes, self.logs = harness, processes, logs
        types = {"depth/alignment": DepthAlignment, "points": PointCloud2}
        self.publishers = {}
        for ns in (RGBD, LIDAR):
            for name in OUTPUTS:
                harness.subscribe(types.get(name, Image), f"{ns}/{name}")
            self.publishers[ns] = {
                "image": harness.publisher(Image, f"{ns}/image"),
                "camera_info": harness.publisher(CameraInfo, f"{ns}/camera_info"),
                "sparse": harness.publisher(Image, f"{ns}/alignment/depth") if ns == RGBD
                else harness.publisher(PointCloud2, f"{ns}/alignment/points"),
            }
        harness.subscribe(DiagnosticArray, "/diagnostics")

    def send_image(self, ns: str, sec: int, pixels: np.ndarray) -> None:
        publishers = self.publishers[ns]
        publishers["camera_info"].publish(stamped(make_camera_info(0), sec))
        time.sleep(0.02)
        publishers["image"].publish(stamped(make_image(0, pixels=pixels), sec))

    def send_sparse(self, ns: str, msg) -> None:
        self.publishers[ns]["sparse"].publish(msg)
        time.sleep(0.05)  # before the image: the node matches sensor messages it already has

    def at(self, ns: str, name: str, sec: int, timeout: float = 60.0):
        topic = f"{ns}/{name}"

        def found():
            return next((m for m in self.harness.messages(topic) if m.header.stamp.sec == sec), None)

        self.harness.wait_for(lambda: found() is not None, timeout, f"{topic} at stamp {sec}")
        return found()

    def none_at(self, ns: str, names, sec: int) -> bool:
        time.sleep(0.5)  # outputs of one frame are published together: give any stragglers time
        return not any(m.header.stamp.sec == sec for name in names for m in self.harness.messages(f"{ns}/{name}"))

    def relative(self, ns: str, sec: int) -> np.ndarray:
        return decode_float_image(self.at(ns, "depth/relative", sec))

    def alignment_statuses(self, ns: str, topic: str):
        return [s for m in self.harness.messages("/diagnostics") for s in m.status
                if s.name == "dpt_node: depth alignment" and s.hardware_id == f"{ns}/{topic}"]

    def set_parameters(self, ns: str, **values):
        from rclpy.parameter import Parameter
        from rcl_interfaces.srv import SetParameters

        request = SetParameters.Request(parameters=[Parameter(name.replace("__", "."), value=value).to_parameter_msg()
                                                    for name, value in values.items()])
        return self.harness.call(SetParameters, f"{ns}/dpt_node/set_parameters", request).results


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    from support.ros_harness import Harness, start_executable, stop

    logs = {ns: tmp_path_factory.mktemp("dpt_node") / "dpt_node.log" for ns in NODE_ARGS}
    processes = {ns: start_executable("dpt_node", "-r", f"__ns:={ns}", *COMMON_ARGS, *args, log_path=logs[ns])
                 for ns, args in NODE_ARGS.items()}
    harness = Harness("alignment_test")
    rig = Rig(harness, processes, logs)
    try:
        for ns, process in processes.items():
            harness.wait_for_node(process, logs[ns], rig.publishers[ns]["image"])
            harness.wait_for_subscribers(rig.publishers[ns]["sparse"])
        yield rig
    finally:
        codes = {ns: stop(process) for ns, process in processes.items()}
        harness.close()
        for ns, code in codes.items():
            assert code in (0, -2), f"{ns}/dpt_node exit code {code}:\n{logs[ns].read_text()}"


def assert_metric_outputs_follow_the_alignment(rig, ns: str, sec: int, alignment) -> None:
    """depth/image = 1 / (scale * depth/relative + shift) of the same stamp at every pixel, and
    the cloud's z is that depth."""
    depth = decode_float_image(rig.at(ns, "depth/image", sec))
    relative = rig.relative(ns, sec)
    np.testing.assert_allclose(depth, 1.0 / (alignment.scale * relative.astype(np.float64) + alignment.shift),
                               rtol=1e-5)
    cloud = rig.at(ns, "points", sec)
    offset = {field.name: field.offset for field in cloud.fields}["z"]
    data = bytes(cloud.data)
    for v, u in ((0, 0), (HEIGHT // 2, WIDTH // 3), (HEIGHT - 1, WIDTH - 1)):
        (z,) = struct.unpack_from("<f", data, v * cloud.row_step + u * cloud.point_step + offset)
        assert z == pytest.approx(depth[v, u], rel=1e-6)


def test_depth_image_appears_only_after_alignment_and_is_the_aligned_relative_depth(rig):
    """Before any sparse depth: depth/relative and depth/alignment (state NONE), no depth/image, no
    points, /diagnostics WARN.  Then a depth image nearest in stamp to the frame (a decoy 30 ms
    later, within the tolerance, says otherwise): the node finds SCALE and SHIFT within 1 % and
    publishes metric outputs that are exactly that map of the relative output."""
    pixels = scene(1)
    rig.send_image(RGBD, 1001, pixels)
    first = rig.at(RGBD, "depth/alignment", 1001)
    assert (first.state, first.scale, first.shift, first.header.frame_id) == (STATE_NONE, 0.0, 0.0,
                                                                              "test_optical_frame")
    relative = rig.relative(RGBD, 1001)
    assert rig.none_at(RGBD, ("depth/image", "points"), 1001)
    rig.harness.wait_for(lambda: rig.alignment_statuses(RGBD, "alignment/depth"), 10, "alignment diagnostics")
    assert rig.alignment_statuses(RGBD, "alignment/depth")[-1].level == DiagnosticStatus.WARN  # no metric depth

    rig.send_sparse(RGBD, depth_image_16uc1(true_depth(relative), 1002))
    rig.send_sparse(RGBD, depth_image_16uc1(true_depth(relative, SCALE * 2, SHIFT), 1002, 30_000_000))
    rig.send_image(RGBD, 1002, pixels)
    aligned = rig.at(RGBD, "depth/alignment", 1002)
    assert aligned.state == STATE_CONVERGING, aligned.message
    assert aligned.mode == "full" and aligned.sample_count == WIDTH * HEIGHT * 3 // 4
    assert aligned.inlier_count == aligned.sample_count and aligned.age == 0.0
    assert aligned.scale == pytest.approx(SCALE, rel=0.01) and aligned.shift == pytest.approx(SHIFT, rel=0.01)
    assert_metric_outputs_follow_the_alignment(rig, RGBD, 1002, aligned)
    rig.harness.wait_for(lambda: rig.alignment_statuses(RGBD, "alignment/depth")[-1].level == DiagnosticStatus.OK,
                         10, "alignment diagnostics OK")
    values = {kv.key: kv.value for kv in rig.alignment_statuses(RGBD, "alignment/depth")[-1].values}
    assert values["state"] == "CONVERGING" and values["sensor_messages_received"] == "2"


def test_after_the_timeout_without_alignment_metric_outputs_stop_relative_goes_on_and_diagnostics_warn(rig):
    pixels = scene(1)
    relative = rig.relative(RGBD, 1001)
    rig.send_sparse(RGBD, depth_image_16uc1(true_depth(relative), 1010))
    rig.send_image(RGBD, 1010, pixels)
    assert rig.at(RGBD, "depth/alignment", 1010).state != STATE_STALE
    rig.at(RGBD, "depth/image", 1010)

    # Frames keep coming, no sparse depth: up to the timeout the estimate holds ...
    rig.send_image(RGBD, 1011, pixels)
    held = rig.at(RGBD, "depth/alignment", 1011)
    assert held.state == STATE_CONVERGING and held.age == pytest.approx(TIMEOUT_S)
    assert_metric_outputs_follow_the_alignment(rig, RGBD, 1011, held)
    # ... past it (5 s of image stamps later) the metric outputs stop.
    rig.send_image(RGBD, 1015, pixels)
    stale = rig.at(RGBD, "depth/alignment", 1015)
    assert stale.state == STATE_STALE and stale.age == pytest.approx(5.0)
    assert "nothing on" in stale.message and "alignment/depth" in stale.message
    rig.relative(RGBD, 1015)
    assert rig.none_at(RGBD, ("depth/image", "points"), 1015)

    def stale_warning():
        statuses = rig.alignment_statuses(RGBD, "alignment/depth")
        return statuses and statuses[-1].level == DiagnosticStatus.WARN and "no accepted fit" in statuses[-1].message

    rig.harness.wait_for(stale_warning, 10, "a /diagnostics WARN for the stale alignment")
    assert "no usable alignment" in rig.logs[RGBD].read_text()

    # The next sensor message restarts it.
    rig.send_sparse(RGBD, depth_image_16uc1(true_depth(relative), 1016))
    rig.send_image(RGBD, 1016, pixels)
    again = rig.at(RGBD, "depth/alignment", 1016)
    assert again.state == STATE_CONVERGING and again.scale == pytest.approx(SCALE, rel=0.01)
    assert_metric_outputs_follow_the_alignment(rig, RGBD, 1016, again)


def test_lidar_points_through_a_known_extrinsic_make_the_depth_metric(rig):
    pixels = scene(2)
    rig.send_image(LIDAR, 2001, pixels)
    assert rig.at(LIDAR, "depth/alignment", 2001).state == STATE_NONE
    relative = rig.relative(LIDAR, 2001)
    assert rig.none_at(LIDAR, ("depth/image", "points"), 2001)

    rig.send_sparse(LIDAR, lidar_cloud(true_depth(relative), 2002))
    rig.send_image(LIDAR, 2002, pixels)
    aligned = rig.at(LIDAR, "depth/alignment", 2002)
    assert aligned.state == STATE_CONVERGING, aligned.message
    # Every pixel's point is in view (then cut evenly to alignment.max_samples); the ones behind
    # the camera are not; with another extrinsic the points would land on the wrong pixels.
    assert aligned.sample_count == 4096 and aligned.inlier_count == 4096
    assert aligned.scale == pytest.approx(SCALE, rel=0.01) and aligned.shift == pytest.approx(SHIFT, rel=0.01)
    assert_metric_outputs_follow_the_alignment(rig, LIDAR, 2002, aligned)


def test_parameter_changes_reconfigure_the_aligner_and_a_model_reload_resets_it(rig):
    pixels = scene(1)
    relative = rig.relative(RGBD, 1001)
    refused = rig.set_parameters(RGBD, alignment__max_depth=0.05)
    assert not refused[0].successful and "alignment.max_depth (0.05) must be above alignment.min_depth" \
        in refused[0].reason

    # scale_only: a new mode restarts the alignment and fits the scale alone (shift 0).
    assert all(result.successful for result in rig.set_parameters(RGBD, alignment__mode="scale_only"))
    rig.send_sparse(RGBD, depth_image_16uc1(true_depth(relative, SCALE, 0.0), 1020))
    rig.send_image(RGBD, 1020, pixels)
    scale_only = rig.at(RGBD, "depth/alignment", 1020)
    assert (scale_only.mode, scale_only.state, scale_only.shift) == ("scale_only", STATE_CONVERGING, 0.0)
    assert scale_only.scale == pytest.approx(SCALE, rel=0.01)
    assert_metric_outputs_follow_the_alignment(rig, RGBD, 1020, scale_only)

    # Another model has another scale: a reload forgets the estimate.
    assert all(result.successful for result in rig.set_parameters(RGBD, input_size=96))
    rig.send_image(RGBD, 1021, pixels)
    reset = rig.at(RGBD, "depth/alignment", 1021)
    assert (reset.state, reset.scale) == (STATE_NONE, 0.0)
    assert rig.none_at(RGBD, ("depth/image",), 1021)
    assert "reloading model" in rig.logs[RGBD].read_text()


def test_deactivate_removes_the_sensor_subscriptions_and_activate_restores_them(rig):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    from sensor_msgs.msg import CameraInfo

    sparse = rig.publishers[RGBD]["sparse"]
    camera_info = rig.harness.publisher(CameraInfo, f"{RGBD}/alignment/camera_info")
    rig.harness.wait_for_subscribers(camera_info)

    def change(transition_id: int) -> bool:
        request = ChangeState.Request(transition=Transition(id=transition_id))
        return rig.harness.call(ChangeState, f"{RGBD}/dpt_node/change_state", request, timeout=60).success

    assert change(Transition.TRANSITION_DEACTIVATE)
    rig.harness.wait_for(lambda: sparse.get_subscription_count() == 0 and camera_info.get_subscription_count() == 0,
                         10, "alignment subscriptions gone")
    assert change(Transition.TRANSITION_ACTIVATE)
    rig.harness.wait_for(lambda: sparse.get_subscription_count() == 1 and camera_info.get_subscription_count() == 1,
                         10, "alignment subscriptions back")


def test_unusable_alignment_settings_end_with_one_clear_error(tmp_path):
    """TF without tf2_ros, and a rule between two parameters (a bad value of one parameter, e.g. an
    extrinsic that is not a rotation, takes the path test_node_integration checks; its reasons are
    in test_alignment_parameters)."""
    from support.ros_harness import failure_outputs

    cases = {
        "alignment.use_tf is true but tf2_ros": ("-p", "alignment.source:=points", "-p", "alignment.use_tf:=true"),
        "alignment.max_depth (1) must be above": ("-p", "alignment.min_depth:=2.0", "-p", "alignment.max_depth:=1.0"),
    }
    outputs = failure_outputs(tmp_path, *[("-r", f"__ns:=/dpt_align_fail{index}", "-p", "model.variant:=dpt_tiny",
                                           "-p", "device:=cpu", *args) for index, args in enumerate(cases.values())])
    for fragment, (error, _) in zip(cases, outputs):
        assert fragment in error
