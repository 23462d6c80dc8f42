"""End-to-end tests of evaluate_bag on bags generated here with rosbags' writer.

Scenes are tiny (64x48, a handful of frames) with known ground truth: two fronto-parallel planes
per frame at known distances, and two labelled regions. Two kinds of engine run them:

* the real tiny random model (``dpt_tiny --weights '' --allow-random-weights``, dpt_node's
  random-weights rule) through the command line, which checks the plumbing (topics, counts,
  stamps, storage format, report files);
* ``SceneReadingEngine``, a test double that reads the scene's true depth back out of the image's
  red channel and applies a known error, so the metrics in the report can be checked against
  values computed by hand.
"""
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dpt_ros.evaluation import bag_io
from dpt_ros.evaluation.cli import build_parser, config_from_args, main
from dpt_ros.evaluation.run import evaluate
from support.bags import (
    CX,
    CY,
    FX,
    FY,
    HAS_OUR_TYPES,
    HEIGHT,
    OUT_TYPESTORE,
    PERIOD,
    RECEIVE_DELAY,
    STORAGES,
    T0,
    WIDTH,
    SceneReadingEngine,
    plane_depths,
    read_bag,
    write_bag,
)
from support.interrupt import interrupt_when

REPO = Path(__file__).resolve().parent.parent


def make_config(bag, *extra):
    return config_from_args(build_parser().parse_args([str(bag), "--no-progress", *extra]))


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
    # The variant's KITTI preset.
    assert (report["configuration"]["min_depth"], report["configuration"]["max_depth"]) == (1e-3, 80.0)
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
        # Logged when the input image was recorded; its header stamp is kept inside.
        assert [t for t, _ in entries] == [s + RECEIVE_DELAY for s in stamps], topic
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
    assert config.model.tasks == ("depth", "segmentation")
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
    entries = report["sums"]["confusion_matrix"]["entries_gt_pred_count"]
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
    assert [t for t, _ in messages["/dpt/depth/image"]] == [T0 + k * PERIOD + RECEIVE_DELAY for k in (3, 5, 7)]


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
    assert [t for t, _ in messages["/dpt/depth/image"]] == [T0 + k * PERIOD + RECEIVE_DELAY for k in (0, 2, 4)]
    assert report["depth"]["abs_rel"] == pytest.approx(0.0, abs=1e-6)  # PNG is lossless
    assert list(report["undecodable_reasons"].values()) == [2]


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
    # dpt_node's random-weights rule: empty weights need --allow-random-weights.
    assert main([str(bag), "--image-topic", "/camera/image_raw", "--variant", "dpt_tiny", "--weights", ""]) == 2
    assert "model.weights is empty" in capsys.readouterr().err
    # dpt_tiny has no official checkpoint for the default 'auto'.
    assert main([str(bag), "--image-topic", "/camera/image_raw", "--variant", "dpt_tiny"]) == 2
    assert "no official depth checkpoint" in capsys.readouterr().err
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
                 "--variant", "dpt_tiny", "--weights", "", "--segmentation-weights", "",
                 "--allow-random-weights", "--device", "cpu",
                 "--batch-size", "2", "--output-bag", str(tmp_path / "out"),
                 "--copy-topics", topic, "--report-dir", str(tmp_path / "report")])
    assert code == 0, capsys.readouterr().err
    assert bag_io.bag_storage(tmp_path / "out") == storage
    messages, topics = read_bag(tmp_path / "out")
    # Relative depth only (no --depth-scale): no depth/image, so neither its camera_info nor
    # a cloud, as dpt_node publishes.
    assert topics == {
        "/dpt/segmentation/label_info": "dpt_ros/msg/LabelInfo",
        "/dpt/depth/relative": "sensor_msgs/msg/Image",
        "/dpt/segmentation/labels": "sensor_msgs/msg/Image",
        "/dpt/stats": "dpt_ros/msg/InferenceStats",
        topic: "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image",
    }
    stamps = [T0 + k * PERIOD for k in range(frames)]
    recorded = [s + RECEIVE_DELAY for s in stamps]
    for name in ("/dpt/depth/relative", "/dpt/segmentation/labels", "/dpt/stats"):
        assert [t for t, _ in messages[name]] == recorded
        assert [bag_io.stamp_to_ns(m.header.stamp) for _, m in messages[name]] == stamps
    assert [t for t, _ in messages[topic]] == recorded  # unchanged
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
    assert report["configuration"]["model"]["variant"] == "dpt_tiny"
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
         "--weights", "", "--allow-random-weights", "--device", "cpu", "--output-bag", str(tmp_path / "out"),
         "--report-dir", str(tmp_path / "report")],
        cwd=REPO, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)

    def progressed(stderr: str) -> bool:  # tqdm writes "n/total" updates to stderr
        done = re.findall(r"(\d+)/%d" % frames, stderr)
        return bool(done) and int(done[-1]) >= 2

    code, stderr = interrupt_when(process, progressed, timeout_s=120)
    assert code == 130, stderr
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["interrupted"] is True
    processed = report["counts"]["processed"]
    assert 2 <= processed < frames
    messages, _ = read_bag(tmp_path / "out")
    assert len(messages["/dpt/depth/relative"]) == processed
    assert len(report["frames"]) == processed


# ------------------------------------------------------------------------------------------------
# The outputs dpt_node would publish, through the same path
# ------------------------------------------------------------------------------------------------

def _pixels(image_msg) -> np.ndarray:
    dtype = {"32FC1": "<f4", "mono8": "u1"}[image_msg.encoding]
    return np.frombuffer(image_msg.data.tobytes(), dtype).reshape(image_msg.height, image_msg.width)


def test_depth_flags_give_the_metric_depth_the_node_publishes(tmp_path):
    """--depth-scale/--depth-shift/--depth-max-range mean what dpt_node's depth.scale/shift/max_range
    mean: depth/image is dpt_ros.pipeline.to_metric_depth of depth/relative, with its camera_info
    and cloud, and the run scores that metric depth as it is published."""
    from dpt_ros.pipeline import PipelineSettings, to_metric_depth

    bag = write_bag(tmp_path / "in", "mcap", 3)
    config = make_config(bag, "--image-topic", "/camera/image_raw", "--camera-info-topic", "/camera/camera_info",
                         "--gt-depth-topic", "/gt/depth", "--variant", "dpt_tiny", "--depth-scale", "0.01",
                         "--depth-shift", "0.05", "--depth-max-range", "4.4", "--output-bag", str(tmp_path / "out"))
    report = evaluate(config, engine=SceneReadingEngine("relative_inverse_depth"))
    assert report["alignment"] == "none"
    assert report["depth_output_kind"] == "relative_inverse_depth"
    messages, topics = read_bag(tmp_path / "out")
    assert set(topics) == {"/dpt/depth/image", "/dpt/depth/relative", "/dpt/depth/camera_info", "/dpt/points",
                           "/dpt/stats"}
    settings = PipelineSettings(depth_scale=0.01, depth_shift=0.05, depth_max_range=4.4)
    for (_, depth), (_, relative) in zip(messages["/dpt/depth/image"], messages["/dpt/depth/relative"]):
        expected = to_metric_depth(_pixels(relative), "relative_inverse_depth", settings)
        assert _pixels(depth).tobytes() == expected.tobytes()
    # Frame 2: the top plane (3 m) is in range, the bottom one (4.5 m) beyond depth.max_range.
    frame2 = _pixels(messages["/dpt/depth/image"][2][1])
    assert frame2[0, 0] == pytest.approx(3.0, rel=1e-5)
    assert not np.isfinite(frame2[-1, 0])
    # 1 / (0.01 * relative + 0.05) undoes the scene engine's map: frame 0 (2 m, 4 m) is exact.
    assert report["frames"][0]["depth"]["abs_rel"] == pytest.approx(0.0, abs=1e-5)
    assert len(messages["/dpt/points"]) == 3


def test_cloud_intrinsics_follow_the_binning_and_roi_of_camera_info(tmp_path):
    """Calibrated at 256x192, the camera sends a 2x2-binned 128x96 region at (64, 48): a 64x48
    image whose intrinsics are fx/2 and (cx - 64)/2, as image_geometry computes them."""
    from functools import partial

    from support.bags import camera_info_msg

    info = partial(camera_info_msg, width=256, height=192, fx=200.0, fy=180.0, cx=127.5, cy=95.5, binning=2,
                   roi=(64, 48, 128, 96))
    bag = write_bag(tmp_path / "in", "sqlite3", 2, camera_info=info)
    config = make_config(bag, "--image-topic", "/camera/image_raw", "--camera-info-topic", "/camera/camera_info",
                         "--variant", "dpt_hybrid_kitti", "--output-bag", str(tmp_path / "out"))
    evaluate(config, engine=SceneReadingEngine("metric_depth"))
    messages, _ = read_bag(tmp_path / "out")
    cloud = messages["/dpt/points"][1][1]
    points = np.frombuffer(cloud.data.tobytes(), np.uint8).reshape(HEIGHT, WIDTH, cloud.point_step)
    z = plane_depths(1)[1]
    fx, fy, cx, cy = 100.0, 90.0, (127.5 - 64) / 2, (95.5 - 48) / 2
    np.testing.assert_allclose(points[40, 10, :12].view("<f4"), [(10 - cx) * z / fx, (40 - cy) * z / fy, z],
                               rtol=1e-6)
    written = messages["/dpt/depth/camera_info"][1][1]
    assert (written.width, written.height, written.binning_x, written.roi.x_offset) == (256, 192, 2, 64)


def test_camera_info_of_another_image_size_costs_the_cloud_not_the_depth(tmp_path):
    from functools import partial

    from support.bags import camera_info_msg

    bag = write_bag(tmp_path / "in", "sqlite3", 2, camera_info=partial(camera_info_msg, width=100))
    config = make_config(bag, "--image-topic", "/camera/image_raw", "--camera-info-topic", "/camera/camera_info",
                         "--variant", "dpt_hybrid_kitti", "--output-bag", str(tmp_path / "out"))
    report = evaluate(config, engine=SceneReadingEngine("metric_depth"))
    messages, topics = read_bag(tmp_path / "out")
    assert len(messages["/dpt/depth/image"]) == 2
    assert "/dpt/points" not in topics and "/dpt/depth/camera_info" not in topics
    assert any("100x48" in warning and "64x48" in warning for warning in report["warnings"]), report["warnings"]


def test_outputs_are_logged_at_the_image_recording_time(tmp_path):
    """A camera that leaves header stamps at zero: the outputs still sit next to their input in
    the recording's time base (not in 1970), with the stamp kept in each header."""
    bag = write_bag(tmp_path / "in", "mcap", 3, zero_stamps=True, extra_topics=True)
    config = make_config(bag, "--image-topic", "/camera/image_raw", "--camera-info-topic", "/camera/camera_info",
                         "--variant", "dpt_hybrid_kitti", "--output-bag", str(tmp_path / "out"),
                         "--copy-topics", "/tf", "/camera/image_raw")
    evaluate(config, engine=SceneReadingEngine("metric_depth"))
    messages, _ = read_bag(tmp_path / "out")
    recorded = [T0 + k * PERIOD + RECEIVE_DELAY for k in range(3)]
    assert [t for t, _ in messages["/camera/image_raw"]] == recorded
    for topic in ("/dpt/depth/image", "/dpt/depth/camera_info", "/dpt/points", "/dpt/stats"):
        assert [t for t, _ in messages[topic]] == recorded, topic
        assert [bag_io.stamp_to_ns(m.header.stamp) for _, m in messages[topic]] == [0, 0, 0], topic
    assert [t for t, _ in messages["/tf"]] == [T0 + k * PERIOD + 1 for k in range(3)]


# ------------------------------------------------------------------------------------------------
# Report
# ------------------------------------------------------------------------------------------------

def test_error_vs_depth_bins_span_the_ground_truth_of_the_run(tmp_path):
    frames = 4
    bag = write_bag(tmp_path / "in", "sqlite3", frames)
    config = make_config(bag, "--image-topic", "/camera/image_raw", "--gt-depth-topic", "/gt/depth",
                         "--variant", "dpt_hybrid_kitti", "--report-dir", str(tmp_path / "report"))
    report = evaluate(config, engine=SceneReadingEngine("metric_depth", factor=1.1))
    histogram = report["depth_error_histogram"]
    edges = histogram["edges_m"]
    nearest, farthest = 2.0, max(plane_depths(frames - 1))  # 2 m .. 4.75 m
    assert nearest - 0.05 < edges[0] <= nearest < edges[1]
    assert edges[-2] < farthest <= edges[-1] < farthest + 0.3
    assert 10 <= len(edges) - 1 <= 20
    assert sum(histogram["pixels"]) == frames * HEIGHT * WIDTH
    for pixels, error in zip(histogram["pixels"], histogram["mean_abs_rel"]):
        assert (error is None) == (pixels == 0)
        assert error is None or error == pytest.approx(0.1, rel=1e-5)


@pytest.mark.parametrize("with_ground_truth", [False, True])
def test_samples_figure_has_no_empty_space(tmp_path, with_ground_truth):
    import cv2

    bag = write_bag(tmp_path / "in", "mcap", 4)
    gt = ("--gt-depth-topic", "/gt/depth", "--gt-labels-topic", "/gt/labels") if with_ground_truth else ()
    config = make_config(bag, "--image-topic", "/camera/image_raw", *gt, "--variant", "dpt_tiny",
                         "--tasks", "depth", "segmentation", "--report-dir", str(tmp_path / "report"))
    evaluate(config, engine=SceneReadingEngine("relative_inverse_depth", labels=True))
    figure = cv2.imread(str(tmp_path / "report" / "samples.png"))
    background = (figure == 255).all(axis=2)
    empty_columns = background.all(axis=0).mean()
    empty_rows = background.all(axis=1).mean()
    assert empty_columns < 0.12 and empty_rows < 0.12, (empty_columns, empty_rows)


def test_per_bag_sums_combine_into_the_whole_run(tmp_path):
    """report.json's sums are what a fleet report adds up: two runs over parts of a bag combine
    into exactly the run over the whole, weighted by frames or by valid pixels."""
    from dpt_ros.evaluation.metrics import DepthMetricSums

    bag = write_bag(tmp_path / "in", "sqlite3", 5)
    # Up to 4.3 m: frames 0-1 have both planes in range, frames 2-4 only the top one.
    args = ("--image-topic", "/camera/image_raw", "--gt-depth-topic", "/gt/depth", "--variant",
            "dpt_hybrid_kitti", "--max-depth", "4.3")
    engine = SceneReadingEngine("metric_depth", factor=0.9)  # 10 % too near: never clipped to --max-depth
    whole = evaluate(make_config(bag, *args), engine=engine)
    first = evaluate(make_config(bag, *args, "--max-frames", "2"), engine=engine)
    rest = evaluate(make_config(bag, *args, "--start", "0.15"), engine=engine)
    assert (first["counts"]["processed"], rest["counts"]["processed"]) == (2, 3)

    combined = DepthMetricSums.from_json(first["sums"]["depth"])
    combined.merge(DepthMetricSums.from_json(rest["sums"]["depth"]))
    expected = DepthMetricSums.from_json(whole["sums"]["depth"])
    assert (combined.frames, combined.pixels) == (expected.frames, expected.pixels) == (5, 2 * 3072 + 3 * 1536)
    for mean in ("frame_mean", "pixel_mean"):
        got, want = getattr(combined, mean)().as_dict(), getattr(expected, mean)().as_dict()
        assert got == pytest.approx(want, rel=1e-12), mean
    # Hand-computed: every pixel is 10 % too near, so RMSE = 0.1 * sqrt(mean of gt^2) over the
    # pixels (pixel-weighted) or the mean of each frame's value (frame-weighted).
    depths = [np.array([plane_depths(k)[0]] * 1536 + ([plane_depths(k)[1]] * 1536 if k < 2 else []))
              for k in range(5)]
    assert combined.pixel_mean().rmse == pytest.approx(0.1 * math.sqrt(np.mean(np.concatenate(depths) ** 2)))
    assert combined.frame_mean().rmse == pytest.approx(np.mean([0.1 * math.sqrt(np.mean(d ** 2)) for d in depths]))
    assert whole["depth"] == pytest.approx(expected.frame_mean().as_dict(), rel=1e-12)


# ------------------------------------------------------------------------------------------------
# The run from Python, without the command line
# ------------------------------------------------------------------------------------------------

def test_evaluate_takes_a_config_built_in_python(tmp_path):
    from dpt_ros.evaluation.config import EvaluationConfig, EvaluationError
    from dpt_ros.model_config import ModelConfig
    from dpt_ros.pipeline import PipelineSettings

    bag = write_bag(tmp_path / "in", "sqlite3", 2)
    config = EvaluationConfig(input_bag=str(bag), image_topic="/camera/image_raw", gt_depth_topic="/gt/depth",
                              model=ModelConfig(variant="dpt_tiny"),
                              pipeline=PipelineSettings(depth_scale=0.01, depth_shift=0.05),
                              report_dir=str(tmp_path / "report"))
    report = evaluate(config, engine=SceneReadingEngine("relative_inverse_depth"))
    assert report["outcome"] == "complete" and report["alignment"] == "none"
    assert report["depth"]["abs_rel"] == pytest.approx(0.0, abs=1e-5)
    on_disk = json.loads((tmp_path / "report" / "report.json").read_text())
    assert on_disk["configuration"]["pipeline"]["depth_scale"] == 0.01
    assert on_disk["configuration"]["model"]["variant"] == "dpt_tiny"
    # Checked before any work, as the command line is.
    with pytest.raises(EvaluationError, match="--depth-max-range must be >= 0.0"):
        evaluate(EvaluationConfig(input_bag=bag, image_topic="/camera/image_raw",
                                  pipeline=PipelineSettings(depth_max_range=-1.0)), engine=SceneReadingEngine())
    with pytest.raises(EvaluationError, match="relative inverse depth"):
        evaluate(EvaluationConfig(input_bag=bag, image_topic="/camera/image_raw", gt_depth_topic="/gt/depth",
                                  model=ModelConfig(variant="dpt_tiny"), alignment="none"),
                 engine=SceneReadingEngine("relative_inverse_depth"))
