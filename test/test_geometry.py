"""geometry: back-projection against hand-computed points, intrinsics scaling, torch twin."""
import math

import numpy as np
import pytest
import torch

from dpt_ros.geometry import (
    back_project_pixels, check_stride, decimate, depth_to_xyz, depth_to_xyz_torch, intrinsics_from_projection,
    nearest_pixel, points_in_view, project_points, rigid_transform, rotation_from_quaternion, transform_points)

NAN = float("nan")


def test_depth_to_xyz_hand_computed():
    # fx=2, fy=4, cx=1, cy=0.5 on a 2x3 image.
    depth = np.array([[2.0, 4.0, 1.0],
                      [0.5, 8.0, 3.0]], dtype=np.float32)
    xyz = depth_to_xyz(depth, fx=2.0, fy=4.0, cx=1.0, cy=0.5)
    assert xyz.dtype == np.float32 and xyz.shape == (2, 3, 3)
    # X = (u - cx) Z / fx, Y = (v - cy) Z / fy
    expected = np.array([
        [[(0 - 1) * 2.0 / 2, (0 - 0.5) * 2.0 / 4, 2.0],
         [0.0, (0 - 0.5) * 4.0 / 4, 4.0],
         [(2 - 1) * 1.0 / 2, (0 - 0.5) * 1.0 / 4, 1.0]],
        [[(0 - 1) * 0.5 / 2, (1 - 0.5) * 0.5 / 4, 0.5],
         [0.0, (1 - 0.5) * 8.0 / 4, 8.0],
         [(2 - 1) * 3.0 / 2, (1 - 0.5) * 3.0 / 4, 3.0]],
    ])
    np.testing.assert_allclose(xyz, expected, rtol=1e-6, atol=0)


def test_invalid_depths_give_nan_points():
    depth = np.array([[1.0, NAN, 0.0, -1.0, math.inf, 5.0, 5.0001]], dtype=np.float32)
    xyz = depth_to_xyz(depth, 1.0, 1.0, 0.0, 0.0, max_range=5.0)
    valid = np.isfinite(xyz).all(axis=-1)
    assert valid.tolist() == [[True, False, False, False, False, True, False]]
    assert np.isnan(xyz[~valid]).all()  # all three coordinates NaN, not just z
    np.testing.assert_allclose(xyz[0, 5], [25.0, 0.0, 5.0])


def test_non_square_pixels_and_resized_intrinsics():
    # Calibrated at 480x640 (fx=500, fy=510, cx=319.5, cy=239.5); depth estimated at 120x160.
    P = [500.0, 0.0, 319.5, 0.0, 0.0, 510.0, 239.5, 0.0, 0.0, 0.0, 1.0, 0.0]
    fx, fy, cx, cy = intrinsics_from_projection(P, from_size=(480, 640), to_size=(120, 160))
    assert (fx, fy, cx, cy) == (125.0, 127.5, 79.875, 59.875)
    depth = np.full((120, 160), 2.0, dtype=np.float32)
    depth[10, 20] = 4.0
    xyz = depth_to_xyz(depth, fx, fy, cx, cy)
    np.testing.assert_allclose(xyz[10, 20], [(20 - 79.875) * 4.0 / 125.0,
                                              (10 - 59.875) * 4.0 / 127.5, 4.0], rtol=1e-6)
    np.testing.assert_allclose(xyz[119, 159], [(159 - 79.875) * 2.0 / 125.0,
                                                (119 - 59.875) * 2.0 / 127.5, 2.0], rtol=1e-6)


def test_intrinsics_from_projection_shapes_and_errors():
    P = np.array([[600.0, 0, 320, -30.0], [0, 610.0, 240, 0], [0, 0, 1, 0]])
    assert intrinsics_from_projection(P) == (600.0, 610.0, 320.0, 240.0)
    # Anisotropic resize: x and y scale independently.
    assert intrinsics_from_projection(P, (480, 640), (240, 1280)) == (1200.0, 305.0, 640.0, 120.0)
    with pytest.raises(ValueError, match="focal length is zero"):
        intrinsics_from_projection([0.0] * 12)
    with pytest.raises(ValueError, match="12 elements"):
        intrinsics_from_projection([1.0] * 9)
    with pytest.raises(ValueError, match="both from_size and to_size"):
        intrinsics_from_projection(P, from_size=(480, 640))
    with pytest.raises(ValueError, match="sizes must be positive"):
        intrinsics_from_projection(P, (480, 640), (0, 640))
    with pytest.raises(ValueError, match="not finite"):
        intrinsics_from_projection([NAN] * 12)


def test_depth_to_xyz_rejects_bad_arguments():
    with pytest.raises(ValueError, match="focal length is zero"):
        depth_to_xyz(np.ones((2, 2)), 0.0, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match=r"depth must be \(H, W\)"):
        depth_to_xyz(np.ones((2, 2, 1)), 1.0, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="focal length is zero"):
        depth_to_xyz_torch(torch.ones(2, 2), 1.0, 0.0, 0.0, 0.0)


def random_depth(seed, shape=(48, 64)):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.1, 20.0, shape).astype(np.float32)
    flat = depth.reshape(-1)
    idx = rng.choice(flat.size, 40, replace=False)
    flat[idx[:10]] = np.nan
    flat[idx[10:20]] = 0.0
    flat[idx[20:30]] = np.inf
    flat[idx[30:]] = 30.0  # over max_range
    return depth


def test_torch_matches_numpy_bit_for_bit():
    depth = random_depth(1)
    args = (512.3, 498.7, 31.2, 23.9)
    ref = depth_to_xyz(depth, *args, max_range=25.0)
    out = depth_to_xyz_torch(torch.from_numpy(depth), *args, max_range=25.0)
    assert out.dtype == torch.float32 and out.shape == (48, 64, 3)
    np.testing.assert_array_equal(out.numpy(), ref)  # NaN positions must match too
    # Batched input and float64 input give the same points.
    batch = torch.from_numpy(np.stack([depth, depth * 0.5]))
    out_b = depth_to_xyz_torch(batch.double(), *args, max_range=25.0)
    np.testing.assert_array_equal(out_b[0].numpy(), ref)
    ref_half = depth_to_xyz(depth * 0.5, *args, max_range=25.0)
    np.testing.assert_array_equal(out_b[1].numpy(), ref_half)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_torch_on_gpu_matches_numpy():
    depth = random_depth(2)
    ref = depth_to_xyz(depth, 500.0, 500.0, 32.0, 24.0, max_range=25.0)
    out = depth_to_xyz_torch(torch.from_numpy(depth).cuda(), 500.0, 500.0, 32.0, 24.0,
                             max_range=25.0)
    assert out.device.type == "cuda"
    np.testing.assert_array_equal(out.cpu().numpy(), ref)


def test_decimate_keeps_exact_pixels():
    image = np.arange(7 * 5).reshape(7, 5)
    out = decimate(image, 3)
    assert out.shape == (3, 2)
    np.testing.assert_array_equal(out, [[0, 3], [15, 18], [30, 33]])
    assert decimate(image, 1) is image
    t = torch.arange(12).reshape(4, 3)
    assert decimate(t, 2).tolist() == [[0, 2], [6, 8]]
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="positive integer"):
            check_stride(bad)


def _camera_info(binning=(0, 0), roi=(0, 0, 0, 0), d=()):
    from types import SimpleNamespace

    x_offset, y_offset, roi_width, roi_height = roi
    return SimpleNamespace(
        width=640, height=480, p=[600.0, 0.0, 320.0, 0.0, 0.0, 610.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0],
        binning_x=binning[0], binning_y=binning[1], d=list(d),
        roi=SimpleNamespace(x_offset=x_offset, y_offset=y_offset, width=roi_width, height=roi_height))


@pytest.mark.parametrize("binning, roi, image_size, expected", [
    ((0, 0), (0, 0, 0, 0), (480, 640), (600.0, 610.0, 320.0, 240.0)),       # as calibrated
    ((1, 1), (0, 0, 0, 0), (480, 640), (600.0, 610.0, 320.0, 240.0)),       # binning 1 = none
    ((2, 2), (0, 0, 0, 0), (240, 320), (300.0, 305.0, 160.0, 120.0)),       # 2x2 binning
    ((2, 1), (0, 0, 0, 0), (480, 320), (300.0, 610.0, 160.0, 240.0)),       # horizontal binning only
    ((0, 0), (100, 50, 320, 240), (240, 320), (600.0, 610.0, 220.0, 190.0)),  # ROI: centre moves
    ((2, 2), (100, 50, 320, 240), (120, 160), (300.0, 305.0, 110.0, 95.0)),   # ROI, then binning
    ((0, 0), (0, 0, 0, 0), (240, 320), (300.0, 305.0, 160.0, 120.0)),       # uniformly resized to half
    ((0, 0), (0, 0, 0, 0), (960, 1280), (1200.0, 1220.0, 640.0, 480.0)),    # and to double
])
def test_camera_intrinsics_follow_binning_roi_and_uniform_resize(binning, roi, image_size, expected):
    from dpt_ros.geometry import camera_intrinsics

    assert camera_intrinsics(_camera_info(binning, roi), *image_size) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("binning, roi, image_size, fragment", [
    ((0, 0), (0, 0, 0, 0), (480, 320), "not a uniform rescale"),
    ((2, 1), (0, 0, 0, 0), (240, 320), "describes a 320x480 image"),
    ((0, 0), (400, 0, 320, 240), (240, 320), "outside the 640x480 sensor"),
])
def test_camera_intrinsics_refuse_a_size_they_do_not_describe(binning, roi, image_size, fragment):
    from dpt_ros.geometry import camera_intrinsics

    with pytest.raises(ValueError, match=fragment):
        camera_intrinsics(_camera_info(binning, roi), *image_size)


def test_camera_intrinsics_refuse_an_uncalibrated_camera():
    from dpt_ros.geometry import camera_intrinsics

    info = _camera_info()
    info.p = [0.0] * 12
    with pytest.raises(ValueError, match="uncalibrated"):
        camera_intrinsics(info, 480, 640)


def test_distortion_is_detected():
    from dpt_ros.geometry import has_distortion

    assert not has_distortion(_camera_info(d=()))
    assert not has_distortion(_camera_info(d=(0.0,) * 5))
    assert has_distortion(_camera_info(d=(-0.28, 0.07, 0.0, 0.0, 0.0)))


# ------------------------------------------------------------------------------------------------
# Projection of points into the image, and static extrinsics
# ------------------------------------------------------------------------------------------------

# Pose of a lidar frame (x forward, y left, z up; REP 103) in a camera's optical frame (x right,
# y down, z forward): lidar x -> camera z, lidar y -> camera -x, lidar z -> camera -y, its origin
# 5 cm right, 10 cm above and 20 cm behind the camera.
LIDAR_IN_CAMERA = (0.05, -0.10, -0.20, 0.5, -0.5, 0.5, 0.5)


def test_project_points_hand_computed():
    points = np.array([[0.0, 0.0, 2.0], [1.0, -0.5, 4.0], [-0.3, 0.6, 1.5]])
    u, v = project_points(points, fx=500.0, fy=400.0, cx=320.0, cy=240.5)
    np.testing.assert_allclose(u, [320.0, 500.0 * 1.0 / 4.0 + 320.0, 500.0 * -0.3 / 1.5 + 320.0], rtol=1e-12)
    np.testing.assert_allclose(v, [240.5, 400.0 * -0.5 / 4.0 + 240.5, 400.0 * 0.6 / 1.5 + 240.5], rtol=1e-12)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        project_points(np.ones((2, 2)), 1.0, 1.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="focal length is zero"):
        project_points(points, 0.0, 1.0, 0.0, 0.0)


def test_back_project_pixels_is_the_inverse_of_projection_and_agrees_with_depth_to_xyz():
    fx, fy, cx, cy = 512.3, 498.7, 31.2, 23.9
    depth = random_depth(3)
    rows, cols = np.nonzero(np.isfinite(depth) & (depth > 0) & (depth < 25.0))
    points = back_project_pixels(cols, rows, depth[rows, cols], fx, fy, cx, cy)
    # The same points as the full-image back-projection (which rounds its factors to float32).
    np.testing.assert_allclose(points, depth_to_xyz(depth, fx, fy, cx, cy)[rows, cols], rtol=1e-6, atol=1e-6)
    u, v = project_points(points, fx, fy, cx, cy)
    np.testing.assert_allclose(u, cols, atol=1e-9)
    np.testing.assert_allclose(v, rows, atol=1e-9)


def test_points_in_view_keeps_points_in_front_and_on_a_pixel():
    # A 4x3 image: u in [-0.5, 3.5), v in [-0.5, 2.5) round to a pixel inside.
    u = np.array([-0.5, -0.51, 3.49, 3.5, 1.0, 1.0, 1.0, 1.0, 1.0, NAN])
    v = np.array([0.0, 0.0, 0.0, 0.0, -0.5, 2.5, 1.0, 1.0, 1.0, 1.0])
    z = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0, 0.3, 9.0, 1.0])
    keep = points_in_view(u, v, z, height=3, width=4, min_depth=0.3, max_depth=8.0)
    assert keep.tolist() == [True, False, True, False, True, False, False, False, False, False]
    assert nearest_pixel([-0.5, 0.49, 0.5, 3.49]).tolist() == [0, 0, 1, 3]


def test_rotation_from_quaternion_known_rotations():
    np.testing.assert_allclose(rotation_from_quaternion(0, 0, 0, 1), np.eye(3))
    # 90 degrees about z: x -> y, y -> -x.
    half = math.sqrt(0.5)
    np.testing.assert_allclose(rotation_from_quaternion(0, 0, half, half),
                               [[0, -1, 0], [1, 0, 0], [0, 0, 1]], atol=1e-12)
    # Not normalised (as typed into a YAML file): the same rotation.
    np.testing.assert_allclose(rotation_from_quaternion(0, 0, 2.0, 2.0), rotation_from_quaternion(0, 0, half, half),
                               atol=1e-12)
    np.testing.assert_allclose(rotation_from_quaternion(*LIDAR_IN_CAMERA[3:]),
                               [[0, -1, 0], [0, 0, -1], [1, 0, 0]], atol=1e-12)
    with pytest.raises(ValueError, match="not a rotation"):
        rotation_from_quaternion(0, 0, 0, 0)


def test_transform_points_with_a_lidar_extrinsic_hand_computed():
    lidar = np.array([[5.0, 1.0, 0.5], [10.0, 0.0, 0.0]])
    camera = transform_points(lidar, LIDAR_IN_CAMERA)
    # R p + t: (x, y, z)_lidar -> (-y, -z, x) + (0.05, -0.10, -0.20)
    np.testing.assert_allclose(camera, [[-1.0 + 0.05, -0.5 - 0.10, 5.0 - 0.20],
                                        [0.0 + 0.05, 0.0 - 0.10, 10.0 - 0.20]], atol=1e-12)
    rotation, translation = rigid_transform(LIDAR_IN_CAMERA)
    assert translation.tolist() == [0.05, -0.10, -0.20]
    for bad in ([0.0] * 6, [0.0, 0.0, NAN, 0.0, 0.0, 0.0, 1.0]):
        with pytest.raises(ValueError, match="7 finite numbers"):
            rigid_transform(bad)
    with pytest.raises(ValueError, match="not a rotation"):
        transform_points(lidar, [0.0] * 7)
