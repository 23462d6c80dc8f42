"""evaluate_bag --simulate-sparse: the specification and the samples it draws from ground truth."""
import math

import numpy as np
import pytest

from dpt_ros.evaluation.simulated_sparse import SparseSimulation, lidar_rows


def ground_truth(height=48, width=64):
    """Depth growing along the rows (from 2 m), a hole every 5th pixel, row 10 (or the last) out of range."""
    depth = np.repeat(2.0 + 0.1 * np.arange(height, dtype=np.float64)[:, None], width, axis=1)
    depth.reshape(-1)[::5] = np.nan
    depth[min(10, height - 1)] = 0.05  # below the alignment's min_depth (0.1 m by default)
    return depth


@pytest.mark.parametrize("spec,expected", [
    ("points:200", SparseSimulation("points", 200)),
    ("lidar:16", SparseSimulation("lidar", 16)),
    ("points:50,noise=0.05,outliers=0.1,seed=7", SparseSimulation("points", 50, 0.05, 0.1, 7)),
    (" lidar:4 , seed=2 ", SparseSimulation("lidar", 4, seed=2)),
])
def test_specifications_are_parsed(spec, expected):
    assert SparseSimulation.parse(spec) == expected


@pytest.mark.parametrize("spec,message", [
    ("points", "expected points:N or lidar:L"),
    ("points:-3", "expected points:N or lidar:L"),
    ("grid:10", "pattern must be one of points, lidar"),
    ("points:0", "the count must be an integer >= 1"),
    ("points:10,noise=-1", "noise must be >= 0"),
    ("points:10,outliers=1.5", "outliers must be a fraction in [0, 1]"),
    ("points:10,sigma=0.1", "unknown option 'sigma=0.1'"),
    ("points:10,seed=x", "seed must be an integer, got 'x'"),
])
def test_bad_specifications_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
        SparseSimulation.parse(spec)


def test_points_are_distinct_valid_pixels_drawn_with_the_seed_and_frame_index():
    gt = ground_truth()
    simulation = SparseSimulation.parse("points:300,seed=5")
    samples = simulation.samples(gt, gt.shape, frame_index=3, min_depth=0.1)
    assert len(samples) == 300 and samples.image_size == gt.shape
    rows, cols = samples.v.astype(int), samples.u.astype(int)
    assert np.array_equal(samples.u, cols) and np.array_equal(samples.v, rows)  # same size: pixel centres
    assert len(set(zip(rows, cols))) == 300
    np.testing.assert_array_equal(samples.depth, gt[rows, cols])  # no noise: the ground truth itself
    assert np.isfinite(samples.depth).all() and (samples.depth > 0.1).all()
    flat = rows * gt.shape[1] + cols
    assert (np.diff(flat) > 0).all()  # raster order
    again = simulation.samples(gt, gt.shape, frame_index=3, min_depth=0.1)
    assert np.array_equal(again.u, samples.u) and np.array_equal(again.v, samples.v)
    other_frame = simulation.samples(gt, gt.shape, frame_index=4, min_depth=0.1)
    assert not np.array_equal(other_frame.u, samples.u)


def test_points_beyond_the_valid_pixels_take_them_all():
    gt = ground_truth(6, 8)
    samples = SparseSimulation.parse("points:1000").samples(gt, gt.shape, 0, min_depth=0.1)
    assert len(samples) == np.count_nonzero(np.isfinite(gt) & (gt > 0.1))


def test_lidar_lines_are_the_centre_rows_of_equal_bands():
    assert lidar_rows(48, 6).tolist() == [4, 12, 20, 28, 36, 44]
    assert lidar_rows(10, 3).tolist() == [1, 5, 8]  # floor(1.67), floor(5), floor(8.33)
    gt = ground_truth()
    samples = SparseSimulation.parse("lidar:6").samples(gt, gt.shape, 0, min_depth=0.1)
    rows, cols = samples.v.astype(int), samples.u.astype(int)
    assert sorted(set(rows.tolist())) == [4, 12, 20, 28, 36, 44]
    for row in (4, 12, 20, 28, 36, 44):  # every valid pixel of the line
        valid = np.flatnonzero(np.isfinite(gt[row]))
        assert cols[rows == row].tolist() == valid.tolist()
    np.testing.assert_array_equal(samples.depth, gt[rows, cols])
    # Row 10 is out of range: a line on it has no sample.
    assert len(SparseSimulation.parse("lidar:1").samples(gt[8:13], (5, 64), 0, min_depth=0.1)) == 0
    # More lines than rows: every row once.
    assert len(set(SparseSimulation.parse("lidar:100").samples(gt, gt.shape, 0).v.tolist())) == 48


def test_ground_truth_of_another_size_maps_pixel_centres_to_the_image():
    gt = ground_truth(24, 32)
    samples = SparseSimulation.parse("lidar:2").samples(gt, (48, 64), 0, min_depth=0.1)
    # GT rows 6 and 18 -> image rows (6 + 0.5) * 2 - 0.5 = 12.5 and 36.5; columns likewise.
    assert sorted(set(samples.v.tolist())) == [12.5, 36.5]
    assert samples.image_size == (48, 64)
    assert set(samples.u.tolist()) <= {(c + 0.5) * 2 - 0.5 for c in range(32)}


def test_noise_and_outliers_disturb_the_depth_as_specified():
    gt = np.full((100, 100), 4.0)
    gt[50:] = 8.0
    noisy = SparseSimulation.parse("points:5000,noise=0.05,seed=1").samples(gt, gt.shape, 0)
    truth = gt[noisy.v.astype(int), noisy.u.astype(int)]
    error = noisy.depth / truth - 1.0
    assert error.std() == pytest.approx(0.05, rel=0.05) and abs(error.mean()) < 0.003
    wrong = SparseSimulation.parse("points:5000,outliers=0.2,seed=1").samples(gt, gt.shape, 0)
    truth = gt[wrong.v.astype(int), wrong.u.astype(int)]
    off = wrong.depth != truth
    assert off.sum() == 1000  # 20 % replaced
    assert wrong.depth.min() >= 4.0 and wrong.depth.max() <= 8.0  # between the nearest and farthest truth
    assert math.isclose(wrong.depth[off].mean(), 6.0, rel_tol=0.05)  # uniform over [4, 8]
