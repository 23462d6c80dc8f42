"""alignment: robust scale/shift fit to sparse metric depth and the temporal filter (synthetic data).

The scene is a synthetic depth map; the "model" predicts exactly the affine image of its inverse
depth, ``prediction = (1/depth - shift) / scale``, so the true scale and shift are known.  Samples
add relative depth noise and outliers of the kinds a lidar or RGB-D camera gives: background
seen past an occlusion edge (farther) and reflections or calibration error (nearer).
"""
import math

import numpy as np
import pytest
import torch

from dpt_ros.alignment import (
    AlignerSettings, AlignmentState, OnlineAligner, depth_change, prediction_at, relative_residuals, robust_fit)
from dpt_ros.depth import fit_scale_shift
from dpt_ros.sparse_depth import DepthSamples

SHAPE = (120, 160)
# A relative model's output is in arbitrary units (DPT: hundreds to thousands).
SCALE, SHIFT = 2.5e-4, 0.02


def scene_depth(shape=SHAPE):
    """Metres: a floor receding from 2 m (bottom row) to 40 m (top row), a box at 3 m, a wall at 8 m."""
    rows = np.linspace(40.0, 2.0, shape[0])[:, None] * np.ones((1, shape[1]))
    depth = rows.copy()
    depth[30:80, 100:150] = 8.0
    depth[60:100, 20:60] = 3.0
    return depth


def relative_prediction(depth, scale=SCALE, shift=SHIFT):
    return ((1.0 / depth - shift) / scale).astype(np.float32)


def make_samples(depth, count, *, noise=0.01, outliers=0.3, seed=0):
    """``count`` samples at random pixels; ``noise`` relative Gaussian depth noise; a fraction
    ``outliers`` of them replaced by depths 1.5-4x (occlusion) or 0.2-0.6x (reflection) off."""
    rng = np.random.default_rng(seed)
    height, width = depth.shape
    u = rng.uniform(-0.5, width - 0.5, count)
    v = rng.uniform(-0.5, height - 0.5, count)
    measured = depth[np.floor(v + 0.5).astype(int), np.floor(u + 0.5).astype(int)] * (1 + noise * rng.standard_normal(count))
    bad = rng.permutation(count)[:round(outliers * count)]
    far, near = bad[: bad.size // 2], bad[bad.size // 2:]
    measured[far] *= rng.uniform(1.5, 4.0, far.size)
    measured[near] *= rng.uniform(0.2, 0.6, near.size)
    return DepthSamples(u, v, measured, depth.shape)


def frame(scale=SCALE, shift=SHIFT, count=2000, seed=0, **kwargs):
    """(prediction, samples) of the scene seen by a model with this scale and shift."""
    depth = scene_depth()
    return relative_prediction(depth, scale, shift), make_samples(depth, count, seed=seed, **kwargs)


def converged(settings=None, frames=5):
    aligner = OnlineAligner(settings or AlignerSettings())
    for i in range(frames):
        estimate = aligner.update(*frame(seed=i), stamp=0.1 * i)
    assert estimate.state == AlignmentState.TRACKING
    return aligner, estimate


# ------------------------------------------------------------------------------------------------
# The robust fit
# ------------------------------------------------------------------------------------------------

def test_scale_and_shift_recovered_within_1_percent_despite_noise_and_30_percent_outliers():
    prediction, samples = frame()
    values = prediction_at(prediction, samples)
    fit = robust_fit(values, samples.depth, AlignerSettings(), np.random.default_rng(0))
    assert fit.error is None
    assert fit.scale == pytest.approx(SCALE, rel=0.01)
    assert fit.shift == pytest.approx(SHIFT, rel=0.01)
    # The outliers are found: 30 % of 2000 planted, all more than 33 % off.
    assert fit.samples == 2000 and 1380 <= fit.inliers <= 1400
    # The residual is the RMS relative residual of the inliers: about the 1 % noise.
    r = relative_residuals(fit.scale, fit.shift, values, samples.depth)
    inliers = np.abs(r) <= 0.15
    assert fit.inliers == inliers.sum()
    assert fit.residual == pytest.approx(math.sqrt(np.mean(r[inliers] ** 2)), rel=1e-12)
    assert 0.008 < fit.residual < 0.012
    # Plain least squares (the evaluator's fit) on the same samples is pulled far off by them.
    plain_scale, plain_shift = fit_scale_shift(values, 1.0 / samples.depth)
    assert abs(plain_scale / SCALE - 1) > 0.05 or abs(plain_shift / SHIFT - 1) > 0.05


def test_first_update_of_the_online_aligner_recovers_scale_and_shift():
    estimate = OnlineAligner().update(*frame(), stamp=12.5)
    assert estimate.state == AlignmentState.CONVERGING and estimate.usable
    assert estimate.scale == pytest.approx(SCALE, rel=0.01)
    assert estimate.shift == pytest.approx(SHIFT, rel=0.01)
    assert estimate.stamp == 12.5 and estimate.age == 0.0 and estimate.mode == "full"


def test_torch_prediction_gives_the_same_estimate_as_numpy():
    prediction, samples = frame()
    from_numpy = OnlineAligner().update(prediction, samples, 0.0)
    from_torch = OnlineAligner().update(torch.from_numpy(prediction), samples, 0.0)
    assert (from_torch.scale, from_torch.shift, from_torch.inliers) == \
        (from_numpy.scale, from_numpy.shift, from_numpy.inliers)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_prediction_on_the_gpu_is_read_there_and_gives_the_same_estimate():
    prediction, samples = frame()
    from_numpy = OnlineAligner().update(prediction, samples, 0.0)
    from_gpu = OnlineAligner().update(torch.from_numpy(prediction).cuda(), samples, 0.0)
    assert (from_gpu.scale, from_gpu.shift, from_gpu.inliers) == (from_numpy.scale, from_numpy.shift, from_numpy.inliers)


def test_scale_only_mode_corrects_a_metric_model_and_keeps_shift_zero():
    # A metric model 10 % too far everywhere: its inverse depth is 1/1.1 of the truth.
    depth = scene_depth()
    model_inverse_depth = (1.0 / (depth * 1.1)).astype(np.float32)
    settings = AlignerSettings(mode="scale_only")
    estimate = OnlineAligner(settings).update(model_inverse_depth, make_samples(depth, 2000), stamp=0.0)
    assert estimate.usable and estimate.mode == "scale_only"
    assert estimate.scale == pytest.approx(1.1, rel=0.01)
    assert estimate.shift == 0.0
    # Full mode would have fitted a shift as well; scale_only holds it at exactly 0.
    fit = robust_fit(prediction_at(model_inverse_depth, make_samples(depth, 2000)), make_samples(depth, 2000).depth,
                     settings, np.random.default_rng(1))
    assert fit.error is None and fit.shift == 0.0


# ------------------------------------------------------------------------------------------------
# Refused fits: the previous estimate is kept
# ------------------------------------------------------------------------------------------------

def test_too_few_samples_do_not_update_and_keep_the_previous_estimate():
    aligner, before = converged()
    prediction, samples = frame(count=10, seed=9)
    estimate = aligner.update(prediction, samples, stamp=0.6)
    assert estimate.state == AlignmentState.REJECTED and estimate.usable
    assert (estimate.scale, estimate.shift) == (before.scale, before.shift)
    assert estimate.samples == 10 and estimate.inliers == 0 and math.isnan(estimate.residual)
    assert "too few samples: 10 valid, at least 30 needed" in estimate.message
    assert estimate.age == pytest.approx(0.2)  # since the last accepted fit at 0.4 s
    # The next good frame is accepted again.
    assert aligner.update(*frame(seed=10), stamp=0.7).state == AlignmentState.TRACKING


def test_too_few_samples_on_a_fresh_aligner_give_no_estimate():
    estimate = OnlineAligner().update(*frame(count=10), stamp=0.0)
    assert estimate.state == AlignmentState.NONE and not estimate.usable
    assert (estimate.scale, estimate.shift) == (0.0, 0.0) and estimate.age == math.inf


def test_mostly_outliers_are_refused_for_too_few_inliers():
    aligner, before = converged()
    estimate = aligner.update(*frame(outliers=0.8, seed=11), stamp=0.5)
    assert estimate.state == AlignmentState.REJECTED
    assert "too few inliers" in estimate.message and "at least 30%" in estimate.message
    assert (estimate.scale, estimate.shift) == (before.scale, before.shift)


def test_a_fit_with_spread_residuals_is_refused_by_the_residual_bound():
    prediction, samples = frame(noise=0.05, outliers=0.0)
    settings = AlignerSettings(max_residual=0.03)
    fit = robust_fit(prediction_at(prediction, samples), samples.depth, settings, np.random.default_rng(0))
    assert fit.error is not None and "residual" in fit.error and fit.residual > 0.03
    estimate = OnlineAligner(settings).update(prediction, samples, 0.0)
    assert estimate.state == AlignmentState.NONE and f"{fit.residual:.3g}" in estimate.message
    # With the default bound (0.08) the same samples are a good fit.
    assert OnlineAligner().update(prediction, samples, 0.0).usable


def test_default_bounds_accept_a_typical_model_error_and_refuse_unrelated_samples():
    """Defaults matter: a relative model is off by ~10 % per pixel (zero-shot AbsRel), and such
    fits must pass; depths that have nothing to do with the prediction must not."""
    settings = AlignerSettings()
    for seed in range(5):
        rng = np.random.default_rng(seed)
        depth = rng.uniform(2.0, 40.0, 3000)
        prediction = (1.0 / depth - SHIFT) / SCALE
        typical = robust_fit(prediction, depth * (1 + 0.10 * rng.standard_normal(3000)), settings, rng)
        assert typical.error is None and typical.scale == pytest.approx(SCALE, rel=0.03)
        unrelated = robust_fit(prediction, rng.permutation(depth), settings, rng)
        assert unrelated.error is not None  # too few inliers, or a scale that is not positive


# ------------------------------------------------------------------------------------------------
# The temporal filter
# ------------------------------------------------------------------------------------------------

def exact_frame(scale, shift, count=400):
    """Noise- and outlier-free samples: the fit returns exactly (scale, shift)."""
    return frame(scale, shift, count=count, noise=0.0, outliers=0.0)


def test_filter_is_a_running_mean_then_an_exponential_average():
    aligner = OnlineAligner(AlignerSettings(smoothing=0.3))
    scales = [1.00e-3, 1.04e-3, 0.98e-3, 1.02e-3, 1.01e-3]
    shifts = [0.010, 0.011, 0.0105, 0.0095, 0.010]
    expected_scale = expected_shift = 0.0
    states = []
    for n, (scale, shift) in enumerate(zip(scales, shifts), start=1):
        estimate = aligner.update(*exact_frame(scale, shift), stamp=float(n))
        weight = max(0.3, 1.0 / n)  # 1, 1/2, 1/3, then 0.3
        expected_scale += weight * (scale - expected_scale)
        expected_shift += weight * (shift - expected_shift)
        assert estimate.scale == pytest.approx(expected_scale, rel=1e-6)
        assert estimate.shift == pytest.approx(expected_shift, rel=1e-6)
        states.append(estimate.state)
    # ceil(1 / 0.3) = 4 accepted fits until the estimate is tracking.
    assert states == [AlignmentState.CONVERGING] * 3 + [AlignmentState.TRACKING] * 2


def test_one_outlier_frame_is_gated_and_the_depth_does_not_jump():
    aligner = OnlineAligner()
    for i in range(5):
        before = aligner.update(*exact_frame(SCALE, SHIFT), stamp=0.1 * i)
    # One frame whose samples all say 50 % farther (a stale or mis-stamped scan): a clean fit,
    # but a 33 % change of the depth.
    estimate = aligner.update(*exact_frame(SCALE / 1.5, SHIFT / 1.5), stamp=0.5)
    assert estimate.state == AlignmentState.REJECTED and estimate.usable
    assert "gated" in estimate.message and "33.3%" in estimate.message
    assert (estimate.scale, estimate.shift) == (before.scale, before.shift)
    assert estimate.age == pytest.approx(0.1)
    # The next normal frame is accepted and the estimate is where it was.
    after = aligner.update(*exact_frame(SCALE, SHIFT), stamp=0.6)
    assert after.state == AlignmentState.TRACKING
    assert after.scale == pytest.approx(SCALE, rel=1e-6) and after.shift == pytest.approx(SHIFT, rel=1e-6)


def test_a_persistent_change_reinitialises_after_gate_frames():
    aligner = OnlineAligner(AlignerSettings(gate_frames=3))
    for i in range(5):
        aligner.update(*exact_frame(SCALE, SHIFT), stamp=0.1 * i)
    new = (SCALE / 1.5, SHIFT / 1.5)
    states = [aligner.update(*exact_frame(*new), stamp=0.5 + 0.1 * i) for i in range(3)]
    assert [e.state for e in states] == [AlignmentState.REJECTED, AlignmentState.REJECTED,
                                         AlignmentState.CONVERGING]
    assert "re-initialised" in states[-1].message
    assert states[-1].scale == pytest.approx(new[0], rel=1e-6) and states[-1].shift == pytest.approx(new[1], rel=1e-6)


def test_gated_frames_that_disagree_with_each_other_never_reinitialise():
    aligner = OnlineAligner(AlignerSettings(gate_frames=2))
    for i in range(5):
        before = aligner.update(*exact_frame(SCALE, SHIFT), stamp=0.1 * i)
    for i, factor in enumerate((1.5, 0.6, 1.5, 0.6)):  # jumping back and forth: junk, not a change
        estimate = aligner.update(*exact_frame(SCALE / factor, SHIFT / factor), stamp=0.5 + 0.05 * i)
        assert estimate.state == AlignmentState.REJECTED
    assert (estimate.scale, estimate.shift) == (before.scale, before.shift)


def test_depth_change_is_the_median_relative_change_of_aligned_inverse_depth():
    prediction = np.array([1.0, 2.0, 3.0])
    # old: 1, 2, 3; new: 1.1, 2.4, 3.3 -> changes 10 %, 20 %, 10 % -> median 10 %
    assert depth_change((1.1, 0.0), (1.0, 0.0), prediction) == pytest.approx(0.1)
    assert depth_change((1.2, -0.1), (1.0, 0.0), prediction) == pytest.approx(0.15)  # 10 %, 15 %, 16.7 %
    assert depth_change((1.0, 0.0), (1.0, -5.0), prediction) == math.inf  # the old one gives no depth


# ------------------------------------------------------------------------------------------------
# Age, timeout, reset
# ------------------------------------------------------------------------------------------------

def test_estimate_goes_stale_after_the_timeout_and_the_next_fit_restarts_it():
    aligner = OnlineAligner(AlignerSettings(timeout=1.0))
    aligner.update(*exact_frame(SCALE, SHIFT), stamp=100.0)
    fresh = aligner.status(100.9)  # a frame without samples
    assert fresh.state == AlignmentState.CONVERGING and fresh.usable and fresh.age == pytest.approx(0.9)
    assert fresh.samples == 0 and "no samples" in fresh.message
    stale = aligner.status(101.5)
    assert stale.state == AlignmentState.STALE and not stale.usable and stale.age == pytest.approx(1.5)
    assert stale.scale == pytest.approx(SCALE)  # still reported, not used
    # A refused fit does not revive it.
    assert aligner.update(*exact_frame(SCALE, SHIFT, count=5), stamp=101.6).state == AlignmentState.STALE
    # The next good fit starts over from itself: no gating against the stale estimate.
    restarted = aligner.update(*exact_frame(SCALE / 2, SHIFT / 2), stamp=102.0)
    assert restarted.state == AlignmentState.CONVERGING and restarted.age == 0.0
    assert restarted.scale == pytest.approx(SCALE / 2, rel=1e-6)
    # timeout 0: never stale.
    never = OnlineAligner(AlignerSettings(timeout=0.0))
    never.update(*exact_frame(SCALE, SHIFT), stamp=0.0)
    assert never.status(1e6).usable


def test_reset_forgets_the_estimate():
    aligner, _ = converged()
    aligner.reset("model reloaded")
    assert aligner.last.state == AlignmentState.NONE and aligner.last.message == "model reloaded"
    assert aligner.status(1.0).state == AlignmentState.NONE
    # The next frame initialises from itself alone, whatever the old estimate was.
    estimate = aligner.update(*exact_frame(SCALE * 3, SHIFT * 3), stamp=1.1)
    assert estimate.state == AlignmentState.CONVERGING
    assert estimate.scale == pytest.approx(SCALE * 3, rel=1e-6) and estimate.shift == pytest.approx(SHIFT * 3, rel=1e-6)


def test_time_going_backwards_resets():
    aligner, _ = converged()
    estimate = aligner.update(*exact_frame(SCALE * 2, SHIFT * 2), stamp=0.1)  # last accepted at 0.4
    assert estimate.state == AlignmentState.CONVERGING and "went back 0.300 s" in estimate.message
    assert estimate.scale == pytest.approx(SCALE * 2, rel=1e-6)


def test_configure_keeps_the_estimate_unless_the_mode_changes():
    aligner, before = converged()
    aligner.configure(AlignerSettings(gate=0.5))
    assert aligner.status(0.5).scale == before.scale and aligner.settings.gate == 0.5
    aligner.configure(AlignerSettings(mode="scale_only"))
    assert aligner.status(0.5).state == AlignmentState.NONE


# ------------------------------------------------------------------------------------------------
# Bad input
# ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, fragment", [
    ({"mode": "affine"}, "mode must be one of full, scale_only"),
    ({"smoothing": 0.0}, "smoothing must be a number in (0.0, 1.0]"),
    ({"min_inliers": 0}, "min_inliers must be an integer >= 1"),
    ({"max_samples": 2.5}, "max_samples must be an integer"),
    ({"timeout": -1.0}, "timeout must be a number in [0.0, inf]"),
    ({"min_inlier_fraction": 1.5}, "min_inlier_fraction must be a number in [0.0, 1.0]"),
    ({"gate": math.nan}, "gate must be a number"),
])
def test_bad_settings_are_refused_with_the_reason(kwargs, fragment):
    with pytest.raises(ValueError, match="alignment settings") as error:
        AlignerSettings(**kwargs)
    assert fragment in str(error.value)


def test_samples_off_the_image_take_no_part():
    prediction = np.arange(12, dtype=np.float32).reshape(3, 4)
    samples = DepthSamples([0.0, 3.4, 3.6, -0.6, 1.0], [0.0, 2.0, 2.0, 1.0, 2.6], np.ones(5), (3, 4))
    values = prediction_at(prediction, samples)
    assert values[:2].tolist() == [0.0, 11.0] and np.isnan(values[2:]).all()
    assert prediction_at(torch.from_numpy(prediction), samples)[:2].tolist() == [0.0, 11.0]


def test_samples_for_another_image_size_are_refused():
    prediction, samples = frame()
    with pytest.raises(ValueError, match="samples are for a 160x120 image"):
        OnlineAligner().update(prediction[:, :80], samples, 0.0)


def test_alignment_modules_import_no_ros():
    """The aligner is ROS-free core: importing it loads no rclpy or message package."""
    from support.imports import packages_imported_by

    assert packages_imported_by(("dpt_ros.alignment", "dpt_ros.sparse_depth", "dpt_ros.alignment_parameters")) == []


# ------------------------------------------------------------------------------------------------
# The message
# ------------------------------------------------------------------------------------------------

@pytest.mark.ros
def test_estimate_fills_a_depth_alignment_message():
    from dpt_ros.msg import DepthAlignment
    from std_msgs.msg import Header

    for state in AlignmentState:  # the message's constants are the states' values
        assert getattr(DepthAlignment, f"STATE_{state.name}") == state.value
    _, estimate = converged()
    msg = DepthAlignment(header=Header(frame_id="camera_optical"), **estimate.message_fields())
    assert msg.state == DepthAlignment.STATE_TRACKING and msg.mode == "full"
    assert (msg.scale, msg.shift) == (estimate.scale, estimate.shift)  # float64: exact
    assert msg.sample_count == 2000 and msg.inlier_count == estimate.inliers
    assert msg.residual == pytest.approx(estimate.residual, rel=1e-6) and msg.age == 0.0
    assert msg.message == estimate.message
    none = DepthAlignment(**OnlineAligner().last.message_fields())
    assert none.state == DepthAlignment.STATE_NONE and none.age == math.inf and math.isnan(none.residual)
