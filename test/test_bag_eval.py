"""End-to-end tests of evaluate_bag on bags generated here with rosbags' writer.

Scenes are tiny (64x48, a handful of frames) with known ground truth: two fronto-parallel planes
per frame at known distances, and two labelled regions. Two kinds of engine run them:

* the real tiny random model (``dpt_tiny --allow-random-weights``) through the command line, which
  checks the plumbing (topics, counts, stamps, storage format, report files);
* ``SceneReadingEngine``, a test double that reads the scene's true depth back out of the image's
  red channel and applies a known error, so the metrics in the report can be checked against
  values computed by hand.
"""
import json
import math
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.typesys import Stores, get_typestore

from dpt_ros.evaluation import bag_io
from dpt_ros.evaluation.run import evaluate
from dpt_ros.evaluation.cli import build_parser, config_from_args, main
from dpt_ros.inference import InferenceResult

REPO = Path(__file__).resolve().parent.parent
TYPESTORE = get_typestore(Stores.ROS2_JAZZY)
T = TYPESTORE.types
HEIGHT, WIDTH = 48, 64
T0 = 1_700_000_000_000_000_000  # header stamp of frame 0 (ns)
PERIOD = 100_000_000  # 10 Hz
RECEIVE_DELAY = 3_000_000  # bag time = header stamp + 3 ms: matching must use header stamps
FX = FY = 50.0
CX, CY = 31.5, 23.5
# The image's red channel holds depth in units of 5 cm, which SceneReadingEngine reads back.
RED_PER_METRE = 20
# Labels: left half "wall" (0), right half "floor" (3), top row unlabeled.
LEFT_CLASS, RIGHT_CLASS = 0, 3
STORAGES = ("sqlite3", "mcap")


def plane_depths(k: int) -> tuple[float, float]:
    """Distances (m) of the top and bottom plane in frame k (multiples of 5 cm)."""
    return 2.0 + 0.5 * k, 4.0 + 0.25 * k


def scene(k: int):
    top, bottom = plane_depths(k)
    depth = np.empty((HEIGHT, WIDTH), np.float32)
    depth[: HEIGHT // 2] = top
    depth[HEIGHT // 2:] = bottom
    labels = np.full((HEIGHT, WIDTH), LEFT_CLASS, np.uint8)
    labels[:, WIDTH // 2:] = RIGHT_CLASS
    labels[0] = 255
    rgb = np.empty((HEIGHT, WIDTH, 3), np.uint8)
    rgb[..., 0] = np.round(depth * RED_PER_METRE).astype(np.uint8)
    rgb[..., 1] = np.where(labels == RIGHT_CLASS, 200, 40)
    rgb[..., 2] = np.arange(WIDTH, dtype=np.uint8)[None, :] * 3
    return rgb, depth, labels


def header(stamp_ns: int):
    return bag_io.make_header(TYPESTORE, stamp_ns, "camera_optical_frame")


def image_msg(array, encoding):
    from dpt_ros.image_codec import array_to_image_fields

    return T["sensor_msgs/msg/Image"], array_to_image_fields(array, encoding, as_numpy=True)


def write_bag(path, storage="sqlite3", frames=4, *, compressed=False, corrupt=(),
              depth_encoding="32FC1", raw_ade_labels=False, gt_offset_ns=0, extra_topics=False):
    """A bag with /camera/image_raw (or .../compressed), camera_info, gt depth and gt labels."""
    writer = Writer(path, version=9, storage_plugin=StoragePlugin[storage.upper()])
    writer.open()
    image_type = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    image_topic = "/camera/image_raw/compressed" if compressed else "/camera/image_raw"
    conns = {
        "image": writer.add_connection(image_topic, image_type, typestore=TYPESTORE),
        "info": writer.add_connection("/camera/camera_info", "sensor_msgs/msg/CameraInfo",
                                      typestore=TYPESTORE),
        "depth": writer.add_connection("/gt/depth", "sensor_msgs/msg/Image", typestore=TYPESTORE),
        "labels": writer.add_connection("/gt/labels", "sensor_msgs/msg/Image", typestore=TYPESTORE),
    }
    if extra_topics:
        conns["tf"] = writer.add_connection("/tf", "tf2_msgs/msg/TFMessage", typestore=TYPESTORE)

    def put(name, msg, bag_time):
        writer.write(conns[name], bag_time, TYPESTORE.serialize_cdr(msg, msg.__msgtype__))

    for k in range(frames):
        stamp = T0 + k * PERIOD
        rgb, depth, labels = scene(k)
        if compressed:
            ok, jpeg = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
            data = np.frombuffer(b"not an image" if k in corrupt else jpeg.tobytes(), np.uint8)
            msg = T[image_type](header=header(stamp), format="png", data=data)
        else:
            cls, fields = image_msg(rgb, "rgb8")
            if k in corrupt:  # truncated pixel data: deserializes, cannot be decoded
                fields["data"] = fields["data"][: fields["step"] * 3]
            msg = cls(header=header(stamp), **fields)
        put("image", msg, stamp + RECEIVE_DELAY)
        info = T["sensor_msgs/msg/CameraInfo"](
            header=header(stamp), height=HEIGHT, width=WIDTH, distortion_model="plumb_bob",
            d=np.zeros(5), k=np.array([FX, 0, CX, 0, FY, CY, 0, 0, 1.0]), r=np.eye(3).ravel(),
            p=np.array([FX, 0, CX, 0, 0, FY, CY, 0, 0, 0, 1.0, 0]), binning_x=0, binning_y=0,
            roi=T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0,
                                                     do_rectify=False))
        put("info", info, stamp + RECEIVE_DELAY)
        if depth_encoding == "16UC1":
            cls, fields = image_msg(np.round(depth * 1000).astype(np.uint16), "16UC1")
        else:
            cls, fields = image_msg(depth, "32FC1")
        put("depth", cls(header=header(stamp + gt_offset_ns), **fields),
            stamp + gt_offset_ns + 2 * RECEIVE_DELAY)
        if raw_ade_labels:  # raw ADE20K: 0 = unlabeled, k = class k-1
            cls, fields = image_msg(np.where(labels == 255, 0, labels + 1).astype(np.uint16), "16UC1")
        else:
            cls, fields = image_msg(labels, "mono8")
        put("labels", cls(header=header(stamp + gt_offset_ns), **fields),
            stamp + gt_offset_ns + 2 * RECEIVE_DELAY)
        if extra_topics:
            put("tf", T["tf2_msgs/msg/TFMessage"](transforms=[]), stamp + 1)
    writer.close()
    return Path(path)


class SceneReadingEngine:
    """Engine test double: depth from the scene encoded in the red channel, with a known error.

    ``kind="metric_depth"`` returns ``factor * depth`` (metres); ``"relative_inverse_depth"``
    returns an affine map of the true inverse depth, which alignment must undo exactly.
    """

    def __init__(self, kind="metric_depth", factor=1.0, labels=False):
        self.depth_output_kind = kind
        self.factor = factor
        self.with_labels = labels
        self.device = "cpu"
        self.precision = "fp32"
        self.calls = []

    def network_size(self, height, width, task):
        return 32 * round(height / 32), 32 * round(width / 32)

    def infer(self, images, bgr=False):
        self.calls.append(len(images))
        results = []
        for image in images:
            depth = image[..., 0].astype(np.float32) / RED_PER_METRE
            if self.depth_output_kind == "metric_depth":
                out = self.factor * depth
            else:
                out = (1.0 / depth - 0.05) / 0.01  # s = 0.01, t = 0.05 recovers 1/depth
            labels = None
            if self.with_labels:  # the right half predicted correctly, the left half as class 1
                labels = np.where(image[..., 1] == 200, RIGHT_CLASS, 1).astype(np.uint8)
            results.append(InferenceResult(depth=out.astype(np.float32), labels=labels,
                                           timings_ms={"preprocess": 1.0, "inference": 2.0,
                                                       "postprocess": 0.5}))
        return results


def make_config(bag, *extra):
    return config_from_args(build_parser().parse_args([str(bag), "--no-progress", *extra]))


def read_bag(path):
    """{topic: [(bag_time, message), ...]} and the storage identifier of a bag."""
    messages = {}
    with Reader(path) as reader:
        for connection, bag_time, raw in reader.messages():
            messages.setdefault(connection.topic, []).append(
                (bag_time, OUT_TYPESTORE.deserialize_cdr(raw, connection.msgtype)))
        topics = {topic: info.msgtype for topic, info in reader.topics.items()}
    return messages, topics


OUT_TYPESTORE, HAS_OUR_TYPES = bag_io.make_typestore()


def test_our_message_definitions_are_registered():
    assert HAS_OUR_TYPES, "msg/InferenceStats.msg and msg/LabelInfo.msg should be found"
    fields = OUT_TYPESTORE.types["dpt_ros/msg/InferenceStats"].__dataclass_fields__
    assert {"header", "inference_ms", "frames_processed"} <= set(fields)


# ------------------------------------------------------------------------------------------------
# Exact metrics through the whole pipeline (engine test double)
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("storage", STORAGES)
def test_metric_model_known_error_factor(tmp_path, storage):
    frames = 4
    bag = write_bag(tmp_path / "in", storage, frames, depth_encoding="16UC1" if storage == "mcap"
                    else "32FC1")
    config = make_config(bag, "--image-topic", "/camera/image_raw", "--gt-depth-topic",
                         "/gt/depth", "--camera-info-topic", "/camera/camera_info",
                         "--variant", "dpt_hybrid_kitti", "--allow-random-weights",
                         "--batch-size", "3", "--output-bag", str(tmp_path / "out"),
                         "--report-dir", str(tmp_path / "report"))
    engine = SceneReadingEngine("metric_depth", factor=1.1)
    report = evaluate(config, engine=engine)

    assert engine.calls == [3, 1]  # batches of --batch-size, the remainder last
    assert report["alignment"] == "none"
    assert (config.min_depth, config.max_depth) == (1e-3, 80.0)  # the variant's KITTI preset
    # Hand-computed: every pixel is 10% too far. Per frame AbsRel 0.1, SqRel 0.01*mean(g),
    # RMSE 0.1*sqrt(mean(g^2)); the report averages over frames.
    planes = [plane_depths(k) for k in range(frames)]
    depth = report["depth"]
    assert depth["abs_rel"] == pytest.approx(0.1, rel=1e-5)
    assert depth["sq_rel"] == pytest.approx(np.mean([0.01 * (a + b) / 2 for a, b in planes]),
                                            rel=1e-5)
    assert depth["rmse"] == pytest.approx(
        np.mean([0.1 * math.sqrt((a * a + b * b) / 2) for a, b in planes]), rel=1e-5)
    assert depth["rmse_log"] == pytest.approx(math.log(1.1), rel=1e-5)
    assert (depth["delta1"], depth["delta2"], depth["delta3"]) == (1.0, 1.0, 1.0)
    assert depth["valid_pixels"] == frames * HEIGHT * WIDTH
    assert report["counts"]["depth_evaluated"] == frames

    # Output bag: same storage as the input, metric depth on depth/image, points, stats.
    assert bag_io.bag_storage(tmp_path / "out") == storage
    messages, topics = read_bag(tmp_path / "out")
    assert topics == {"/dpt/depth/image": "sensor_msgs/msg/Image",
                      "/dpt/depth/camera_info": "sensor_msgs/msg/CameraInfo",
                      "/dpt/points": "sensor_msgs/msg/PointCloud2",
                      "/dpt/stats": "dpt_ros/msg/InferenceStats"}
    stamps = [T0 + k * PERIOD for k in range(frames)]
    for topic, entries in messages.items():
        assert [t for t, _ in entries] == stamps, topic  # bag time = source header stamp
        assert [bag_io.stamp_to_ns(m.header.stamp) for _, m in entries] == stamps, topic
        assert all(m.header.frame_id == "camera_optical_frame" for _, m in entries)
    depth_msg = messages["/dpt/depth/image"][2][1]
    assert (depth_msg.encoding, depth_msg.height, depth_msg.width) == ("32FC1", HEIGHT, WIDTH)
    decoded = depth_msg.data.view("<f4").reshape(HEIGHT, WIDTH)
    np.testing.assert_allclose(decoded[0, 0], 1.1 * plane_depths(2)[0], rtol=1e-6)

    # Point (u, v) = (10, 40) of frame 1 lies on the bottom plane: X = (u - cx) Z / fx, ...
    cloud = messages["/dpt/points"][1][1]
    assert (cloud.height, cloud.width) == (HEIGHT, WIDTH)
    xyz = np.frombuffer(cloud.data.tobytes(), np.uint8).reshape(HEIGHT, WIDTH, cloud.point_step)
    point = xyz[40, 10, :12].view("<f4")
    z = 1.1 * plane_depths(1)[1]
    np.testing.assert_allclose(point, [(10 - CX) * z / FX, (40 - CY) * z / FY, z], rtol=1e-5)

    stats = messages["/dpt/stats"][-1][1]
    assert (stats.input_width, stats.input_height) == (WIDTH, HEIGHT)
    assert stats.inference_ms == pytest.approx(2.0)  # alone in the last batch
    # Frames 0-2 shared one infer call of 2 ms: each is charged a third.
    assert messages["/dpt/stats"][0][1].inference_ms == pytest.approx(2.0 / 3)
    assert stats.frames_processed == frames

    # The report on disk matches what evaluate returned.
    on_disk = json.loads((tmp_path / "report" / "report.json").read_text())
    assert on_disk["depth"]["abs_rel"] == pytest.approx(0.1, rel=1e-5)
    assert len(on_disk["frames"]) == frames
    assert on_disk["frames"][0]["depth"]["abs_rel"] == pytest.approx(0.1, rel=1e-5)


def test_relative_model_is_aligned_and_labels_are_scored(tmp_path):
    bag = write_bag(tmp_path / "in", "mcap", 3, raw_ade_labels=True)
    config = make_config(bag, "--image-topic", "/camera/image_raw", "--gt-depth-topic",
                         "/gt/depth", "--gt-labels-topic", "/gt/labels", "--gt-label-offset", "1",
                         "--variant", "dpt_tiny", "--allow-random-weights", "--preset", "nyu",
                         "--report-dir", str(tmp_path / "report"))
    assert config.tasks == ("depth", "segmentation")
    report = evaluate(config, engine=SceneReadingEngine("relative_inverse_depth", labels=True))
    assert report["alignment"] == "scale_shift_inverse_depth"
    assert report["depth"]["abs_rel"] == pytest.approx(0.0, abs=1e-5)
    assert report["depth"]["delta1"] == 1.0
    for frame in report["frames"]:
        assert frame["alignment"]["scale"] == pytest.approx(0.01, rel=1e-6)
        assert frame["alignment"]["shift"] == pytest.approx(0.05, rel=1e-6)
    # Row 0 is unlabeled; the right half (class 3) is right, the left half (class 0) is
    # predicted as class 1: accuracy 1/2, IoU(3) = 1, IoU(0) = IoU(1) = 0.
    segmentation = report["segmentation"]
    assert segmentation["evaluated_pixels"] == 3 * (HEIGHT - 1) * WIDTH
    assert segmentation["pixel_accuracy"] == pytest.approx(0.5)
    assert segmentation["per_class_iou"] == {"0": 0.0, "1": 0.0, "3": 1.0}
    assert segmentation["mean_iou"] == pytest.approx(1 / 3)
    entries = report["confusion_matrix"]["entries_gt_pred_count"]
    half = 3 * (HEIGHT - 1) * WIDTH // 2
    assert sorted(entries) == [[0, 1, half], [3, 3, half]]
    for name in ("report.json", "report.md", "confusion_matrix.png", "samples.png",
                 "error_vs_depth.png", "depth_metrics_per_frame.png"):
        assert (tmp_path / "report" / name).stat().st_size > 0, name


def test_ground_truth_is_matched_by_stamp_within_tolerance(tmp_path):
    bag = write_bag(tmp_path / "in", "sqlite3", 3, gt_offset_ns=30_000_000)  # GT 30 ms late
    args = ("--image-topic", "/camera/image_raw", "--gt-depth-topic", "/gt/depth", "--variant",
            "dpt_hybrid_kitti", "--allow-random-weights")
    strict = evaluate(make_config(bag, *args, "--stamp-tolerance", "0.02"),
                      engine=SceneReadingEngine())
    assert strict["counts"]["depth_no_ground_truth"] == 3
    assert strict["counts"]["depth_evaluated"] == 0 and strict["depth"] is None
    loose = evaluate(make_config(bag, *args, "--stamp-tolerance", "0.04"),
                     engine=SceneReadingEngine())
    assert loose["counts"]["depth_evaluated"] == 3
    # Image k is matched to ground truth k (30 ms away), not to ground truth k-1 (70 ms away):
    # a perfect prediction then scores 0.
    assert loose["depth"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)


def test_start_stride_and_max_frames_select_frames(tmp_path):
    bag = write_bag(tmp_path / "in", "sqlite3", 10)
    config = make_config(bag, "--image-topic", "/camera/image_raw", "--variant",
                         "dpt_hybrid_kitti", "--allow-random-weights", "--start", "0.25",
                         "--stride", "2", "--max-frames", "3", "--output-bag",
                         str(tmp_path / "out"))
    report = evaluate(config, engine=SceneReadingEngine())
    # Images from 0.25 s on are frames 3..9 (bag time = stamp + 3 ms); every 2nd: 3, 5, 7.
    assert [f["stamp_ns"] for f in report["frames"]] == [T0 + k * PERIOD for k in (3, 5, 7)]
    messages, _ = read_bag(tmp_path / "out")
    assert [t for t, _ in messages["/dpt/depth/image"]] == [T0 + k * PERIOD for k in (3, 5, 7)]


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("compressed", [False, True])
def test_undecodable_frames_are_skipped_and_counted(tmp_path, compressed):
    bag = write_bag(tmp_path / "in", "mcap", 5, compressed=compressed, corrupt={1, 3})
    topic = "/camera/image_raw/compressed" if compressed else "/camera/image_raw"
    config = make_config(bag, "--image-topic", topic, "--gt-depth-topic", "/gt/depth",
                         "--variant", "dpt_hybrid_kitti", "--allow-random-weights",
                         "--batch-size", "2", "--output-bag", str(tmp_path / "out"),
                         "--report-dir", str(tmp_path / "report"))
    report = evaluate(config, engine=SceneReadingEngine())
    assert report["input"]["image_type"] == ("sensor_msgs/msg/CompressedImage" if compressed
                                             else "sensor_msgs/msg/Image")
    assert report["counts"]["selected"] == 5
    assert report["counts"]["undecodable"] == 2
    assert report["counts"]["processed"] == 3
    statuses = [(f["index"], f["status"]) for f in report["frames"]]
    assert sorted(statuses) == [(0, "processed"), (1, "undecodable"), (2, "processed"),
                                (3, "undecodable"), (4, "processed")]
    assert "ImageDecodeError" in next(f for f in report["frames"] if f["index"] == 1)["error"]
    messages, _ = read_bag(tmp_path / "out")
    assert [t for t, _ in messages["/dpt/depth/image"]] == [T0 + k * PERIOD for k in (0, 2, 4)]
    assert report["depth"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)  # PNG is lossless


def test_missing_topic_lists_the_bag_topics(tmp_path, capsys):
    bag = write_bag(tmp_path / "in", "sqlite3", 1)
    code = main([str(bag), "--image-topic", "/nope", "--variant", "dpt_tiny",
                 "--allow-random-weights", "--no-progress"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "'/nope' is not in bag" in err
    for listed in ("/camera/image_raw (sensor_msgs/msg/Image, 1 msgs)",
                   "/camera/camera_info (sensor_msgs/msg/CameraInfo", "/gt/depth", "/gt/labels"):
        assert listed in err


def test_wrong_topic_type_and_missing_weights_are_clear_errors(tmp_path, capsys):
    bag = write_bag(tmp_path / "in", "sqlite3", 1)
    assert main([str(bag), "--image-topic", "/camera/camera_info", "--variant", "dpt_tiny",
                 "--allow-random-weights", "--no-progress"]) == 2
    assert "has type sensor_msgs/msg/CameraInfo" in capsys.readouterr().err
    assert main([str(bag), "--image-topic", "/camera/image_raw", "--variant", "dpt_tiny"]) == 2
    assert "no weights given" in capsys.readouterr().err
    assert main([str(bag), "--image-topic", "/camera/image_raw", "--variant", "dpt_nope",
                 "--allow-random-weights"]) == 2
    assert "unknown variant" in capsys.readouterr().err
    missing = tmp_path / "missing.pt"
    assert main([str(bag), "--image-topic", "/camera/image_raw", "--variant", "dpt_tiny",
                 "--weights", str(missing), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("evaluate_bag: error:") and str(missing) in err
    assert len(err.splitlines()) == 1


# ------------------------------------------------------------------------------------------------
# Interrupted runs
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("storage", STORAGES)
def test_interrupted_run_leaves_a_valid_bag_and_report(tmp_path, storage):
    bag = write_bag(tmp_path / "in", storage, 6, extra_topics=True)
    config = make_config(bag, "--image-topic", "/camera/image_raw", "--gt-depth-topic",
                         "/gt/depth", "--variant", "dpt_hybrid_kitti", "--allow-random-weights",
                         "--output-bag", str(tmp_path / "out"), "--copy-topics", "/tf",
                         "--report-dir", str(tmp_path / "report"))

    def interrupt_after_two(record):
        if record["index"] == 1:
            raise KeyboardInterrupt

    report = evaluate(config, engine=SceneReadingEngine(), after_frame=interrupt_after_two)
    assert report["interrupted"] is True
    assert report["counts"]["processed"] == 2
    on_disk = json.loads((tmp_path / "report" / "report.json").read_text())
    assert on_disk["interrupted"] is True and len(on_disk["frames"]) == 2
    assert "Interrupted" in (tmp_path / "report" / "report.md").read_text()
    messages, _ = read_bag(tmp_path / "out")
    assert len(messages["/dpt/depth/image"]) == 2
    # Copied topics stop where the run stopped: /tf of frames 0 and 1 only.
    assert [t for t, _ in messages["/tf"]] == [T0 + 1, T0 + PERIOD + 1]


# ------------------------------------------------------------------------------------------------
# The real tiny model through the command line
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("storage,compressed", [("sqlite3", False), ("mcap", True)])
def test_cli_with_tiny_random_model(tmp_path, storage, compressed, capsys):
    frames = 3
    torch.manual_seed(0)  # the random model is built in this process
    bag = write_bag(tmp_path / "in", storage, frames, compressed=compressed)
    topic = "/camera/image_raw/compressed" if compressed else "/camera/image_raw"
    code = main([str(bag), "--image-topic", topic, "--camera-info-topic", "/camera/camera_info",
                 "--gt-depth-topic", "/gt/depth", "--gt-labels-topic", "/gt/labels",
                 "--variant", "dpt_tiny", "--allow-random-weights", "--device", "cpu",
                 "--batch-size", "2", "--output-bag", str(tmp_path / "out"),
                 "--copy-topics", topic, "--report-dir", str(tmp_path / "report")])
    assert code == 0, capsys.readouterr().err
    assert bag_io.bag_storage(tmp_path / "out") == storage
    messages, topics = read_bag(tmp_path / "out")
    assert topics == {
        "/dpt/segmentation/label_info": "dpt_ros/msg/LabelInfo",
        "/dpt/depth/relative": "sensor_msgs/msg/Image",
        "/dpt/segmentation/labels": "sensor_msgs/msg/Image",
        "/dpt/depth/camera_info": "sensor_msgs/msg/CameraInfo",
        "/dpt/stats": "dpt_ros/msg/InferenceStats",
        topic: "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image",
    }
    stamps = [T0 + k * PERIOD for k in range(frames)]
    for name in ("/dpt/depth/relative", "/dpt/segmentation/labels", "/dpt/stats"):
        assert [t for t, _ in messages[name]] == stamps
        assert [bag_io.stamp_to_ns(m.header.stamp) for _, m in messages[name]] == stamps
    assert [t for t, _ in messages[topic]] == [s + RECEIVE_DELAY for s in stamps]  # unchanged
    labels = messages["/dpt/segmentation/labels"][0][1]
    assert (labels.encoding, labels.height, labels.width) == ("mono8", HEIGHT, WIDTH)
    assert labels.data.max() < 150
    info = messages["/dpt/segmentation/label_info"][0][1]
    assert len(info.class_names) == 150 and info.class_names[0] == "wall"
    assert info.ignore_id == 255

    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["counts"]["processed"] == frames
    assert report["counts"]["labels_evaluated"] == frames
    assert report["alignment"] == "scale_shift_inverse_depth"
    # An untrained network may well predict a constant map, which no scale/shift can align:
    # such frames must be reported as not evaluable, with the reason, never silently dropped.
    counts = report["counts"]
    assert counts["depth_evaluated"] + counts["depth_not_evaluable"] == frames
    for frame in report["frames"]:
        assert ("depth" in frame) != ("depth_error" in frame)
    if counts["depth_evaluated"]:
        assert set(report["depth"]) >= {"abs_rel", "sq_rel", "rmse", "rmse_log", "delta1"}
    assert 0.0 <= report["segmentation"]["pixel_accuracy"] <= 1.0
    assert set(report["versions"]) >= {"dpt_ros", "torch", "timm", "rosbags"}
    assert report["configuration"]["variant"] == "dpt_tiny"
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "| Pixel accuracy |" in markdown and "`dpt_tiny` (depth, segmentation)" in markdown


def test_sigint_during_cli_run_finalizes_outputs(tmp_path):
    """A real Ctrl-C (SIGINT to the process) after the first frames: bag and report survive."""
    frames = 200
    bag = write_bag(tmp_path / "in", "mcap", frames)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    process = subprocess.Popen(
        [sys.executable, "-m", "dpt_ros.evaluation.cli", str(bag), "--image-topic",
         "/camera/image_raw", "--gt-depth-topic", "/gt/depth", "--variant", "dpt_tiny",
         "--allow-random-weights", "--device", "cpu", "--output-bag", str(tmp_path / "out"),
         "--report-dir", str(tmp_path / "report")],
        cwd=REPO, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    stderr = []
    progressed = threading.Event()

    def watch():  # tqdm writes "n/total" updates to stderr
        while chunk := process.stderr.read1(4096):
            stderr.append(chunk.decode(errors="replace"))
            done = re.findall(r"(\d+)/%d" % frames, "".join(stderr))
            if done and int(done[-1]) >= 2:
                progressed.set()

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        deadline = time.monotonic() + 120
        while not progressed.wait(timeout=0.2):
            assert process.poll() is None, f"exited early: {''.join(stderr)}"
            assert time.monotonic() < deadline, "".join(stderr)
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=60) == 130, "".join(stderr)
    finally:
        if process.poll() is None:
            process.kill()
    watcher.join(timeout=5)
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["interrupted"] is True
    processed = report["counts"]["processed"]
    assert 2 <= processed < frames
    messages, _ = read_bag(tmp_path / "out")
    assert len(messages["/dpt/depth/relative"]) == processed
    assert len(report["frames"]) == processed
