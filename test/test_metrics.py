"""Depth/segmentation metrics and inverse-depth alignment against hand-computed values."""
import json
import math

import numpy as np
import pytest

from dpt_ros.depth import (
    AlignmentError,
    align_inverse_depth_to_metric,
    fit_scale,
    fit_scale_shift,
    relative_to_metric,
)
from dpt_ros.evaluation.metrics import (
    ConfusionMatrix,
    DepthErrorHistogram,
    DepthMetricSums,
    depth_metrics,
    load_label_map,
    remap_ground_truth_labels,
    segmentation_metrics,
    valid_depth_mask,
)

MIN_DEPTH, MAX_DEPTH = 1e-3, 80.0


# ------------------------------------------------------------------------------------------------
# Depth metrics
# ------------------------------------------------------------------------------------------------

def test_perfect_prediction_has_zero_error_and_full_accuracy():
    gt = np.linspace(0.5, 70.0, 48 * 64, dtype=np.float32).reshape(48, 64)
    m = depth_metrics(gt.copy(), gt, MIN_DEPTH, MAX_DEPTH)
    assert (m.abs_rel, m.sq_rel, m.rmse, m.rmse_log) == (0.0, 0.0, 0.0, 0.0)
    assert (m.delta1, m.delta2, m.delta3) == (1.0, 1.0, 1.0)
    assert m.valid_pixels == 48 * 64


def test_prediction_off_by_constant_factor():
    gt = np.array([[2.0, 4.0], [5.0, 10.0]])
    m = depth_metrics(1.1 * gt, gt, MIN_DEPTH, MAX_DEPTH)
    # |1.1g - g| / g = 0.1 everywhere; (0.1 g)^2 / g = 0.01 g, mean(g) = 5.25.
    assert m.abs_rel == pytest.approx(0.1)
    assert m.sq_rel == pytest.approx(0.01 * 5.25)
    # RMSE = 0.1 * sqrt(mean(g^2)) = 0.1 * sqrt((4 + 16 + 25 + 100) / 4)
    assert m.rmse == pytest.approx(0.1 * math.sqrt(145 / 4))
    assert m.rmse_log == pytest.approx(math.log(1.1))
    assert (m.delta1, m.delta2, m.delta3) == (1.0, 1.0, 1.0)

    m = depth_metrics(1.3 * gt, gt, MIN_DEPTH, MAX_DEPTH)
    assert m.abs_rel == pytest.approx(0.3)
    # 1.3 fails 1.25 but passes 1.25^2 = 1.5625.
    assert (m.delta1, m.delta2, m.delta3) == (0.0, 1.0, 1.0)


def test_mixed_errors_hand_computed():
    gt = np.array([1.0, 2.0, 4.0, 5.0])
    pred = np.array([1.0, 2.6, 4.0, 10.0])
    m = depth_metrics(pred, gt, MIN_DEPTH, MAX_DEPTH)
    assert m.abs_rel == pytest.approx((0 + 0.6 / 2 + 0 + 5 / 5) / 4)  # 0.325
    assert m.sq_rel == pytest.approx((0.36 / 2 + 25 / 5) / 4)  # 1.295
    assert m.rmse == pytest.approx(math.sqrt((0.36 + 25) / 4))
    assert m.rmse_log == pytest.approx(math.sqrt((math.log(1.3) ** 2 + math.log(2) ** 2) / 4))
    # ratios 1, 1.3, 1, 2: 1.25^3 = 1.953 < 2, so the last pixel fails every threshold.
    assert (m.delta1, m.delta2, m.delta3) == (0.5, 0.75, 0.75)


def test_invalid_and_out_of_range_ground_truth_is_ignored():
    gt = np.array([2.0, np.nan, 0.0, 90.0, np.inf, 4.0])
    pred = np.array([2.0, 1.0, 1.0, 1.0, 1.0, 5.0])
    assert valid_depth_mask(gt, MIN_DEPTH, MAX_DEPTH).tolist() == [True, False, False, False,
                                                                   False, True]
    m = depth_metrics(pred, gt, MIN_DEPTH, MAX_DEPTH)
    assert m.valid_pixels == 2
    assert m.abs_rel == pytest.approx((0 + 0.25) / 2)
    # A NaN prediction (REP 117: no estimate) on a valid pixel is not evaluated either.
    m = depth_metrics(np.array([2.0, np.nan]), np.array([2.0, 3.0]), MIN_DEPTH, MAX_DEPTH)
    assert m.valid_pixels == 1 and m.abs_rel == 0.0


def test_beyond_range_prediction_is_scored_at_the_range_limits():
    # REP 117: +Inf = beyond range, -Inf = too close; clipped like any other prediction, so a
    # model that calls a 4 m wall "beyond range" pays for it.
    gt = np.array([4.0, 5.0, 2.0])
    m = depth_metrics(np.array([np.inf, 5.0, -np.inf]), gt, 1.0, 10.0)
    assert m.valid_pixels == 3
    assert m.abs_rel == pytest.approx((6.0 / 4.0 + 0.0 + 1.0 / 2.0) / 3)


def test_prediction_is_clipped_to_the_depth_range():
    gt = np.array([8.0, 5.0])
    m = depth_metrics(np.array([1000.0, 5.0]), gt, MIN_DEPTH, 10.0)
    assert m.abs_rel == pytest.approx((2.0 / 8.0) / 2)  # 1000 m clipped to 10 m


def test_no_valid_pixel_gives_none_and_shape_mismatch_raises():
    assert depth_metrics(np.ones(3), np.full(3, np.nan), MIN_DEPTH, MAX_DEPTH) is None
    with pytest.raises(ValueError, match="shape"):
        depth_metrics(np.ones((2, 3)), np.ones((3, 2)), MIN_DEPTH, MAX_DEPTH)


def test_sums_give_the_mean_over_frames_and_over_pixels():
    gt = np.full(10, 2.0)
    sums = DepthMetricSums()
    assert sums.frame_mean() is None and sums.pixel_mean() is None
    a = sums.add(gt * 1.1, gt, MIN_DEPTH, MAX_DEPTH)
    b = sums.add(gt[:2] * 1.3, gt[:2], MIN_DEPTH, MAX_DEPTH)
    assert a == depth_metrics(gt * 1.1, gt, MIN_DEPTH, MAX_DEPTH)
    assert sums.add(gt, np.full(10, np.nan), MIN_DEPTH, MAX_DEPTH) is None  # nothing to score: no frame
    frames = sums.frame_mean()  # each frame weighs the same
    assert frames.abs_rel == pytest.approx(0.2)
    assert frames.delta1 == pytest.approx(0.5)
    assert frames.rmse == pytest.approx((a.rmse + b.rmse) / 2)
    assert frames.valid_pixels == 12
    pixels = sums.pixel_mean()  # each pixel weighs the same
    assert pixels.abs_rel == pytest.approx((10 * 0.1 + 2 * 0.3) / 12)
    assert pixels.delta1 == pytest.approx(10 / 12)
    assert pixels.rmse == pytest.approx(math.sqrt((10 * 0.2**2 + 2 * 0.6**2) / 12))
    assert pixels.rmse_log == pytest.approx(math.sqrt((10 * math.log(1.1) ** 2 + 2 * math.log(1.3) ** 2) / 12))
    assert (sums.frames, sums.pixels) == (2, 12)


def test_sums_survive_json_and_merge():
    rng = np.random.default_rng(1)
    parts = [DepthMetricSums(), DepthMetricSums()]
    whole = DepthMetricSums()
    for k in range(5):
        gt = rng.uniform(1.0, 20.0, 50)
        pred = gt * rng.uniform(0.8, 1.2, 50)
        parts[k % 2].add(pred, gt, MIN_DEPTH, MAX_DEPTH)
        whole.add(pred, gt, MIN_DEPTH, MAX_DEPTH)
    merged = DepthMetricSums.from_json(json.loads(json.dumps(parts[0].to_json())))
    merged.merge(DepthMetricSums.from_json(json.loads(json.dumps(parts[1].to_json()))))
    assert merged.frame_mean().as_dict() == pytest.approx(whole.frame_mean().as_dict(), rel=1e-12)
    assert merged.pixel_mean().as_dict() == pytest.approx(whole.pixel_mean().as_dict(), rel=1e-12)


def test_error_histogram_bins_by_ground_truth_depth():
    histogram = DepthErrorHistogram(0.0, 10.0, bins=5)  # bins of 2 m
    gt = np.array([1.0, 1.5, 3.0, 9.0, 10.0, np.nan])
    pred = np.array([1.1, 1.5, 3.6, 9.0, 5.0, 1.0])
    histogram.add(pred, gt)
    assert histogram.counts.tolist() == [2, 1, 0, 0, 2]
    mean = histogram.mean_abs_rel()
    assert mean[0] == pytest.approx(0.05)  # (0.1 + 0) / 2
    assert mean[1] == pytest.approx(0.2)
    assert math.isnan(mean[2])
    assert mean[4] == pytest.approx(0.25)  # (0 + 0.5) / 2; 10 m belongs to the last bin


def test_error_histogram_is_shown_over_the_depths_of_the_data():
    histogram = DepthErrorHistogram(0.0, 80.0, bins=8000)  # 1 cm bins
    gt = np.array([2.004, 2.5, 3.0, 4.996])
    histogram.add(gt * 1.2, gt)
    shown = histogram.over_data(max_bins=20)
    # 2.00 .. 5.00 m is 300 fine bins: 20 shown bins of 15 cm.
    np.testing.assert_allclose(shown.edges, np.linspace(2.0, 5.0, 21), atol=1e-9)
    assert shown.counts.sum() == 4 and shown.counts[0] == 1 and shown.counts[-1] == 1
    np.testing.assert_allclose(shown.mean_abs_rel()[shown.counts > 0], 0.2)
    # Fewer occupied fine bins than max_bins: one shown bin each.
    single = DepthErrorHistogram(0.0, 80.0, bins=8000)
    single.add(np.array([7.0]), np.array([7.005]))
    np.testing.assert_allclose(single.over_data().edges, [7.0, 7.01], atol=1e-9)
    empty = DepthErrorHistogram(0.0, 80.0)
    assert empty.over_data() is empty


def test_error_histograms_survive_json_and_merge():
    a, b = DepthErrorHistogram(1e-3, 80.0), DepthErrorHistogram(1e-3, 80.0)
    a.add(np.array([2.0, 30.0]), np.array([2.5, 29.0]))
    b.add(np.array([2.6]), np.array([2.5]))
    merged = DepthErrorHistogram.from_json(json.loads(json.dumps(a.to_json())))
    merged.merge(DepthErrorHistogram.from_json(b.to_json()))
    assert merged.counts.sum() == 3
    np.testing.assert_allclose(np.nansum(merged.abs_rel_sum), 0.5 / 2.5 + 1 / 29 + 0.1 / 2.5)
    with pytest.raises(ValueError, match="different bins"):
        merged.merge(DepthErrorHistogram(0.0, 10.0))


# ------------------------------------------------------------------------------------------------
# Alignment
# ------------------------------------------------------------------------------------------------

def test_fit_scale_shift_recovers_a_known_affine_map():
    rng = np.random.default_rng(0)
    prediction = rng.uniform(0.0, 50.0, size=(48, 64))
    target = 2.5 * prediction - 0.3
    scale, shift = fit_scale_shift(prediction, target)
    assert scale == pytest.approx(2.5, rel=1e-12)
    assert shift == pytest.approx(-0.3, abs=1e-10)
    # Masked-out pixels do not take part, however wrong they are.
    target[:10] = 1e6
    mask = np.ones_like(target, dtype=bool)
    mask[:10] = False
    assert fit_scale_shift(prediction, target, mask) == pytest.approx((2.5, -0.3))


def test_fit_scale_shift_minimizes_squared_error():
    # Three points that no line fits: compare with the normal equations solved by hand.
    p = np.array([0.0, 1.0, 2.0])
    y = np.array([1.0, 2.0, 4.0])
    # s = cov(p, y) / var(p) = ((−1)(−4/3) + 0 + (1)(5/3)) / 2 = 1.5; t = mean(y) − s mean(p) = 7/3 − 1.5
    assert fit_scale_shift(p, y) == pytest.approx((1.5, 7 / 3 - 1.5))


def test_weighted_fit_scale_shift_solves_the_weighted_normal_equations():
    p = np.array([0.0, 1.0, 2.0])
    y = np.array([1.0, 2.0, 4.0])
    w = np.array([1.0, 1.0, 2.0])
    # Weighted means: p = (0 + 1 + 4) / 4 = 1.25, y = (1 + 2 + 8) / 4 = 2.75.
    # s = sum w (p - 1.25)(y - 2.75) / sum w (p - 1.25)^2
    #   = (1.25*1.75 + 0.25*0.75 + 2*0.75*1.25) / (1.5625 + 0.0625 + 2*0.5625) = 4.25 / 2.75
    scale, shift = fit_scale_shift(p, y, weights=w)
    assert scale == pytest.approx(4.25 / 2.75, rel=1e-12)
    assert shift == pytest.approx(2.75 - 4.25 / 2.75 * 1.25, rel=1e-12)
    # Weight 0 (or masked out) takes no part; all-equal weights give the unweighted fit.
    assert fit_scale_shift(np.append(p, 9.0), np.append(y, -50.0), weights=np.append(w, 0.0)) == \
        pytest.approx((scale, shift), rel=1e-12)
    assert fit_scale_shift(p, y, weights=np.full(3, 7.0)) == pytest.approx(fit_scale_shift(p, y), rel=1e-12)
    with pytest.raises(AlignmentError, match="at least 2"):
        fit_scale_shift(p, y, weights=[1.0, 0.0, 0.0])


def test_fit_scale_without_shift():
    p = np.array([1.0, 2.0, 4.0, 8.0])
    y = np.array([2.0, 3.0, 9.0, np.nan])
    # s = sum w p y / sum w p^2 over the finite points: (2 + 6 + 36) / (1 + 4 + 16)
    assert fit_scale(p, y) == pytest.approx(44 / 21, rel=1e-12)
    w = np.array([1.0, 0.5, 0.25, 1.0])
    assert fit_scale(p, y, weights=w) == pytest.approx((2 + 3 + 9) / (1 + 2 + 4), rel=1e-12)
    assert fit_scale(p, y, mask=[True, False, False, False]) == pytest.approx(2.0)
    with pytest.raises(AlignmentError, match="non-zero prediction"):
        fit_scale(np.zeros(3), np.ones(3))


def test_alignment_recovers_metric_depth_from_affine_inverse_depth():
    """A relative model that is an affine map of the true inverse depth aligns back exactly."""
    rows = np.linspace(2.0, 20.0, 48)[:, None] * np.ones((1, 64))  # planes at known distances
    gt = rows.astype(np.float32)
    scale, shift = 0.02, 0.01
    prediction = ((1.0 / gt.astype(np.float64)) - shift) / scale  # s*prediction + t == 1/gt
    depth, s, t = align_inverse_depth_to_metric(prediction, gt, np.isfinite(gt), MAX_DEPTH)
    assert s == pytest.approx(scale, rel=1e-9) and t == pytest.approx(shift, abs=1e-9)
    np.testing.assert_allclose(depth, gt, rtol=1e-5)
    assert depth.dtype == np.float32
    m = depth_metrics(depth, gt, MIN_DEPTH, MAX_DEPTH)
    assert m.abs_rel < 1e-5 and m.delta1 == 1.0
    # The same fit as relative_to_metric with the fitted constants (the metric variants' formula).
    np.testing.assert_allclose(depth, relative_to_metric(prediction, s, t), rtol=1e-5)


def test_alignment_clamps_at_max_depth_and_ignores_invalid_ground_truth():
    gt = np.array([2.0, 4.0, 8.0, np.nan, np.nan])
    prediction = np.array([1 / 2.0, 1 / 4.0, 1 / 8.0, -5.0, 1 / 8.0])  # s = 1, t = 0
    depth, s, t = align_inverse_depth_to_metric(prediction, gt, np.isfinite(gt), max_depth=10.0)
    assert (s, t) == pytest.approx((1.0, 0.0), abs=1e-12)
    # A negative aligned inverse depth becomes max_depth, not a negative depth.
    np.testing.assert_allclose(depth, [2.0, 4.0, 8.0, 10.0, 8.0], rtol=1e-6)


def test_alignment_of_degenerate_input_raises():
    gt = np.array([2.0, 3.0, 4.0])
    with pytest.raises(AlignmentError, match="constant"):
        align_inverse_depth_to_metric(np.ones(3), gt, np.ones(3, bool), MAX_DEPTH)
    with pytest.raises(AlignmentError, match="at least 2"):
        align_inverse_depth_to_metric(np.arange(3.0), gt, np.array([True, False, False]), MAX_DEPTH)


# ------------------------------------------------------------------------------------------------
# Segmentation
# ------------------------------------------------------------------------------------------------

GT = np.array([[0, 0, 1], [1, 1, 2], [255, 2, 2]], dtype=np.uint8)
PRED = np.array([[0, 1, 1], [1, 1, 2], [0, 2, 0]], dtype=np.uint8)


def test_segmentation_metrics_on_a_hand_made_map():
    m = segmentation_metrics(PRED, GT)
    # 8 evaluated pixels (the 255 one is ignored), 6 correct.
    assert m.evaluated_pixels == 8
    assert m.pixel_accuracy == pytest.approx(6 / 8)
    # class 0: TP 1, gt 2, pred 2 -> 1/3; class 1: TP 3, gt 3, pred 4 -> 3/4; class 2: 2/3.
    assert m.per_class_iou == pytest.approx({0: 1 / 3, 1: 3 / 4, 2: 2 / 3})
    assert m.mean_iou == pytest.approx((1 / 3 + 3 / 4 + 2 / 3) / 3)


def test_confusion_matrix_entries_and_accumulation():
    confusion = ConfusionMatrix(num_classes=3)
    confusion.add(PRED, GT)
    assert confusion.matrix.tolist() == [[1, 1, 0], [0, 3, 0], [1, 0, 2]]
    assert confusion.nonzero_entries() == [[0, 0, 1], [0, 1, 1], [1, 1, 3], [2, 0, 1], [2, 2, 2]]
    # Accumulating two frames equals evaluating them side by side.
    confusion.add(GT, GT)
    both = segmentation_metrics(np.hstack([PRED, GT]), np.hstack([GT, GT]), num_classes=3)
    assert confusion.metrics() == both
    assert both.pixel_accuracy == pytest.approx(14 / 16)
    # report.json keeps the matrix sparse; it reads back whole.
    unpredicted = ConfusionMatrix(num_classes=3)
    unpredicted.add(np.array([255, 0]), np.array([2, 0]))
    confusion.merge(unpredicted)
    restored = ConfusionMatrix.from_json(json.loads(json.dumps(confusion.to_json())))
    assert restored.matrix.tolist() == confusion.matrix.tolist()
    assert restored.unpredicted.tolist() == [0, 0, 1]
    assert restored.metrics() == confusion.metrics()


def test_unpredicted_pixels_and_false_positive_classes_count_as_errors():
    gt = np.array([0, 0, 1, 1])
    pred = np.array([0, 255, 1, 5])  # 255 = no prediction; class 5 absent from ground truth
    m = segmentation_metrics(pred, gt)
    assert m.pixel_accuracy == pytest.approx(0.5)
    # class 0: TP 1, gt 2 -> 1/2; class 1: TP 1, gt 2 -> 1/2; class 5: predicted, never true -> 0.
    assert m.per_class_iou == pytest.approx({0: 0.5, 1: 0.5, 5: 0.0})
    assert m.mean_iou == pytest.approx(1 / 3)


def test_all_ignored_gives_none():
    assert segmentation_metrics(np.zeros((2, 2)), np.full((2, 2), 255)) is None


def test_remap_ground_truth_labels():
    raw_ade = np.array([0, 1, 150, 151, 255], dtype=np.uint16)
    assert remap_ground_truth_labels(raw_ade, offset=1).tolist() == [255, 0, 149, 255, 255]
    assert remap_ground_truth_labels(raw_ade).tolist() == [0, 1, 255, 255, 255]
    mapped = remap_ground_truth_labels(np.array([7, 8, 9, 7], dtype=np.uint8), {7: 3, 8: 255})
    assert mapped.tolist() == [3, 255, 255, 3]
    assert mapped.dtype == np.uint8
    with pytest.raises(ValueError, match="integers"):
        remap_ground_truth_labels(np.zeros(2, dtype=np.float32))


def test_load_label_map_json_and_csv(tmp_path):
    json_file = tmp_path / "map.json"
    json_file.write_text('{"7": 3, "1000": 12}')
    assert load_label_map(json_file) == {7: 3, 1000: 12}
    csv_file = tmp_path / "map.csv"
    csv_file.write_text("gt_id,ade20k_index\n7,3\n# comment\n1000,12\n")
    assert load_label_map(csv_file) == {7: 3, 1000: 12}
    bad = tmp_path / "bad.csv"
    bad.write_text("7,wall\n")
    with pytest.raises(ValueError, match="integers"):
        load_label_map(bad)
