"""dpt_node from the colcon install space, driven by this test process over DDS.

One node process (tiny random model, depth + segmentation, metric depth through depth.scale/shift)
serves the whole module; each test publishes frames and checks what comes back.
"""
from __future__ import annotations

import struct
import time

import numpy as np
import pytest

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
        harness.wait_for(lambda: harness.image_pub.get_subscription_count() > 0 or process.poll() is not None,
                         120, "dpt_node to subscribe to image")
        assert process.poll() is None, f"dpt_node exited:\n{log.read_text()}"
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
    rig.wait_for(lambda: any(m.header.stamp.sec == stamp_sec for m in stats(rig)), timeout,
                 f"stats for frame {stamp_sec}")


def by_stamp(rig, name: str, stamp_sec: int):
    rig.wait_for(lambda: any(m.header.stamp.sec == stamp_sec for m in rig.messages(topic(name))), 30,
                 f"{name} for frame {stamp_sec}")
    return next(m for m in rig.messages(topic(name)) if m.header.stamp.sec == stamp_sec)


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
    send_frame(rig, 14, info_msg=make_camera_info(14, width=WIDTH * 2))   # camera_info of another size
    time.sleep(0.3)
    send_frame(rig, 15, info_msg=make_camera_info(15, fx=0.0))            # zero focal length
    time.sleep(0.3)
    send_frame(rig, 16)                                                   # a good frame afterwards
    wait_processed(rig, 1016)
    assert rig.process.poll() is None
    assert stats(rig)[-1].frames_rejected - before == 6
    log = rig.log.read_text()
    assert "xyz16" in log and "camera_info" in log


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
    assert processed + dropped + (end.frames_rejected - start.frames_rejected) == received


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


def failure_output(tmp_path, *ros_args: str) -> tuple[str, str]:
    """Run dpt_node with ``ros_args`` expecting it to fail at start-up: (its one ERROR line, whole log).
    Asserts the non-zero exit, exactly one ERROR line and no traceback."""
    from support.ros_harness import start_executable

    log = tmp_path / "fail.log"
    process = start_executable("dpt_node", *ros_args, log_path=log)
    assert process.wait(timeout=120) != 0
    text = log.read_text()
    error_lines = [line for line in text.splitlines() if "ERROR" in line]
    assert len(error_lines) == 1, text
    assert "Traceback" not in text, text
    return error_lines[0], text


def test_model_that_cannot_load_exits_with_one_clear_error(tmp_path):
    error, _ = failure_output(tmp_path, "-r", "__ns:=/dpt_fail", "-p", "model.variant:=dpt_tiny",
                              "-p", "model.weights:=/nonexistent/weights.pt", "-p", "device:=cpu")
    assert "/nonexistent/weights.pt" in error


def test_parameter_of_the_wrong_type_ends_with_one_clear_error(tmp_path):
    error, _ = failure_output(tmp_path, "-r", "__ns:=/dpt_type", "-p", "model.variant:=dpt_tiny",
                              "-p", "input_size:=large", "-p", "device:=cpu")
    assert "input_size must be of type int" in error and "'large'" in error
