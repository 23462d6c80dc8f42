"""dpt_node from the colcon install space, driven by this test process over DDS.

One node process (tiny random model, depth + segmentation, metric depth through depth.scale/shift)
serves the whole module; each test publishes frames and checks what comes back.
"""
from __future__ import annotations

import struct
import time

import numpy as np
import pytest

from diagnostic_msgs.msg import DiagnosticStatus

from support.frames import CX, CY, FX, FY, HEIGHT, WIDTH, decode_float_image, make_camera_info, make_image, scene

pytestmark = [pytest.mark.ros, pytest.mark.timeout(300)]

NAMESPACE = "/dpt_it"
DEPTH_SCALE, DEPTH_SHIFT = 1e-6, 0.5  # tiny scale: metric depth is close to 1/0.5 = 2 m everywhere
NODE_ARGS = (
    "-r", f"__ns:={NAMESPACE}",
    "-p", "model.variant:=dpt_tiny", "-p", "model.weights:=''", "-p", "model.segmentation_weights:=''",
    "-p", "model.allow_random_weights:=true", "-p", "model.tasks:=both", "-p", "device:=cpu",
    "-p", "input_size:=64", "-p", f"depth.scale:={DEPTH_SCALE}", "-p", f"depth.shift:={DEPTH_SHIFT}",
    "-p", "qos.input.reliability:=reliable", "-p", "qos.input.depth:=100", "-p", "diagnostics.period:=0.5",
)
OUTPUT_TOPICS = ("depth/image", "depth/camera_info", "depth/relative", "depth/colored", "segmentation/labels",
                 "segmentation/colored", "points", "dpt_node/stats")


def topic(name: str) -> str:
    return f"{NAMESPACE}/{name}"


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    from diagnostic_msgs.msg import DiagnosticArray
    from sensor_msgs.msg import CameraInfo, Image, PointCloud2

    from dpt_ros.msg import InferenceStats
    from support.ros_harness import Harness, start_executable, stop

    log = tmp_path_factory.mktemp("dpt_node") / "dpt_node.log"
    process = start_executable("dpt_node", *NODE_ARGS, log_path=log)
    harness = Harness()
    types = {"depth/camera_info": CameraInfo, "points": PointCloud2, "dpt_node/stats": InferenceStats}
    for name in OUTPUT_TOPICS:
        harness.subscribe(types.get(name, Image), topic(name))
    harness.subscribe(DiagnosticArray, "/diagnostics")
    harness.image_pub = harness.publisher(Image, topic("image"))
    harness.info_pub = harness.publisher(CameraInfo, topic("camera_info"))
    harness.process, harness.log = process, log
    try:
        harness.wait_for_node(process, log, harness.image_pub)
        yield harness
    finally:
        code = stop(process)
        harness.close()
        assert code in (0, -2), f"dpt_node exit code {code}:\n{log.read_text()}"


def send_frame(rig, seq: int, image_msg=None, info_msg=None) -> None:
    rig.info_pub.publish(info_msg or make_camera_info(seq))
    time.sleep(0.02)  # camera_info first, as drivers usually do
    rig.image_pub.publish(image_msg or make_image(seq))


def stats(rig):
    return rig.messages(topic("dpt_node/stats"))


def wait_processed(rig, stamp_sec: int, timeout: float = 60.0):
    rig.stamped(topic("dpt_node/stats"), stamp_sec, timeout)


def by_stamp(rig, name: str, stamp_sec: int):
    return rig.stamped(topic(name), stamp_sec)


def test_every_output_has_the_input_stamp_frame_and_size(rig):
    rig.wait_for_subscribers(rig.info_pub)
    send_frame(rig, 1)
    wait_processed(rig, 1001)
    for name, encoding in (("depth/image", "32FC1"), ("depth/relative", "32FC1"), ("depth/colored", "rgb8"),
                           ("segmentation/labels", "mono8"), ("segmentation/colored", "rgb8")):
        msg = by_stamp(rig, name, 1001)
        assert (msg.encoding, msg.width, msg.height) == (encoding, WIDTH, HEIGHT), name
        assert msg.header.frame_id == "test_optical_frame", name
        bytes_per_pixel = {"32FC1": 4, "rgb8": 3, "mono8": 1}[encoding]
        assert msg.step == WIDTH * bytes_per_pixel and len(msg.data) == msg.step * HEIGHT, name

    depth = decode_float_image(by_stamp(rig, "depth/image", 1001))
    relative = decode_float_image(by_stamp(rig, "depth/relative", 1001))
    # REP 118 metres from the configured affine map of the relative output.
    np.testing.assert_allclose(depth, 1.0 / np.maximum(DEPTH_SCALE * relative + DEPTH_SHIFT, 1e-8), rtol=1e-5)

    labels = np.frombuffer(bytes(by_stamp(rig, "segmentation/labels", 1001).data), np.uint8)
    assert labels.max() < 150

    info = by_stamp(rig, "depth/camera_info", 1001)
    assert (info.width, info.height, info.header.frame_id) == (WIDTH, HEIGHT, "test_optical_frame")

    stat = by_stamp(rig, "dpt_node/stats", 1001)
    assert (stat.model_variant, stat.device, stat.input_width, stat.input_height) == ("dpt_tiny", "cpu", WIDTH, HEIGHT)
    assert stat.network_width % 32 == 0 and stat.network_height % 32 == 0
    assert stat.inference_ms > 0 and stat.total_ms >= stat.inference_ms


def test_depth_camera_info_carries_the_image_header(rig):
    info = make_camera_info(5)
    info.header.stamp.nanosec = 3_000_000  # 3 ms off the image stamp, within camera_info.stamp_tolerance
    send_frame(rig, 5, info_msg=info)
    depth_info = by_stamp(rig, "depth/camera_info", 1005)
    assert depth_info.header.stamp.nanosec == 0 and depth_info.header.frame_id == "test_optical_frame"
    assert list(depth_info.p) == list(info.p) and (depth_info.width, depth_info.height) == (WIDTH, HEIGHT)


def test_cloud_z_equals_published_depth_and_back_projects(rig):
    send_frame(rig, 2)
    cloud = by_stamp(rig, "points", 1002)
    depth = decode_float_image(by_stamp(rig, "depth/image", 1002))
    assert (cloud.height, cloud.width, cloud.is_dense, cloud.header.frame_id) == (HEIGHT, WIDTH, False,
                                                                                 "test_optical_frame")
    offsets = {field.name: field.offset for field in cloud.fields}
    assert {"x", "y", "z", "rgb", "label"} <= set(offsets)
    data = bytes(cloud.data)
    image = scene(2)
    for v, u in ((0, 0), (HEIGHT // 2, WIDTH // 3), (HEIGHT - 1, WIDTH - 1), (7, 61)):
        base = v * cloud.row_step + u * cloud.point_step
        x, y, z = struct.unpack_from("<fff", data, base + offsets["x"])
        assert z == pytest.approx(depth[v, u], rel=1e-6)
        assert x == pytest.approx((u - CX) * z / FX, rel=1e-5, abs=1e-6)
        assert y == pytest.approx((v - CY) * z / FY, rel=1e-5, abs=1e-6)
        (rgb,) = struct.unpack_from("<I", data, base + offsets["rgb"])
        assert ((rgb >> 16) & 255, (rgb >> 8) & 255, rgb & 255) == tuple(image[v, u])


def test_label_info_reaches_a_late_joiner(rig):
    from dpt_ros.msg import LabelInfo

    rig.subscribe(LabelInfo, topic("segmentation/label_info"), transient_local=True)
    rig.wait_for(lambda: rig.messages(topic("segmentation/label_info")), 30, "label_info (transient local)")
    info = rig.messages(topic("segmentation/label_info"))[0]
    assert len(info.class_names) == len(info.colors) == 150
    assert info.class_names[0] == "wall" and info.ignore_id == 255
    assert info.model_variant == "dpt_tiny"


def test_bad_frames_are_rejected_and_the_node_keeps_running(rig):
    before = stats(rig)[-1].frames_rejected if stats(rig) else 0
    good = scene(3).tobytes()
    bad = [
        make_image(10, encoding="xyz16"),                                  # unknown encoding
        make_image(11, data=good[: len(good) // 2]),                       # data shorter than step*height
        make_image(12, step=WIDTH * 3 - 1),                                # step < width*channels
        make_image(13, width=0, height=0, data=b"", step=0),              # zero size
    ]
    for seq, msg in zip(range(10, 14), bad):
        send_frame(rig, seq, image_msg=msg)
        time.sleep(0.3)
    send_frame(rig, 16)                                                   # a good frame afterwards
    wait_processed(rig, 1016)
    assert rig.process.poll() is None
    assert stats(rig)[-1].frames_rejected - before == 4
    log = rig.log.read_text()
    assert "xyz16" in log


@pytest.mark.parametrize("seq, info_changes, why", [
    (14, {"width": WIDTH * 2}, "not a uniform rescale"),
    (15, {"fx": 0.0}, "uncalibrated"),
])
def test_a_camera_info_that_does_not_fit_costs_the_cloud_not_the_frame(rig, seq, info_changes, why):
    """Finding 4: a camera_info of another size (or uncalibrated) used to reject the whole frame."""
    before = stats(rig)[-1]
    send_frame(rig, seq, info_msg=make_camera_info(seq, **info_changes))
    wait_processed(rig, 1000 + seq)
    for name in ("depth/image", "depth/relative", "segmentation/labels"):
        by_stamp(rig, name, 1000 + seq)
    time.sleep(0.5)
    assert not any(m.header.stamp.sec == 1000 + seq for m in rig.messages(topic("points")))
    assert not any(m.header.stamp.sec == 1000 + seq for m in rig.messages(topic("depth/camera_info")))
    assert stats(rig)[-1].frames_rejected == before.frames_rejected
    assert f"no cloud for {topic('image')}" in rig.log.read_text() and why in rig.log.read_text()


def cloud_point(cloud, v: int, u: int) -> tuple[float, float, float]:
    offsets = {field.name: field.offset for field in cloud.fields}
    return struct.unpack_from("<fff", bytes(cloud.data), v * cloud.row_step + u * cloud.point_step + offsets["x"])


@pytest.mark.parametrize("seq, binning, roi, expected", [
    # A 2x2-binned camera: the calibration is for 2*WIDTH x 2*HEIGHT, the image is WIDTH x HEIGHT.
    (40, 2, (0, 0, 0, 0), (FX, FY, (2 * CX) / 2, (2 * CY) / 2)),
    # A WIDTH x HEIGHT region of interest at (20, 10) of a larger sensor: the centre moves.
    (41, 1, (20, 10, WIDTH, HEIGHT), (FX, FY, CX - 20, CY - 10)),
])
def test_binned_and_roi_cameras_are_back_projected_with_adjusted_intrinsics(rig, seq, binning, roi, expected):
    """Finding 4: binning and ROI in CameraInfo were ignored (every frame rejected)."""
    info = make_camera_info(seq, width=2 * WIDTH, height=2 * HEIGHT, fx=FX * binning)
    info.p[5], info.p[2], info.p[6] = FY * binning, 2 * CX if binning == 2 else CX, 2 * CY if binning == 2 else CY
    info.binning_x = info.binning_y = binning
    info.roi.x_offset, info.roi.y_offset, info.roi.width, info.roi.height = roi
    send_frame(rig, seq, info_msg=info)
    cloud = by_stamp(rig, "points", 1000 + seq)
    depth = decode_float_image(by_stamp(rig, "depth/image", 1000 + seq))
    fx, fy, cx, cy = expected
    for v, u in ((0, 0), (HEIGHT - 1, WIDTH - 1), (17, 53)):
        x, y, z = cloud_point(cloud, v, u)
        assert z == pytest.approx(depth[v, u], rel=1e-6)
        assert x == pytest.approx((u - cx) * z / fx, rel=1e-5, abs=1e-6)
        assert y == pytest.approx((v - cy) * z / fy, rel=1e-5, abs=1e-6)
    # depth/camera_info passes the binned/ROI calibration on unchanged, under the image's header.
    depth_info = by_stamp(rig, "depth/camera_info", 1000 + seq)
    assert (depth_info.binning_x, depth_info.roi.x_offset, list(depth_info.p)) == (binning, roi[0], list(info.p))


def test_distorted_input_is_warned_about_once(rig):
    for seq in (42, 43):
        info = make_camera_info(seq)
        info.d = [-0.28, 0.07, 0.0, 0.0, 0.0]
        send_frame(rig, seq, info_msg=info)
        by_stamp(rig, "points", 1000 + seq)
    warnings = [line for line in rig.log.read_text().splitlines() if "non-zero distortion" in line]
    assert len(warnings) == 1 and "WARN" in warnings[0]


def test_a_camera_info_arriving_after_its_image_is_paired_by_stamp(rig):
    """Finding 4: the node took the latest camera_info at processing time and warned when the
    driver published the image first (as demo_camera did)."""
    info = make_camera_info(44, fx=FX * 1.5)  # recognisable calibration for this stamp only
    rig.info_pub.publish(make_camera_info(43))  # an older one, the latest when the image arrives
    time.sleep(0.2)
    rig.image_pub.publish(make_image(44))
    time.sleep(0.03)  # well inside camera_info.max_wait (0.1 s)
    rig.info_pub.publish(info)
    depth_info = by_stamp(rig, "depth/camera_info", 1044)
    assert list(depth_info.p) == list(info.p)


def test_every_parameter_is_returned_by_get_parameters(rig):
    """Finding 1: `cameras` was declared without a value, and one unset name emptied rclpy's whole
    GetParameters reply (`ros2 param dump` printed `ros__parameters: {}`)."""
    from rcl_interfaces.srv import GetParameters, ListParameters

    names = rig.call(ListParameters, topic("dpt_node/list_parameters"), ListParameters.Request()).result.names
    assert "cameras" in names and "model.variant" in names and len(names) > 30
    values = rig.call(GetParameters, topic("dpt_node/get_parameters"), GetParameters.Request(names=names)).values
    assert len(values) == len(names)
    by_name = dict(zip(names, values))
    assert list(by_name["cameras"].string_array_value) == [] and by_name["model.variant"].string_value == "dpt_tiny"


def test_burst_is_bounded_and_drops_are_counted(rig):
    rig.wait_for(lambda: stats(rig), 30, "any stats")
    start = stats(rig)[-1]
    for seq in range(100, 150):
        rig.info_pub.publish(make_camera_info(seq))
        rig.image_pub.publish(make_image(seq))
        time.sleep(0.002)
    wait_processed(rig, 1149)  # newest frame always wins, so the last one is processed
    end = stats(rig)[-1]
    received = end.frames_received - start.frames_received
    processed = end.frames_processed - start.frames_processed
    dropped = end.frames_dropped - start.frames_dropped
    assert received == 50
    assert processed < 50 and dropped > 0
    failed = end.frames_failed - start.frames_failed
    assert processed + dropped + (end.frames_rejected - start.frames_rejected) + failed == received
    assert failed == 0


def test_diagnostics_report_the_node(rig):
    rig.wait_for(lambda: any(s.name.startswith("dpt_node") for m in rig.messages("/diagnostics") for s in m.status),
                 30, "dpt_node diagnostics")
    status = [s for m in rig.messages("/diagnostics") for s in m.status if s.name.startswith("dpt_node")][-1]
    values = {kv.key: kv.value for kv in status.values}
    assert values["variant"] == "dpt_tiny" and values["device"] == "cpu"
    assert int(values["frames_processed"]) >= 1


def set_parameters(rig, **values):
    from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
    from rcl_interfaces.srv import SetParameters

    request = SetParameters.Request()
    for name, value in values.items():
        name = name.replace("__", ".")
        if isinstance(value, bool):
            pv = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
        elif isinstance(value, int):
            pv = ParameterValue(type=ParameterType.PARAMETER_INTEGER, integer_value=value)
        elif isinstance(value, float):
            pv = ParameterValue(type=ParameterType.PARAMETER_DOUBLE, double_value=value)
        else:
            pv = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=value)
        request.parameters.append(Parameter(name=name, value=pv))
    return rig.call(SetParameters, topic("dpt_node/set_parameters"), request).results


def test_parameter_changes_take_effect_at_run_time(rig):
    results = set_parameters(rig, cloud__stride=2)
    assert all(r.successful for r in results)
    send_frame(rig, 20)
    cloud = by_stamp(rig, "points", 1020)
    assert (cloud.height, cloud.width) == (HEIGHT // 2, WIDTH // 2)

    rejected = set_parameters(rig, precision="fp64")
    assert not rejected[0].successful and "precision" in rejected[0].reason

    # A model parameter reloads the model in place: segmentation off -> no more labels.
    assert all(r.successful for r in set_parameters(rig, model__tasks="depth"))
    time.sleep(1.0)
    send_frame(rig, 21)
    wait_processed(rig, 1021)
    by_stamp(rig, "depth/image", 1021)
    time.sleep(0.5)
    assert not any(m.header.stamp.sec == 1021 for m in rig.messages(topic("segmentation/labels")))
    assert rig.process.poll() is None


def test_compile_mode_falls_back_cleanly_where_it_cannot_work(rig):
    """compile:=cuda_graph on a CPU node: the model reloads, the node warns once why it runs eagerly,
    keeps publishing, and reports what runs in /diagnostics; a mode that does not exist is refused."""
    rejected = set_parameters(rig, compile="tensorrt")
    assert not rejected[0].successful and "compile" in rejected[0].reason

    assert all(r.successful for r in set_parameters(rig, compile="cuda_graph"))
    rig.wait_for(lambda: "forward: eager (cuda_graph fell back" in rig.log.read_text(), 60, "the reload")
    for seq in (30, 31):
        send_frame(rig, seq)
        wait_processed(rig, 1000 + seq)
        by_stamp(rig, "depth/image", 1000 + seq)
    text = rig.log.read_text()
    warnings = [line for line in text.splitlines() if "cuda_graph is not usable, running eagerly" in line]
    assert len(warnings) == 1 and "WARN" in warnings[0] and "needs a CUDA device" in warnings[0], text

    def compile_value():
        statuses = [s for m in rig.messages("/diagnostics") for s in m.status if s.name.startswith("dpt_node")]
        return {kv.key: kv.value for kv in statuses[-1].values}.get("compile", "") if statuses else ""
    rig.wait_for(lambda: compile_value().startswith("eager (cuda_graph fell back"), 30, "diagnostics compile")
    assert rig.process.poll() is None


def get_parameter_values(rig, *names):
    from rcl_interfaces.srv import GetParameters

    values = rig.call(GetParameters, topic("dpt_node/get_parameters"), GetParameters.Request(names=list(names))).values
    return [getattr(value, {4: "string_value", 2: "integer_value"}[value.type]) for value in values]


def node_status(rig):
    """The node's latest /diagnostics status (its level is a byte: compare with DiagnosticStatus's)."""
    statuses = [s for m in rig.messages("/diagnostics") for s in m.status if s.name.startswith("dpt_node")]
    return statuses[-1] if statuses else None


def test_model_parameters_set_together_reload_once_with_all_of_them(rig):
    """Finding 3: the reload was triggered before rclpy stored the values, so the worker could read
    the old configuration, or half of a multi-parameter change."""
    log_before = rig.log.read_text().count("reloading model")
    assert all(r.successful for r in set_parameters(rig, input_size=96, model__tasks="both"))
    rig.wait_for(lambda: "now running dpt_tiny (depth, segmentation)" in rig.log.read_text().split("reloading")[-1],
                 60, "the reload")
    assert rig.log.read_text().count("reloading model") == log_before + 1
    send_frame(rig, 50)
    wait_processed(rig, 1050)
    stat = by_stamp(rig, "dpt_node/stats", 1050)
    assert max(stat.network_width, stat.network_height) == 96
    by_stamp(rig, "segmentation/labels", 1050)


def test_a_failed_reload_sets_the_parameters_back_and_reports_error(rig):
    """Finding 3: after `ros2 param set ... model.weights /missing.pt` failed, `param get` said
    /missing.pt while the old model ran, and /diagnostics stayed OK."""
    results = set_parameters(rig, model__weights="/missing/weights.pt", input_size=64)
    assert all(r.successful for r in results)  # the file is only looked for by the reload
    rig.wait_for(lambda: "model reload failed" in rig.log.read_text(), 60, "the failed reload")
    rig.wait_for(lambda: get_parameter_values(rig, "model.weights", "input_size") == ["", 96], 30,
                 "the parameters to be set back to the running model's")
    rig.wait_for(lambda: node_status(rig) is not None and node_status(rig).level == DiagnosticStatus.ERROR
                 and "/missing/weights.pt" in node_status(rig).message, 30, "diagnostics ERROR naming the file")
    send_frame(rig, 51)
    stat = by_stamp(rig, "dpt_node/stats", 1051)  # the old model still serves frames
    assert max(stat.network_width, stat.network_height) == 96 and stat.model_variant == "dpt_tiny"


def test_diagnostics_follow_the_recent_window(rig):
    """Finding 5: cumulative counters kept the node at WARN forever after one bad frame, and a
    persistent failure was only WARN."""
    assert all(r.successful for r in set_parameters(rig, diagnostics__window=1.5))
    for seq in range(60, 66):  # nothing but bad frames: nothing succeeds
        send_frame(rig, seq, image_msg=make_image(seq, encoding="xyz16"))
        time.sleep(0.1)
    rig.wait_for(lambda: node_status(rig).level == DiagnosticStatus.ERROR and "no frame succeeded" in node_status(rig).message, 20,
                 "ERROR while every frame is rejected")
    for seq in range(66, 72):  # good frames again: the bad ones leave the window
        send_frame(rig, seq)
        time.sleep(0.4)
    wait_processed(rig, 1071)
    rig.wait_for(lambda: node_status(rig).level == DiagnosticStatus.OK and node_status(rig).message == "running", 20,
                 "OK once the window holds only good frames")
    values = {kv.key: kv.value for kv in node_status(rig).values}
    assert int(values["frames_rejected"]) >= 6 and int(values["recent_rejected"]) == 0


def test_stats_are_published_without_any_processed_frame(rig):
    """Finding 11: ~/stats came only with processed frames, so rejected-only input showed nothing."""
    before = stats(rig)[-1].frames_rejected
    rig.clear()
    for seq in range(80, 84):
        send_frame(rig, seq, image_msg=make_image(seq, encoding="bayer_xyz"))
        time.sleep(0.2)
    rig.wait_for(lambda: stats(rig) and stats(rig)[-1].frames_rejected == before + 4, 10, "stats of rejected frames")
    last = stats(rig)[-1]
    assert last.batch_size == 0 and last.header.frame_id == "" and last.model_variant == "dpt_tiny"


def test_an_oversized_image_is_rejected_before_decoding(rig):
    """Finding 10: an 8000x6000 frame blocked the worker for minutes; the size is now checked on the
    message before its data is touched (this one's data is far too short to decode)."""
    before = stats(rig)[-1] if stats(rig) else None
    send_frame(rig, 90, image_msg=make_image(90, width=8000, height=6000, step=8000 * 3))
    rig.wait_for(lambda: "more than the 16777216 accepted" in rig.log.read_text(), 20, "the rejection")
    assert "8000x6000" in rig.log.read_text()
    send_frame(rig, 91)
    wait_processed(rig, 1091)
    assert stats(rig)[-1].frames_rejected == (before.frames_rejected if before else 0) + 1


def test_model_that_cannot_load_exits_with_one_clear_error(tmp_path):
    from support.ros_harness import failure_output

    error, _ = failure_output(tmp_path, "-r", "__ns:=/dpt_fail", "-p", "model.variant:=dpt_tiny",
                              "-p", "model.weights:=/nonexistent/weights.pt", "-p", "device:=cpu")
    assert "/nonexistent/weights.pt" in error


def test_parameter_of_the_wrong_type_ends_with_one_clear_error(tmp_path):
    from support.ros_harness import failure_output

    error, _ = failure_output(tmp_path, "-r", "__ns:=/dpt_type", "-p", "model.variant:=dpt_tiny",
                              "-p", "input_size:=large", "-p", "device:=cpu")
    assert "input_size must be of type int" in error and "'large'" in error
