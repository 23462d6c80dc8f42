"""evaluate_bag's command line: refusals before any work, exit codes, flags shared with dpt_node,
and the executable where a ROS user looks for it (PATH after env.sh, `ros2 run`).

Whether a check runs before the model loads is shown by giving weights that do not exist: had the
model been loaded first, the error would be about the weights.
"""
import json
import os
import subprocess
from pathlib import Path

import pytest

from dpt_ros.evaluation.cli import build_parser, main
from dpt_ros.image_codec import COLOR_ENCODINGS
from dpt_ros.node_parameters import PARAMETERS_BY_NAME
from support.bags import IMAGE_TOPIC, read_bag, write_bag, write_tiny_checkpoints

REPO = Path(__file__).resolve().parent.parent
MISSING_WEIGHTS = "/nonexistent/dpt_tiny.pt"
TINY = ("--variant", "dpt_tiny", "--device", "cpu", "--no-progress")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return write_tiny_checkpoints(tmp_path_factory.mktemp("weights"))


def run_cli(capsys, *args) -> tuple[int, list[str]]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err.strip().splitlines()


def refused_before_the_model(capsys, *args) -> str:
    """Run with weights that do not exist; the run must stop with exit 2 and one line that is
    not about the weights."""
    code, err = run_cli(capsys, *TINY, "--weights", MISSING_WEIGHTS, *args)
    assert code == 2, err
    assert len(err) == 1, err
    assert err[0].startswith("evaluate_bag: error: ") and MISSING_WEIGHTS not in err[0], err
    return err[0]


# ------------------------------------------------------------------------------------------------
# Unreadable input, unwritable outputs: exit 2, one line, before the model loads
# ------------------------------------------------------------------------------------------------

def _corrupt_db3(bag: Path) -> Path:
    db3 = next(bag.glob("*.db3"))
    db3.write_bytes(b"\x13" * db3.stat().st_size)
    return bag


def _truncated_mcap(bag: Path) -> Path:
    mcap = next(bag.glob("*.mcap"))
    data = mcap.read_bytes()
    mcap.write_bytes(data[: len(data) * 2 // 3])  # a recorder killed mid-write: no summary, no footer
    return mcap


@pytest.mark.parametrize("storage,damage", [("sqlite3", _corrupt_db3), ("mcap", _truncated_mcap)])
def test_unreadable_bag_is_refused_before_the_model_loads(tmp_path, capsys, storage, damage):
    bag = damage(write_bag(tmp_path / "in", storage, 3))
    line = refused_before_the_model(capsys, bag, "--image-topic", IMAGE_TOPIC)
    assert f"cannot read input bag {bag}" in line
    assert storage in line


def test_bag_with_unreadable_metadata_is_refused_before_the_model_loads(tmp_path, capsys):
    bag = write_bag(tmp_path / "in", "mcap", 2)
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: [unclosed\n")
    line = refused_before_the_model(capsys, bag, "--image-topic", IMAGE_TOPIC)
    assert f"cannot read input bag {bag}: its metadata.yaml is unreadable" in line


@pytest.mark.parametrize("where", ["under_a_file", "existing"])
def test_unwritable_output_bag_is_refused_before_the_model_loads(tmp_path, capsys, where):
    bag = write_bag(tmp_path / "in", "mcap", 2)
    (tmp_path / "a_file").write_text("x")
    output = {"under_a_file": tmp_path / "a_file" / "out", "existing": tmp_path / "in"}[where]
    line = refused_before_the_model(capsys, bag, "--image-topic", IMAGE_TOPIC, "--output-bag", output)
    assert str(output) in line
    assert ("exists already" if where == "existing" else "not a directory") in line


@pytest.mark.parametrize("where", ["a_file", "under_a_file"])
def test_unwritable_report_dir_is_refused_before_any_work(tmp_path, capsys, where):
    bag = write_bag(tmp_path / "in", "mcap", 2)
    (tmp_path / "a_file").write_text("x")
    report_dir = {"a_file": tmp_path / "a_file", "under_a_file": tmp_path / "a_file" / "report"}[where]
    line = refused_before_the_model(capsys, bag, "--image-topic", IMAGE_TOPIC, "--report-dir", report_dir,
                                    "--output-bag", tmp_path / "out")
    assert f"cannot write the report to {report_dir}" in line
    assert not (tmp_path / "out").exists()  # nothing was started


def test_unsupported_encoding_is_refused_on_the_first_frame(tmp_path, capsys):
    # A depth image given as the image topic: a typical mix-up.
    bag = write_bag(tmp_path / "in", "sqlite3", 3, encoding="32FC1")
    line = refused_before_the_model(capsys, bag, "--image-topic", IMAGE_TOPIC)
    assert "'32FC1'" in line and IMAGE_TOPIC in line
    assert "supported: " + ", ".join(COLOR_ENCODINGS) in line


# ------------------------------------------------------------------------------------------------
# A run that processed no frame
# ------------------------------------------------------------------------------------------------

def test_run_without_a_processed_frame_exits_3_naming_each_reason_once(tmp_path, capsys, checkpoints):
    bag = write_bag(tmp_path / "in", "mcap", 5, corrupt={0, 1, 2}, bad_step={3, 4})
    code, err = run_cli(capsys, bag, "--image-topic", IMAGE_TOPIC, *TINY, "--weights", checkpoints[0],
                        "--report-dir", tmp_path / "report")
    assert code == 3, err
    text = "\n".join(err)
    assert "no frame was processed" in text
    truncated = [line for line in err if "shorter than step*height" in line]
    short_step = [line for line in err if "is smaller than width*channels*bytes" in line]
    assert len(truncated) == 1 and "3 frames" in truncated[0], err
    assert len(short_step) == 1 and "2 frames" in short_step[0], err
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["counts"]["processed"] == 0 and report["counts"]["undecodable"] == 5
    assert sorted(report["undecodable_reasons"].values()) == [2, 3]


def test_selection_without_frames_exits_3(tmp_path, capsys, checkpoints):
    bag = write_bag(tmp_path / "in", "mcap", 3)
    code, err = run_cli(capsys, bag, "--image-topic", IMAGE_TOPIC, *TINY, "--weights", checkpoints[0],
                        "--start", "60")
    assert code == 3, err
    assert any(f"no message on {IMAGE_TOPIC}" in line and "--start 60" in line for line in err), err


# ------------------------------------------------------------------------------------------------
# Flags shared with dpt_node
# ------------------------------------------------------------------------------------------------

# flag -> dpt_node parameter of the same meaning
MIRRORED = {"--variant": "model.variant", "--weights": "model.weights",
            "--segmentation-variant": "model.segmentation_variant",
            "--segmentation-weights": "model.segmentation_weights", "--device": "device",
            "--precision": "precision", "--compile": "compile", "--input-size": "input_size",
            "--depth-scale": "depth.scale", "--depth-shift": "depth.shift", "--depth-max-range": "depth.max_range"}


def test_mirrored_flags_have_the_node_defaults():
    parser = build_parser()
    defaults = vars(parser.parse_args(["bag", "--image-topic", "/x"]))
    for flag, parameter in MIRRORED.items():
        assert defaults[flag[2:].replace("-", "_")] == PARAMETERS_BY_NAME[parameter].default, flag


@pytest.mark.parametrize("flag,value,expected", [
    ("--input-size", "33", "--input-size must be a multiple of 32"),
    ("--input-size", "70", "--input-size must be a multiple of 32 for dpt_tiny's depth model"),
    ("--depth-scale", "-1", "--depth-scale must be >= 0.0"),
    ("--depth-max-range", "-2", "--depth-max-range must be >= 0.0"),
    ("--segmentation-variant", "dpt_nope", "--segmentation-variant: unknown variant 'dpt_nope'"),
    ("--device", "gpu", "--device must be auto, cpu, cuda or cuda:N"),
])
def test_mirrored_flags_are_validated_like_the_node_parameters(tmp_path, capsys, flag, value, expected):
    bag = write_bag(tmp_path / "in", "sqlite3", 1)
    line = refused_before_the_model(capsys, bag, "--image-topic", IMAGE_TOPIC, flag, value)
    assert expected in line


def test_metric_variant_evaluates_labels_with_the_segmentation_model_of_its_backbone(tmp_path, capsys, monkeypatch):
    """--variant dpt_hybrid_kitti --gt-labels-topic: the engine is built as dpt_node builds it,
    with dpt_hybrid's segmentation model (a stand-in engine replaces the real, large networks)."""
    from dpt_ros.inference import InferenceEngine
    from support.bags import SceneReadingEngine

    built = []

    def from_variant(variant, **kwargs):
        built.append(dict(kwargs, variant=variant))
        return SceneReadingEngine("metric_depth", labels=True)

    monkeypatch.setattr(InferenceEngine, "from_variant", staticmethod(from_variant))
    bag = write_bag(tmp_path / "in", "mcap", 2)
    code, err = run_cli(capsys, bag, "--image-topic", IMAGE_TOPIC, "--gt-labels-topic", "/gt/labels",
                        "--variant", "dpt_hybrid_kitti", "--weights", "", "--segmentation-weights", "",
                        "--allow-random-weights", "--no-progress", "--report-dir", tmp_path / "report")
    assert code == 0, err
    assert len(built) == 1
    assert built[0]["variant"] == "dpt_hybrid_kitti" and built[0]["segmentation_variant"] == "dpt_hybrid"
    assert built[0]["tasks"] == ("depth", "segmentation")
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["counts"]["labels_evaluated"] == 2


# ------------------------------------------------------------------------------------------------
# The executable
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["evaluate_bag", "evaluate_bags"])
def test_evaluate_bag_is_on_path_after_sourcing_env(tmp_path, name):
    result = subprocess.run(
        ["bash", "-c", f"source scripts/env.sh && command -v {name} && {name} --help"],
        cwd=REPO, capture_output=True, text=True, timeout=120, env=dict(os.environ, PATH="/usr/bin:/bin"))
    assert result.returncode == 0, result.stderr
    found, *usage = result.stdout.splitlines()
    assert Path(found) == REPO / "install" / "dpt_ros" / "lib" / "dpt_ros" / name
    assert f"usage: {name} " in "\n".join(usage)


@pytest.mark.ros
def test_the_executable_ros2_run_starts_evaluates_a_bag(tmp_path, checkpoints):
    """`ros2 run dpt_ros evaluate_bag` runs <package prefix>/lib/dpt_ros/evaluate_bag (ros2cli
    itself is not installable here): that file, run as a process, evaluates a bag."""
    from ament_index_python.packages import get_package_prefix

    executable = Path(get_package_prefix("dpt_ros")) / "lib" / "dpt_ros" / "evaluate_bag"
    bag = write_bag(tmp_path / "in", "mcap", 2)
    result = subprocess.run(
        [str(executable), str(bag), "--image-topic", IMAGE_TOPIC, *TINY, "--weights", str(checkpoints[0]),
         "--output-bag", str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "2 frames processed" in result.stderr
    messages, _ = read_bag(tmp_path / "out")
    assert len(messages["/dpt/depth/relative"]) == 2


# ------------------------------------------------------------------------------------------------
# Online alignment (--align-topic, --simulate-sparse): refusals before the model loads, a real run
# ------------------------------------------------------------------------------------------------

def _bag_with_sparse_sensors(tmp_path) -> Path:
    """The test bag plus a registered depth image on /rgbd/depth and a lidar cloud on /lidar/points."""
    import numpy as np

    from support.bags import cloud_msg, depth_image_msg, scene

    def sensors(k, stamp):
        depth = scene(k)[1]
        return [("/rgbd/depth", depth_image_msg(depth, stamp)),
                ("/lidar/points", cloud_msg(np.array([[depth[0, 0], 0.0, 0.0]]), stamp))]

    return write_bag(tmp_path / "in", "mcap", 2, extra_messages=sensors)


@pytest.mark.parametrize("args,expected", [
    (("--align-topic", "/nope"), "topic '/nope' is not in bag"),
    (("--align-topic", "/camera/camera_info"),
     "'/camera/camera_info' has type sensor_msgs/msg/CameraInfo, expected one of sensor_msgs/msg/Image, "
     "sensor_msgs/msg/PointCloud2"),
    (("--align-topic", IMAGE_TOPIC), f"{IMAGE_TOPIC}: the first message has encoding 'rgb8', not a depth image"),
    (("--align-topic", "/rgbd/depth", "--align-camera-info-topic", "/rgbd/depth"),
     "'/rgbd/depth' has type sensor_msgs/msg/Image, expected one of sensor_msgs/msg/CameraInfo"),
    (("--simulate-sparse", "points:100"),
     "--simulate-sparse samples the ground-truth depth: it needs --gt-depth-topic"),
    (("--gt-depth-topic", "/gt/depth", "--simulate-sparse", "grid:3"),
     "--simulate-sparse: 'grid:3': pattern must be one of points, lidar"),
    (("--gt-depth-topic", "/gt/depth", "--simulate-sparse", "points:9", "--align-topic", "/rgbd/depth"),
     "--align-topic and --simulate-sparse are two sources of sparse depth: give one"),
    (("--gt-depth-topic", "/gt/depth", "--simulate-sparse", "points:9", "--align-extrinsic", *"0 0 1 0 0 0 1".split()),
     "--align-extrinsic describe a sensor topic (--align-topic)"),
    (("--align-mode", "scale_only", "--align-timeout", "2"),
     "--align-mode, --align-timeout configure online alignment: give --align-topic or --simulate-sparse too"),
    (("--align-topic", "/rgbd/depth", "--tasks", "segmentation"), "online alignment (--align-topic, --simulate-sparse) "
     "needs the depth task"),
    (("--align-topic", "/rgbd/depth", "--align-timeout", "-1"), "--align-timeout must be >= 0.0"),
    (("--align-topic", "/rgbd/depth", "--align-min-inliers", "5000"),
     "--align-min-inliers (5000) exceeds --align-max-samples (4096)"),
    (("--align-topic", "/lidar/points", "--camera-info-topic", "/camera/camera_info", "--align-extrinsic",
      *"0 0 0 0 0 0 0".split()), "--align-extrinsic: quaternion (x y z w) = (0.0, 0.0, 0.0, 0.0) is not a rotation"),
    (("--align-topic", "/lidar/points"), "/lidar/points is a PointCloud2: projecting it into the image needs "
     "--camera-info-topic"),
    (("--align-topic", "/rgbd/depth", "--align-extrinsic", *"0.1 0 0 0 0 0 1".split()),
     "--align-extrinsic poses a reprojected depth image or a cloud; /rgbd/depth is taken as registered"),
    (("--align-topic", "/rgbd/depth", "--align-camera-info-topic", "/camera/camera_info"),
     "reprojecting /rgbd/depth through --align-camera-info-topic needs the image's --camera-info-topic"),
])
def test_unusable_online_alignment_is_refused_before_the_model_loads(tmp_path, capsys, args, expected):
    bag = _bag_with_sparse_sensors(tmp_path)
    line = refused_before_the_model(capsys, bag, "--image-topic", IMAGE_TOPIC, *args)
    assert expected in line


def test_align_flags_are_the_node_alignment_parameters():
    """Each --align-* flag is a dpt_node alignment.* parameter: its description, default unset (the
    node's default then applies), choices or a number like the parameter."""
    from dpt_ros.evaluation.config import ALIGNMENT_PARAMETER_OF_FLAG

    assert set(ALIGNMENT_PARAMETER_OF_FLAG.values()) == {
        name for name in PARAMETERS_BY_NAME if name.startswith("alignment.")} - {
        "alignment.source", "alignment.registered", "alignment.use_tf"}
    actions = {action.option_strings[0]: action for action in build_parser()._actions if action.option_strings}
    for flag, parameter in ALIGNMENT_PARAMETER_OF_FLAG.items():
        spec, action = PARAMETERS_BY_NAME[parameter], actions[flag]
        assert action.default is None, flag
        assert spec.description in action.help.replace("%%", "%") and parameter in action.help, flag
        assert action.choices == spec.choices, flag
    assert actions["--align-mode"].choices == ("full", "scale_only")
    assert actions["--align-extrinsic"].nargs == 7


def test_cli_simulated_lidar_with_the_tiny_model_reports_three_rows(tmp_path, capsys, checkpoints):
    """The command line end to end with the real tiny network: the report has the three rows, and every
    frame with ground truth is either scored online or counted as not aligned."""
    frames = 3
    bag = write_bag(tmp_path / "in", "sqlite3", frames)
    code, err = run_cli(capsys, bag, "--image-topic", IMAGE_TOPIC, *TINY, "--weights", checkpoints[0],
                        "--gt-depth-topic", "/gt/depth", "--camera-info-topic", "/camera/camera_info",
                        "--simulate-sparse", "lidar:12,noise=0.01", "--align-timeout", "0",
                        "--output-bag", tmp_path / "out", "--report-dir", tmp_path / "report")
    assert code == 0, err
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    rows = report["depth_rows"]
    assert list(rows) == ["online", "oracle", "none"]
    assert rows["none"] == {"title": "no alignment (the model's own metric depth)", "metric": False,
                            "note": "not metric: dpt_tiny predicts relative inverse depth, and no --depth-scale "
                                    "gives it metres"}
    online = rows["online"]
    assert online["frames"] + sum(online["unscored_frames"].values()) == frames
    assert report["online_alignment"]["frames"] == frames
    assert report["online_alignment"]["parameters"]["alignment.timeout"] == 0.0
    assert report["configuration"]["simulate_sparse"] == "lidar:12,noise=0.01"
    messages, _ = read_bag(tmp_path / "out")
    assert len(messages["/dpt/depth/alignment"]) == frames
    assert len(messages.get("/dpt/depth/image", [])) == online["frames"]
    assert "## Depth with online alignment" in (tmp_path / "report" / "report.md").read_text()


# ------------------------------------------------------------------------------------------------
# Depth Anything V2 (issue 14)
# ------------------------------------------------------------------------------------------------

def test_depth_anything_without_a_segmentation_model_is_refused_before_the_model_loads(tmp_path, capsys):
    bag = write_bag(tmp_path / "in", "sqlite3", 1)
    code, err = run_cli(capsys, bag, "--image-topic", IMAGE_TOPIC, "--variant", "depth_anything_v2_vits",
                        "--device", "cpu", "--no-progress", "--weights", MISSING_WEIGHTS,
                        "--tasks", "depth", "segmentation")
    assert code == 2, err
    assert err == ["evaluate_bag: error: no segmentation model shares depth_anything_v2_vits's backbone: give one "
                   "with --segmentation-variant (e.g. dpt_hybrid), or --tasks depth"], err


def test_online_alignment_of_a_metric_depth_anything_variant(tmp_path, capsys):
    """evaluate_bag --variant depth_anything_v2_metric_hypersim_vits --simulate-sparse: the real ViT-S
    network (random weights, a small lower-bound size) is scored as it is (metres from its own
    head) and aligned online, as dpt_node's alignment.* would align it."""
    frames = 3
    bag = write_bag(tmp_path / "in", "sqlite3", frames)
    code, err = run_cli(capsys, bag, "--image-topic", IMAGE_TOPIC,
                        "--variant", "depth_anything_v2_metric_hypersim_vits", "--weights", "", "--allow-random-weights", "--device", "cpu", "--input-size", "70",
                        "--no-progress", "--gt-depth-topic", "/gt/depth", "--camera-info-topic", "/camera/camera_info",
                        "--simulate-sparse", "lidar:12,noise=0.01", "--align-timeout", "0",
                        "--output-bag", tmp_path / "out", "--report-dir", tmp_path / "report")
    assert code == 0, err
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["configuration"]["preset"] == "hypersim" and report["configuration"]["max_depth"] == 20.0
    rows = report["depth_rows"]
    assert list(rows) == ["online", "oracle", "none"]
    assert rows["none"]["metric"] is True and rows["none"]["frames"] == frames
    online = rows["online"]
    assert online["frames"] + sum(online["unscored_frames"].values()) == frames
    messages, _ = read_bag(tmp_path / "out")
    assert len(messages["/dpt/depth/alignment"]) == frames
