"""sparse_depth: metric samples from depth images and point clouds, against hand-computed pixels.

Messages are duck-typed stand-ins with the fields of sensor_msgs Image / CameraInfo / PointCloud2
(the module reads rclpy and rosbags messages alike), so these tests need no ROS.
"""
import math
from types import SimpleNamespace

import numpy as np
import pytest

from dpt_ros.sparse_depth import (
    DepthSamples, cloud_xyz, evenly_spaced, point_samples, registered_depth_samples, reprojected_depth_samples)

NAN = float("nan")
# Our camera: 640x480, fx = fy = 500, principal point at the centre.
CAMERA = (500.0, 500.0, 320.0, 240.0)
IMAGE_SIZE = (480, 640)
# Pose of a lidar (x forward, y left, z up) in the camera's optical frame (x right, y down, z
# forward): lidar x -> camera z, y -> -x, z -> -y; origin 5 cm right, 10 cm up, 20 cm behind.
LIDAR_IN_CAMERA = (0.05, -0.10, -0.20, 0.5, -0.5, 0.5, 0.5)


def image_message(array, encoding):
    array = np.ascontiguousarray(array)
    return SimpleNamespace(encoding=encoding, height=array.shape[0], width=array.shape[1],
                           step=array.strides[0], data=array.tobytes(), is_bigendian=0)


def camera_info(width, height, fx, fy, cx, cy):
    return SimpleNamespace(width=width, height=height, p=[fx, 0.0, cx, 0.0, 0.0, fy, cy, 0.0, 0.0, 0.0, 1.0, 0.0],
                           binning_x=0, binning_y=0, d=[],
                           roi=SimpleNamespace(x_offset=0, y_offset=0, width=0, height=0))


def pointcloud2(xyz, extra_field=True):
    """A lidar-like cloud: x y z float32, then intensity float32 and ring uint16, 20-byte points."""
    point = np.dtype({"names": ["x", "y", "z", "intensity", "ring"], "formats": ["<f4"] * 4 + ["<u2"],
                      "offsets": [0, 4, 8, 12, 16], "itemsize": 20})
    points = np.zeros(len(xyz), dtype=point)
    for axis, name in enumerate("xyz"):
        points[name] = np.asarray(xyz, dtype=np.float32)[:, axis]
    points["ring"] = np.arange(len(xyz)) % 16
    fields = [SimpleNamespace(name=name, offset=offset, datatype=7, count=1)
              for name, offset in (("x", 0), ("y", 4), ("z", 8), ("intensity", 12))]
    fields.append(SimpleNamespace(name="ring", offset=16, datatype=4, count=1))
    return SimpleNamespace(height=1, width=len(xyz), point_step=20, row_step=20 * len(xyz), fields=fields,
                           data=points.tobytes(), is_bigendian=False, is_dense=False)


# ------------------------------------------------------------------------------------------------
# Point clouds
# ------------------------------------------------------------------------------------------------

LIDAR_POINTS = np.array([
    [5.0, 1.0, 0.5],     # in view: camera (-0.95, -0.6, 4.8)
    [10.0, 0.0, 0.0],    # in view: camera (0.05, -0.1, 9.8)
    [-3.0, 0.0, 0.0],    # behind the camera: z = -3.2
    [2.0, -5.0, 0.0],    # beside it: camera (5.05, -0.1, 1.8) projects to u = 1722.8
    [NAN, 1.0, 1.0],     # invalid return
    [0.25, 0.05, -0.1],  # camera (0, 0, 0.05): 5 cm in front, below min_depth
])
# u = fx X / Z + cx, v = fy Y / Z + cy of the two points in view, worked out by hand.
EXPECTED_U = [500.0 * -0.95 / 4.8 + 320.0, 500.0 * 0.05 / 9.8 + 320.0]
EXPECTED_V = [500.0 * -0.6 / 4.8 + 240.0, 500.0 * -0.1 / 9.8 + 240.0]


def test_lidar_points_project_to_hand_computed_pixels():
    samples = point_samples(LIDAR_POINTS, CAMERA, IMAGE_SIZE, LIDAR_IN_CAMERA, min_depth=0.1)
    assert samples.image_size == IMAGE_SIZE and len(samples) == 2 and samples.available == 2
    np.testing.assert_allclose(samples.u, EXPECTED_U, rtol=1e-12)
    np.testing.assert_allclose(samples.v, EXPECTED_V, rtol=1e-12)
    np.testing.assert_allclose(samples.depth, [4.8, 9.8], rtol=1e-12)  # along the optical axis
    # Without the min_depth bound the point 5 cm in front is kept too.
    assert len(point_samples(LIDAR_POINTS, CAMERA, IMAGE_SIZE, LIDAR_IN_CAMERA)) == 3


def test_pointcloud2_message_with_lidar_fields_gives_the_same_samples():
    from_message = point_samples(pointcloud2(LIDAR_POINTS), camera_info(640, 480, *CAMERA), IMAGE_SIZE,
                                 LIDAR_IN_CAMERA, min_depth=0.1)
    # The message holds float32 coordinates: the same pixels to float32 precision.
    np.testing.assert_allclose(from_message.u, EXPECTED_U, rtol=1e-6)
    np.testing.assert_allclose(from_message.v, EXPECTED_V, rtol=1e-6)
    np.testing.assert_allclose(from_message.depth, [4.8, 9.8], rtol=1e-6)
    assert cloud_xyz(pointcloud2(LIDAR_POINTS)).shape == (5, 3)  # the NaN point is dropped
    no_z = pointcloud2(LIDAR_POINTS)
    no_z.fields = no_z.fields[:2]
    with pytest.raises(ValueError, match="no field z"):
        point_samples(no_z, CAMERA, IMAGE_SIZE)


def test_point_samples_are_cut_evenly_to_max_samples_after_projection():
    # 1000 points straight ahead on a line across the view, 3000 more behind the camera.
    ahead = np.stack([np.full(1000, 4.0), np.linspace(1.0, -1.0, 1000), np.zeros(1000)], axis=1)
    behind = np.stack([np.full(3000, -4.0), np.zeros(3000), np.zeros(3000)], axis=1)
    samples = point_samples(np.concatenate([behind, ahead]), CAMERA, IMAGE_SIZE, LIDAR_IN_CAMERA, max_samples=100)
    assert len(samples) == 100 and samples.available == 1000
    # Every 10th of the points in view (not 100 of the first points offered, which lie behind).
    expected = transform_and_project(ahead[::10])
    np.testing.assert_allclose(samples.u, expected[0], rtol=1e-12)


def transform_and_project(lidar):
    camera = np.stack([-lidar[:, 1] + 0.05, -lidar[:, 2] - 0.10, lidar[:, 0] - 0.20], axis=1)
    return 500.0 * camera[:, 0] / camera[:, 2] + 320.0, 500.0 * camera[:, 1] / camera[:, 2] + 240.0


# ------------------------------------------------------------------------------------------------
# Depth images registered to the camera
# ------------------------------------------------------------------------------------------------

def test_registered_16uc1_millimetres_sample_every_valid_pixel_in_metres():
    millimetres = np.array([[0, 1500, 2000],
                            [65535, 0, 750]], dtype=np.uint16)
    samples = registered_depth_samples(image_message(millimetres, "16UC1"), (2, 3))
    # Raster order, zero = invalid (REP 118); u is the column, v the row.
    assert samples.u.tolist() == [1.0, 2.0, 0.0, 2.0]
    assert samples.v.tolist() == [0.0, 0.0, 1.0, 1.0]
    np.testing.assert_allclose(samples.depth, [1.5, 2.0, 65.535, 0.75], rtol=1e-6)
    bounded = registered_depth_samples(image_message(millimetres, "16UC1"), (2, 3), min_depth=0.75, max_depth=10.0)
    np.testing.assert_allclose(bounded.depth, [1.5, 2.0], rtol=1e-6)  # (0.75, 10] m


def test_registered_32fc1_metres_skip_rep118_invalid_values():
    metres = np.array([[2.5, NAN, math.inf], [-math.inf, -1.0, 0.5]], dtype=np.float32)
    samples = registered_depth_samples(image_message(metres, "32FC1"), (2, 3))
    assert list(zip(samples.u, samples.v, samples.depth)) == [(0.0, 0.0, 2.5), (2.0, 1.0, 0.5)]
    # A plain array in metres works the same (+-Inf and NaN are not measurements there either).
    from_array = registered_depth_samples(metres, (2, 3))
    assert list(zip(from_array.u, from_array.v, from_array.depth)) == [(0.0, 0.0, 2.5), (2.0, 1.0, 0.5)]


def test_registered_depth_must_have_the_camera_size():
    with pytest.raises(ValueError, match="reproject"):
        registered_depth_samples(np.ones((240, 320), np.float32), IMAGE_SIZE)
    with pytest.raises(ValueError, match="min_depth < max_depth"):
        registered_depth_samples(np.ones((2, 2), np.float32), (2, 2), min_depth=3.0, max_depth=2.0)


def test_registered_samples_come_from_a_grid_with_about_max_samples_pixels():
    depth = np.full((48, 64), 3.0, dtype=np.float32)
    depth[:, :32] = NAN  # half of the image has no depth
    # 48 * 64 / 96 = 32 pixels per sample: every isqrt(32) = 5th row and column (10 x 13 = 130
    # grid pixels), of which those in columns 35, 40, ... 60 are valid: 6 per row, all kept.
    samples = registered_depth_samples(depth, (48, 64), max_samples=96)
    assert len(samples) == samples.available == 60
    assert samples.u.tolist() == [35.0, 40.0, 45.0, 50.0, 55.0, 60.0] * 10
    assert samples.v.tolist() == [float(row) for row in range(0, 48, 5) for _ in range(6)]
    # All valid: the 130 grid pixels are more than 100, so 100 of them are kept, evenly in raster order.
    full = registered_depth_samples(np.full((48, 64), 3.0, np.float32), (48, 64), max_samples=100)
    assert len(full) == 100 and full.available == 130
    grid = [(float(u), float(v)) for v in range(0, 48, 5) for u in range(0, 64, 5)]
    assert list(zip(full.u, full.v)) == [grid[k * 130 // 100] for k in range(100)]
    # A message is decoded on the same grid only, and gives the same samples.
    millimetres = np.where(np.isnan(depth), 0, 3000).astype(np.uint16)
    from_message = registered_depth_samples(image_message(millimetres, "16UC1"), (48, 64), max_samples=96)
    assert from_message.u.tolist() == samples.u.tolist() and from_message.v.tolist() == samples.v.tolist()
    np.testing.assert_allclose(from_message.depth, 3.0, rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Depth images of another camera, reprojected
# ------------------------------------------------------------------------------------------------

def test_reprojected_depth_image_hand_computed():
    # A 4x3 depth camera (fx = fy = 100, cx = 1.5, cy = 1) whose optical frame is 5 cm to the
    # left of ours (its origin at x = -0.05 in our frame), same orientation.
    depth = np.array([[NAN, NAN, NAN, NAN],
                      [NAN, NAN, 2.0, NAN],
                      [4.0, NAN, NAN, NAN]], dtype=np.float32)
    depth_camera = camera_info(4, 3, 100.0, 100.0, 1.5, 1.0)
    extrinsic = (-0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)
    samples = reprojected_depth_samples(image_message(depth, "32FC1"), depth_camera, CAMERA, IMAGE_SIZE, extrinsic)
    # Pixel (u=2, v=1) at 2 m: X = (2 - 1.5) * 2 / 100 = 0.01, Y = 0 -> ours (-0.04, 0, 2)
    # Pixel (u=0, v=2) at 4 m: X = (0 - 1.5) * 4 / 100 = -0.06, Y = (2 - 1) * 4 / 100 = 0.04 -> (-0.11, 0.04, 4)
    np.testing.assert_allclose(samples.u, [500.0 * -0.04 / 2.0 + 320.0, 500.0 * -0.11 / 4.0 + 320.0], rtol=1e-12)
    np.testing.assert_allclose(samples.v, [240.0, 500.0 * 0.04 / 4.0 + 240.0], rtol=1e-12)
    np.testing.assert_allclose(samples.depth, [2.0, 4.0], rtol=1e-12)


def test_reprojection_through_a_rotated_depth_camera_hand_computed():
    # The same 4x3 depth camera mounted upside down (turned 180 degrees about its optical axis:
    # quaternion (0, 0, 1, 0)), so its x and y are our -x and -y.
    depth = np.array([[NAN, NAN, NAN, NAN],
                      [NAN, NAN, 2.0, NAN],
                      [4.0, NAN, NAN, NAN]], dtype=np.float32)
    depth_camera = (100.0, 100.0, 1.5, 1.0)
    samples = reprojected_depth_samples(depth, depth_camera, CAMERA, IMAGE_SIZE, (0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0))
    # (0.01, 0, 2) -> (-0.01, 0, 2); (-0.06, 0.04, 4) -> (0.06, -0.04, 4)
    np.testing.assert_allclose(samples.u, [500.0 * -0.01 / 2.0 + 320.0, 500.0 * 0.06 / 4.0 + 320.0], rtol=1e-12)
    np.testing.assert_allclose(samples.v, [240.0, 500.0 * -0.04 / 4.0 + 240.0], rtol=1e-12)
    np.testing.assert_allclose(samples.depth, [2.0, 4.0], rtol=1e-12)
    # Looking backwards (180 degrees about y: z -> -z), everything is behind our camera.
    behind = reprojected_depth_samples(depth, depth_camera, CAMERA, IMAGE_SIZE, (0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0))
    assert len(behind) == 0 and behind.available == 2


def test_reprojection_equals_registration_for_the_same_camera():
    rng = np.random.default_rng(4)
    depth = rng.uniform(0.5, 10.0, IMAGE_SIZE).astype(np.float32)
    registered = registered_depth_samples(depth, IMAGE_SIZE, max_samples=500)
    reprojected = reprojected_depth_samples(depth, CAMERA, CAMERA, IMAGE_SIZE, max_samples=500)
    np.testing.assert_allclose(reprojected.u, registered.u, atol=1e-9)
    np.testing.assert_allclose(reprojected.v, registered.v, atol=1e-9)
    np.testing.assert_allclose(reprojected.depth, registered.depth, rtol=1e-12)


# ------------------------------------------------------------------------------------------------
# The container
# ------------------------------------------------------------------------------------------------

def test_depth_samples_validate_and_subsample():
    with pytest.raises(ValueError, match="same length"):
        DepthSamples([1.0, 2.0], [1.0], [1.0, 2.0], (4, 4))
    with pytest.raises(ValueError, match="image size must be positive"):
        DepthSamples([], [], [], (0, 4))
    samples = DepthSamples(np.arange(10.0), np.zeros(10), np.ones(10), (1, 10))
    assert samples.subsampled(20) is samples
    assert samples.subsampled(4).u.tolist() == [0.0, 2.0, 5.0, 7.0]  # floor(k * 10 / 4)
    assert samples.subsampled(4).available == 10
    assert evenly_spaced(10, 10) is None
    with pytest.raises(ValueError, match="at least 1"):
        evenly_spaced(10, 0)
    assert len(DepthSamples.empty((2, 2))) == 0
