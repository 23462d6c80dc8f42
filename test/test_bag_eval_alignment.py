"""evaluate_bag with online alignment (--align-topic, --simulate-sparse) on bags generated here.

The engine is support.bags.SceneReadingEngine, whose prediction is a known function of the scene's
ground truth, so the rows of the report can be checked by hand; the scale and shift of every
frame are checked against the reference dpt_node runs: dpt_ros.alignment.OnlineAligner with the
settings of the node's alignment.* defaults, fed the samples dpt_ros.sparse_depth makes of the
same messages, frame after frame.
"""
import math

import numpy as np
import pytest

from dpt_ros.alignment import AlignmentState, OnlineAligner
from dpt_ros.alignment_parameters import ALIGNMENT_PARAMETERS, aligner_settings, sample_settings
from dpt_ros.evaluation import bag_io
from dpt_ros.evaluation.cli import build_parser, config_from_args
from dpt_ros.evaluation.metrics import DepthRowSums
from dpt_ros.evaluation.run import evaluate
from dpt_ros.evaluation.simulated_sparse import SparseSimulation
from dpt_ros.pipeline import PipelineSettings, model_inverse_depth, to_metric_depth
from dpt_ros.sparse_depth import samples_from_message
from support.bags import (
    CX,
    CY,
    FX,
    FY,
    HEIGHT,
    IMAGE_TOPIC,
    PERIOD,
    RECEIVE_DELAY,
    T0,
    WIDTH,
    SceneReadingEngine,
    camera_info_msg,
    cloud_msg,
    depth_image_msg,
    read_bag,
    scene,
    write_bag,
)
from support.sparse_messages import LIDAR_AXES, LIDAR_IN_CAMERA, LIDAR_ORIGIN

TRUE_SCALE, TRUE_SHIFT = 0.01, 0.05  # SceneReadingEngine's relative output -> inverse metres
SENSOR_DELAY = 10_000_000  # the sparse sensor's stamps trail the camera's by 10 ms
GT_ARGS = ("--image-topic", IMAGE_TOPIC, "--gt-depth-topic", "/gt/depth", "--camera-info-topic", "/camera/camera_info")


def make_config(bag, *extra):
    return config_from_args(build_parser().parse_args([str(bag), "--no-progress", *extra]))


def node_values(**overrides) -> dict:
    """dpt_node's alignment.* parameter values: its defaults, with ``overrides`` (name -> value)."""
    values = {spec.name: spec.default for spec in ALIGNMENT_PARAMETERS}
    values.update(overrides)
    return values


def without_topic_parameters(values: dict) -> dict:
    """The values that have an --align-* flag: alignment.source and .registered follow from the
    topics given, TF is not in a bag."""
    return {name: value for name, value in values.items()
            if name not in ("alignment.source", "alignment.registered", "alignment.use_tf")}


def predictions(engine, frames: int) -> list[np.ndarray]:
    """The inverse depth each frame's alignment sees (pipeline.model_inverse_depth of the engine's)."""
    return [model_inverse_depth(engine.infer([scene(k)[0]])[0].depth, engine.depth_output_kind) for k in range(frames)]


def simulated_samples(simulation: SparseSimulation, values: dict, frames: int) -> list:
    """The samples --simulate-sparse gives each frame of the test scene (with the alignment's range)."""
    return [simulation.samples(scene(k)[1], (HEIGHT, WIDTH), k, values["alignment.min_depth"]) for k in range(frames)]


def reference_estimates(values: dict, frame_samples, frame_predictions) -> list:
    """What dpt_node's aligner makes of the frames: update with a frame's samples, status without."""
    aligner = OnlineAligner(aligner_settings(values))
    estimates = []
    for k, (samples, prediction) in enumerate(zip(frame_samples, frame_predictions)):
        stamp = (T0 + k * PERIOD) * 1e-9
        estimates.append(aligner.status(stamp) if samples is None else aligner.update(prediction, samples, stamp))
    return estimates


def assert_same_estimates(report, estimates):
    for frame, estimate in zip(report["frames"], estimates, strict=True):
        online = frame["online_alignment"]
        assert (online["state"], online["scale"], online["shift"], online["inlier_count"]) == \
            (estimate.state.name, estimate.scale, estimate.shift, estimate.inliers), frame["index"]


def assert_output_bag_has_the_alignment(path, estimates, kind="relative_inverse_depth"):
    """depth/alignment for every frame at its image's recording time, and depth/image = the aligned
    inverse depth of depth/relative where the alignment is usable (none where it is not)."""
    messages, topics = read_bag(path)
    assert topics["/dpt/depth/alignment"] == "dpt_ros/msg/DepthAlignment"
    alignments = messages["/dpt/depth/alignment"]
    assert [t for t, _ in alignments] == [T0 + k * PERIOD + RECEIVE_DELAY for k in range(len(estimates))]
    for k, ((_, message), estimate) in enumerate(zip(alignments, estimates)):
        assert (message.state, message.scale, message.shift, message.sample_count) == \
            (int(estimate.state), estimate.scale, estimate.shift, estimate.samples)
        assert bag_io.stamp_to_ns(message.header.stamp) == T0 + k * PERIOD
    usable = [k for k, estimate in enumerate(estimates) if estimate.usable]
    depth_images = messages.get("/dpt/depth/image", [])
    assert [t for t, _ in depth_images] == [T0 + k * PERIOD + RECEIVE_DELAY for k in usable]
    relative = dict(messages.get("/dpt/depth/relative", []))
    for time_ns, image in depth_images:
        estimate = estimates[(time_ns - T0 - RECEIVE_DELAY) // PERIOD]
        got = image.data.view("<f4").reshape(HEIGHT, WIDTH)
        if kind == "relative_inverse_depth":
            raw = relative[time_ns].data.view("<f4").reshape(HEIGHT, WIDTH)
            expected = to_metric_depth(raw, kind, PipelineSettings().aligned((estimate.scale, estimate.shift)))
            assert got.tobytes() == expected.tobytes()
    return messages


# ------------------------------------------------------------------------------------------------
# --simulate-sparse
# ------------------------------------------------------------------------------------------------

def test_simulated_points_align_an_exact_affine_model_like_the_oracle(tmp_path):
    """The prediction is an exact affine map of the ground truth's inverse depth: online alignment
    from 200 simulated points and the per-frame oracle both score AbsRel ~0; a relative model
    without --depth-scale has no row of its own numbers ("not metric")."""
    frames = 4
    bag = write_bag(tmp_path / "in", "mcap", frames)
    config = make_config(bag, *GT_ARGS, "--variant", "dpt_tiny", "--simulate-sparse", "points:200",
                         "--output-bag", str(tmp_path / "out"), "--report-dir", str(tmp_path / "report"))
    engine = SceneReadingEngine("relative_inverse_depth")
    report = evaluate(config, engine=engine)

    rows = report["depth_rows"]
    assert list(rows) == ["online", "oracle", "none"]
    for row in ("online", "oracle"):
        assert rows[row]["metric"] is True and rows[row]["frames"] == frames and rows[row]["unscored_frames"] == {}
        assert rows[row]["depth"]["abs_rel"] == pytest.approx(0.0, abs=1e-5), row
        assert rows[row]["depth"]["delta1"] == 1.0
        assert rows[row]["depth_pixel_weighted"]["valid_pixels"] == frames * HEIGHT * WIDTH
    assert rows["none"]["metric"] is False and rows["none"]["note"].startswith("not metric: dpt_tiny")
    assert "depth" not in rows["none"]
    # The existing report keeps its meaning: relative depth scored after the oracle alignment.
    assert report["alignment"] == "scale_shift_inverse_depth"
    assert report["depth"] == rows["oracle"]["depth"]

    # Scale and shift of every frame are those of dpt_node's aligner on the same samples.
    simulation = SparseSimulation.parse("points:200")
    values = node_values()
    samples = simulated_samples(simulation, values, frames)
    estimates = reference_estimates(values, samples, predictions(engine, frames))
    assert_same_estimates(report, estimates)
    assert [e.state for e in estimates] == [AlignmentState.CONVERGING] * 3 + [AlignmentState.TRACKING]
    for estimate in estimates:
        assert (estimate.scale, estimate.shift) == pytest.approx((TRUE_SCALE, TRUE_SHIFT), rel=1e-5)
        assert estimate.samples == 200
    online = report["online_alignment"]
    assert online["source"] == "simulated" and online["simulation"] == "points:200,noise=0,outliers=0,seed=0"
    assert (online["frames"], online["frames_usable"]) == (frames, frames)
    assert online["states"] == {"CONVERGING": 3, "TRACKING": 1}
    assert online["parameters"] == without_topic_parameters(values)

    # The output bag: depth/alignment per frame, depth/image in metres from the online alignment.
    messages = assert_output_bag_has_the_alignment(tmp_path / "out", estimates)
    for k, (_, image) in enumerate(messages["/dpt/depth/image"]):
        np.testing.assert_allclose(image.data.view("<f4").reshape(HEIGHT, WIDTH), scene(k)[1], rtol=1e-5)
    assert len(messages["/dpt/points"]) == frames  # the cloud follows the metric depth

    # Mergeable sums of each row; none for the row without numbers.
    sums = report["sums"]["depth_rows"]
    assert sums["none"] is None
    online_sums = DepthRowSums.from_json(sums["online"])
    assert (online_sums.depth.frames, online_sums.depth.pixels) == (frames, frames * HEIGHT * WIDTH)
    assert online_sums.depth.frame_mean().as_dict() == rows["online"]["depth"]

    markdown = (tmp_path / "report" / "report.md").read_text()
    assert "## Depth with online alignment" in markdown
    assert "simulated from the ground truth: `points:200,noise=0,outliers=0,seed=0`" in markdown
    assert "| online-aligned (what dpt_node publishes) | 0.0000 |" in markdown
    assert "| no alignment (the model's own metric depth) | not metric | – |" in markdown
    assert "No alignment — not metric: dpt_tiny predicts relative inverse depth" in markdown
    assert (tmp_path / "report" / "online_alignment_per_frame.png").stat().st_size > 0


def test_noisy_lidar_simulation_corrects_a_metric_model_close_to_the_oracle(tmp_path):
    """A metric model 25 % too far with 5 % noise per pixel, corrected by scale_only alignment to a
    simulated 6-line lidar with 2 % noise and 20 % outliers: online-aligned AbsRel within 0.005 of
    the oracle's (both about the noise's mean |error|, 0.05 * sqrt(2 / pi) = 0.04), while the
    model's own depth is 25 % off.  Frames go through the model two at a time, and through the
    aligner one after the other."""
    frames = 5
    bag = write_bag(tmp_path / "in", "sqlite3", frames)
    spec = "lidar:6,noise=0.02,outliers=0.2,seed=3"
    config = make_config(bag, *GT_ARGS, "--variant", "dpt_hybrid_kitti", "--simulate-sparse", spec,
                         "--align-mode", "scale_only", "--batch-size", "2")
    engine = SceneReadingEngine("metric_depth", factor=1.25, noise=0.05)
    report = evaluate(config, engine=engine)
    assert engine.calls == [2, 2, 1]

    rows = report["depth_rows"]
    expected_noise = 0.05 * math.sqrt(2 / math.pi)
    assert rows["none"]["metric"] is True and rows["none"]["frames"] == frames
    assert rows["none"]["depth"]["abs_rel"] == pytest.approx(0.25, abs=0.01)
    assert rows["oracle"]["depth"]["abs_rel"] == pytest.approx(expected_noise, rel=0.1)
    assert rows["online"]["frames"] == frames
    assert rows["online"]["depth"]["abs_rel"] == pytest.approx(rows["oracle"]["depth"]["abs_rel"], abs=0.005)
    # The model's own metric depth is what --alignment auto scores for a metric variant.
    assert report["alignment"] == "none" and report["depth"] == rows["none"]["depth"]

    simulation = SparseSimulation.parse(spec)
    values = node_values(**{"alignment.mode": "scale_only"})
    samples = simulated_samples(simulation, values, frames)
    assert len(samples[0]) == 6 * WIDTH
    estimates = reference_estimates(values, samples, predictions(engine, frames))
    assert_same_estimates(report, estimates)
    for estimate in estimates:
        assert estimate.mode == "scale_only" and estimate.shift == 0.0
        assert estimate.scale == pytest.approx(1.25, rel=0.01)  # depth = model depth / scale


def test_frames_without_ground_truth_have_no_simulated_samples_and_are_counted(tmp_path):
    """Ground truth 30 ms after each image and --stamp-tolerance 0.02: no frame has ground truth,
    so none has samples: every estimate is NONE, and nothing is scored in any row."""
    bag = write_bag(tmp_path / "in", "sqlite3", 3, gt_offset_ns=30_000_000)
    config = make_config(bag, *GT_ARGS, "--variant", "dpt_tiny", "--simulate-sparse", "points:100",
                         "--output-bag", str(tmp_path / "out"))
    report = evaluate(config, engine=SceneReadingEngine("relative_inverse_depth"))
    assert report["counts"]["depth_no_ground_truth"] == 3
    assert report["online_alignment"]["states"] == {"NONE": 3}
    assert all("ground-truth depth for this frame" in f["online_alignment"]["message"] for f in report["frames"])
    assert report["depth_rows"]["online"]["frames"] == 0
    messages, topics = read_bag(tmp_path / "out")
    assert len(messages["/dpt/depth/alignment"]) == 3 and "/dpt/depth/image" not in topics


def test_row_sums_of_parts_of_a_bag_merge_into_the_whole(tmp_path):
    """sums.depth_rows adds up across runs like sums.depth: the rows of two runs over parts of a bag
    merge into the whole run's, frames not scored (by reason) included.  Up to 4.3 m, frames 2-4
    have only their top plane in range, where no oracle scale and shift can be fitted to a constant
    prediction.  (The online row's values depend on the frames before, so only its counts add up.)"""
    bag = write_bag(tmp_path / "in", "sqlite3", 5)
    args = (*GT_ARGS, "--variant", "dpt_hybrid_kitti", "--simulate-sparse", "points:300,noise=0.01",
            "--max-depth", "4.3")
    engine = SceneReadingEngine("metric_depth", factor=0.9)
    whole = evaluate(make_config(bag, *args), engine=engine)
    first = evaluate(make_config(bag, *args, "--max-frames", "2"), engine=engine)
    rest = evaluate(make_config(bag, *args, "--start", "0.15"), engine=engine)
    scored = {"oracle": (2, 2 * 3072), "none": (5, 2 * 3072 + 3 * 1536), "online": (5, 2 * 3072 + 3 * 1536)}
    for row, (frames, pixels) in scored.items():
        merged = DepthRowSums.from_json(first["sums"]["depth_rows"][row])
        merged.merge(DepthRowSums.from_json(rest["sums"]["depth_rows"][row]))
        expected = DepthRowSums.from_json(whole["sums"]["depth_rows"][row])
        assert (merged.depth.frames, merged.depth.pixels) == (expected.depth.frames, expected.depth.pixels) == \
            (frames, pixels), row
        assert merged.unscored == expected.unscored, row
        if row != "online":
            assert merged.depth.pixel_mean().as_dict() == pytest.approx(expected.depth.pixel_mean().as_dict(),
                                                                        rel=1e-12), row
    assert whole["depth_rows"]["oracle"]["unscored_frames"] == {
        "oracle alignment failed: scale/shift alignment is undetermined: the prediction is constant": 3}
    assert whole["depth_rows"]["none"]["depth"]["abs_rel"] == pytest.approx(0.1, rel=1e-5)


# ------------------------------------------------------------------------------------------------
# --align-topic: the node's scale and shift from a depth image or a lidar cloud in the bag
# ------------------------------------------------------------------------------------------------

def _registered_depth(k: int, depth: np.ndarray):
    """An RGB-D camera's depth registered to ours: holes (every 4th pixel), 10 % of the pixels
    2.5x too far (glass, multipath); frame 0 has none (the sensor starts late), and a decoy 45 ms
    later that is 40 % off shows the nearest in stamp is used."""
    if k == 0:
        return []
    measured = depth.astype(np.float64).copy()
    flat = measured.reshape(-1)
    flat[::4] = np.nan
    flat[3::10] *= 2.5
    stamp = T0 + k * PERIOD
    return [("/rgbd/depth", depth_image_msg(measured, stamp + SENSOR_DELAY)),
            ("/rgbd/depth", depth_image_msg(measured * 1.4, stamp + 45_000_000))]


# A half-resolution depth camera 2 cm to our right and 10 cm above, same orientation: the rows it
# sees a plane at shift with the plane's depth (2.5 of our rows at 2 m), so the extrinsic matters.
DEPTH_CAMERA = dict(width=WIDTH // 2, height=HEIGHT // 2, fx=FX / 2, fy=FY / 2, cx=15.5, cy=11.5)
DEPTH_CAMERA_IN_CAMERA = (0.02, -0.1, 0.0, 0.0, 0.0, 0.0, 1.0)


def _reprojected_depth(k: int, depth: np.ndarray):
    """The scene seen by DEPTH_CAMERA: the top plane (our rows 0-23 at its depth) where its row's ray
    meets it there, else the bottom plane (our rows 24-47); every 7th pixel 1.8x too far."""
    stamp = T0 + k * PERIOD + SENSOR_DELAY
    ty = DEPTH_CAMERA_IN_CAMERA[1]

    def our_row(i, z):  # the row of ours that the depth camera's row i sees at depth z
        return np.floor(FY * ((i - DEPTH_CAMERA["cy"]) / DEPTH_CAMERA["fy"] + ty / z) + CY + 0.5)

    top, bottom = depth[0, 0], depth[-1, 0]
    rows = np.arange(DEPTH_CAMERA["height"])
    column = np.where(our_row(rows, top) < HEIGHT // 2, top, np.where(our_row(rows, bottom) >= HEIGHT // 2, bottom,
                                                                      np.nan))
    measured = np.repeat(column[:, None], DEPTH_CAMERA["width"], axis=1)
    measured.reshape(-1)[2::7] *= 1.8  # outliers
    return [("/depth_camera/depth", depth_image_msg(measured, stamp, "32FC1", frame_id="depth_optical")),
            ("/depth_camera/camera_info", _with_frame(camera_info_msg(stamp, **DEPTH_CAMERA), "depth_optical"))]


def _with_frame(info, frame_id):
    info.header.frame_id = frame_id
    return info


def _lidar(k: int, depth: np.ndarray):
    """The scene's points as a lidar posed at LIDAR_IN_CAMERA sees them, in its own frame: 10 % of
    them 60 % further along their ray (seen through glass), plus returns behind the camera."""
    v, u = np.mgrid[0:HEIGHT, 0:WIDTH]
    z = depth.astype(np.float64)
    camera = np.stack([(u - CX) * z / FX, (v - CY) * z / FY, z], axis=-1).reshape(-1, 3)
    camera[5::10] *= 1.6
    behind = np.array([[0.0, 0.0, -2.0], [1.0, 0.5, -5.0]]).repeat(50, axis=0)
    lidar = (np.concatenate([camera, behind]) - LIDAR_ORIGIN) @ LIDAR_AXES
    return [("/lidar/points", cloud_msg(lidar, T0 + k * PERIOD + SENSOR_DELAY))]


SOURCES = {
    # name: (sensor messages of frame k, evaluate_bag flags, dpt_node's alignment.source, alignment.registered
    # of a depth image)
    "registered_depth_image": (_registered_depth, ("--align-topic", "/rgbd/depth"), "depth_image", True),
    "reprojected_depth_image": (_reprojected_depth, (
        "--align-topic", "/depth_camera/depth", "--align-camera-info-topic", "/depth_camera/camera_info",
        "--align-extrinsic", *map(str, DEPTH_CAMERA_IN_CAMERA)), "depth_image", False),
    "lidar_points": (_lidar, ("--align-topic", "/lidar/points", "--align-extrinsic", *map(str, LIDAR_IN_CAMERA)),
                     "points", None),
}


@pytest.mark.parametrize("name", list(SOURCES))
def test_align_topic_gives_the_scale_and_shift_of_the_node(tmp_path, name):
    messages_of, flags, source, registered = SOURCES[name]
    frames = 4
    sensor = {k: messages_of(k, scene(k)[1]) for k in range(frames)}
    bag = write_bag(tmp_path / "in", "mcap", frames, extra_messages=lambda k, stamp: sensor[k])
    report_dir = ("--report-dir", str(tmp_path / "report")) if name == "registered_depth_image" else ()
    config = make_config(bag, *GT_ARGS, "--variant", "dpt_tiny", *flags, "--output-bag", str(tmp_path / "out"),
                         *report_dir)
    engine = SceneReadingEngine("relative_inverse_depth")
    report = evaluate(config, engine=engine)

    # The reference: dpt_node's samples of the message nearest in stamp, its aligner.
    extrinsic = next((flags[i + 1:i + 8] for i, flag in enumerate(flags) if flag == "--align-extrinsic"), None)
    values = node_values(**({"alignment.registered": registered} if registered is not None else {}),
                         **({"alignment.extrinsic": [float(x) for x in extrinsic]} if extrinsic else {}))
    frame_samples = []
    for k in range(frames):
        nearest = [msg for _, msg in sensor[k][:1]]  # the first message of a frame is the nearest in stamp
        depth_camera = sensor[k][1][1] if source == "depth_image" and not registered else None
        frame_samples.append(samples_from_message(source, nearest[0], sample_settings(values), (HEIGHT, WIDTH),
                                                  camera=(FX, FY, CX, CY), depth_camera=depth_camera)
                             if nearest else None)
    estimates = reference_estimates(values, frame_samples, predictions(engine, frames))
    assert_same_estimates(report, estimates)
    assert_output_bag_has_the_alignment(tmp_path / "out", estimates)
    usable = [estimate for estimate in estimates if estimate.usable]
    for estimate in usable:  # the outliers are left out: the truth within 1 %
        assert (estimate.scale, estimate.shift) == pytest.approx((TRUE_SCALE, TRUE_SHIFT), rel=0.01)
        assert estimate.inliers < estimate.samples

    online = report["online_alignment"]
    assert (online["source"], online["topic"], online["registered"]) == (source, flags[1], registered)
    rows = report["depth_rows"]
    assert rows["online"]["frames"] == len(usable)
    assert rows["online"]["depth"]["abs_rel"] < 0.005
    if name == "registered_depth_image":  # frame 0 had no sensor message: counted, not dropped
        assert estimates[0].state == AlignmentState.NONE and len(usable) == frames - 1
        assert rows["online"]["unscored_frames"] == {"no usable online alignment (state NONE)": 1}
        assert "nothing on /rgbd/depth within --align-stamp-tolerance (0.05 s)" in \
            report["frames"][0]["online_alignment"]["message"]
        markdown = (tmp_path / "report" / "report.md").read_text()
        assert "`/rgbd/depth` (depth_image, registered to the camera; 6 messages)" in markdown
        assert "| 3 | 1 no usable online alignment (state NONE) |" in markdown
    else:
        assert len(usable) == frames


def test_align_stamp_tolerance_and_max_samples_flags_reach_the_aligner(tmp_path):
    """--align-stamp-tolerance 0.005 leaves the sensor 10 ms late unmatched; --align-max-samples
    caps the samples of each fit, as alignment.max_samples does in dpt_node."""
    frames = 3
    sensor = {k: _lidar(k, scene(k)[1]) for k in range(frames)}
    bag = write_bag(tmp_path / "in", "sqlite3", frames, extra_messages=lambda k, stamp: sensor[k])
    flags = ("--variant", "dpt_tiny", "--align-topic", "/lidar/points", "--align-extrinsic", *map(str, LIDAR_IN_CAMERA))
    strict = evaluate(make_config(bag, *GT_ARGS, *flags, "--align-stamp-tolerance", "0.005"),
                      engine=SceneReadingEngine("relative_inverse_depth"))
    assert strict["online_alignment"]["states"] == {"NONE": frames}
    capped = evaluate(make_config(bag, *GT_ARGS, *flags, "--align-max-samples", "100", "--align-min-inliers", "20"),
                      engine=SceneReadingEngine("relative_inverse_depth"))
    assert [f["online_alignment"]["sample_count"] for f in capped["frames"]] == [100] * frames
    assert capped["online_alignment"]["parameters"]["alignment.max_samples"] == 100
    assert capped["online_alignment"]["aligner_settings"]["min_inliers"] == 20


def test_evaluator_alignment_modules_import_no_ros():
    """The offline evaluator's alignment is ROS-free like the rest of it (rosbags reads the bags)."""
    from support.imports import packages_imported_by

    assert packages_imported_by(("dpt_ros.evaluation.run", "dpt_ros.evaluation.online_alignment",
                                 "dpt_ros.evaluation.simulated_sparse")) == []


def test_online_alignment_config_from_python_resolves_once_and_again_the_same(tmp_path):
    """EvaluationConfig built in Python (align_parameters by dpt_node parameter name) resolves to every
    alignment.* value, and resolving a resolved configuration changes nothing (evaluate resolves it
    again)."""
    from dpt_ros.evaluation.config import EvaluationConfig, EvaluationError
    from dpt_ros.model_config import ModelConfig

    simulated = EvaluationConfig(input_bag=tmp_path, image_topic=IMAGE_TOPIC, gt_depth_topic="/gt/depth",
                                 model=ModelConfig(variant="dpt_tiny"), simulate_sparse="points:50",
                                 align_parameters={"alignment.mode": "scale_only"}).resolved()
    assert simulated.align_parameters == without_topic_parameters(node_values(**{"alignment.mode": "scale_only"}))
    assert simulated.resolved() == simulated
    lidar = EvaluationConfig(input_bag=tmp_path, image_topic=IMAGE_TOPIC, model=ModelConfig(variant="dpt_tiny"),
                             align_topic="/lidar/points", align_parameters={"alignment.extrinsic": LIDAR_IN_CAMERA})
    resolved = lidar.resolved()
    assert resolved.align_parameters["alignment.extrinsic"] == list(LIDAR_IN_CAMERA)
    assert resolved.resolved() == resolved
    with pytest.raises(EvaluationError, match="unknown alignment parameters alignment.use_tf"):
        EvaluationConfig(input_bag=tmp_path, image_topic=IMAGE_TOPIC, model=ModelConfig(variant="dpt_tiny"),
                         align_topic="/lidar/points", align_parameters={"alignment.use_tf": True}).resolved()
