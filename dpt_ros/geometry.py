"""Depth + pinhole intrinsics -> 3-D points and back (points -> pixels), static extrinsics
(x y z qx qy qz qw) between a sensor frame and the camera, and the intrinsics bookkeeping.

Conventions (depth_image_proc / image_geometry): pixel (u, v) is column u, row v with integer
coordinates at pixel centres; X = (u - cx) * Z / fx, Y = (v - cy) * Z / fy, Z = depth, in the
camera's optical frame (x right, y down, z forward).  Invalid depth gives a NaN point.

The numpy and torch versions compute the per-column/per-row factors (u - cx) / fx and
(v - cy) / fy in float64, round them to float32 and multiply by Z in float32, so both produce
bit-identical results on the same input.
"""
from __future__ import annotations

import math

import numpy as np


def _check_intrinsics(fx: float, fy: float, cx: float, cy: float) -> None:
    for name, value in (("fx", fx), ("fy", fy), ("cx", cx), ("cy", cy)):
        if not math.isfinite(value):
            raise ValueError(f"camera intrinsic {name} is not finite ({value})")
    if fx == 0 or fy == 0:
        raise ValueError(
            f"focal length is zero (fx={fx}, fy={fy}): the camera is uncalibrated "
            "(CameraInfo.P all zeros?)")


def _pixel_factors(height: int, width: int, fx: float, fy: float, cx: float, cy: float):
    """float32 (u - cx) / fx for every column and (v - cy) / fy for every row."""
    col = ((np.arange(width, dtype=np.float64) - cx) / fx).astype(np.float32)
    row = ((np.arange(height, dtype=np.float64) - cy) / fy).astype(np.float32)
    return col, row


def depth_to_xyz(depth: np.ndarray, fx: float, fy: float, cx: float, cy: float,
                 max_range: float = math.inf) -> np.ndarray:
    """Back-project an (H, W) depth image (metres) to an (H, W, 3) float32 xyz array.

    A pixel gives NaN for all three coordinates when its depth is NaN, <= 0, infinite or
    greater than ``max_range`` (depth_image_proc marks such points bad the same way).
    """
    fx, fy, cx, cy = float(fx), float(fy), float(cx), float(cy)
    _check_intrinsics(fx, fy, cx, cy)
    depth = np.asarray(depth)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
    height, width = depth.shape
    z = depth.astype(np.float32, copy=True)
    np.copyto(z, np.nan, where=~((z > 0) & (z <= max_range) & np.isfinite(z)))
    col, row = _pixel_factors(height, width, fx, fy, cx, cy)
    xyz = np.empty((height, width, 3), dtype=np.float32)
    np.multiply(z, col[None, :], out=xyz[:, :, 0])
    np.multiply(z, row[:, None], out=xyz[:, :, 1])
    xyz[:, :, 2] = z
    return xyz


def depth_to_xyz_torch(depth, fx: float, fy: float, cx: float, cy: float,
                       max_range: float = math.inf):
    """Torch twin of :func:`depth_to_xyz` for depth already on a device.

    ``depth`` is an (H, W) or (B, H, W) tensor; the result has shape (..., H, W, 3), dtype float32
    and lives on the same device.  Results equal the numpy version bit for bit.
    """
    import torch

    fx, fy, cx, cy = float(fx), float(fy), float(cx), float(cy)
    _check_intrinsics(fx, fy, cx, cy)
    if depth.ndim not in (2, 3):
        raise ValueError(f"depth must be (H, W) or (B, H, W), got shape {tuple(depth.shape)}")
    height, width = depth.shape[-2:]
    z = depth.to(torch.float32)
    valid = (z > 0) & (z <= max_range) & torch.isfinite(z)
    z = torch.where(valid, z, torch.full_like(z, float("nan")))
    col, row = _pixel_factors(height, width, fx, fy, cx, cy)
    col_t = torch.from_numpy(col).to(z.device)
    row_t = torch.from_numpy(row).to(z.device)
    return torch.stack((z * col_t, z * row_t[:, None], z), dim=-1)


def back_project_pixels(u, v, depth, fx: float, fy: float, cx: float, cy: float) -> np.ndarray:
    """(N, 3) float64 points of pixels (u, v) at ``depth`` metres: the pointwise form of
    :func:`depth_to_xyz` (same convention), for the few pixels a sparse sensor measured."""
    fx, fy, cx, cy = float(fx), float(fy), float(cx), float(cy)
    _check_intrinsics(fx, fy, cx, cy)
    z = np.asarray(depth, dtype=np.float64)
    u, v = np.asarray(u, dtype=np.float64), np.asarray(v, dtype=np.float64)
    return np.stack(((u - cx) * z / fx, (v - cy) * z / fy, z), axis=-1)


def project_points(points, fx: float, fy: float, cx: float, cy: float) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (u, v) of (N, 3) points in the camera's optical frame: the inverse of
    :func:`back_project_pixels`, u = fx * X / Z + cx, v = fy * Y / Z + cy (float64).

    Only the intrinsic part of CameraInfo.P is used: the points are in this camera's own optical
    frame, as the clouds :func:`depth_to_xyz` makes are (a stereo right camera's Tx is ignored).
    Points with Z <= 0 get meaningless pixels; :func:`points_in_view` keeps only usable ones."""
    fx, fy, cx, cy = float(fx), float(fy), float(cx), float(cy)
    _check_intrinsics(fx, fy, cx, cy)
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got shape {points.shape}")
    with np.errstate(divide="ignore", invalid="ignore"):
        inverse_z = 1.0 / points[:, 2]
        return points[:, 0] * inverse_z * fx + cx, points[:, 1] * inverse_z * fy + cy


def points_in_view(u, v, z, height: int, width: int, min_depth: float = 0.0,
                   max_depth: float = math.inf) -> np.ndarray:
    """Mask of projected points a (height x width) image sees: in front of the camera (Z above
    ``min_depth``, at most ``max_depth``) and on a pixel, i.e. -0.5 <= u < width - 0.5 and the
    same for v (pixel centres are at integer coordinates, so these round to a pixel inside)."""
    u, v, z = (np.asarray(a, dtype=np.float64) for a in (u, v, z))
    with np.errstate(invalid="ignore"):
        return ((z > max(min_depth, 0.0)) & (z <= max_depth)
                & (u >= -0.5) & (u < width - 0.5) & (v >= -0.5) & (v < height - 0.5))


def nearest_pixel(coordinate) -> np.ndarray:
    """Index of the pixel whose centre is nearest to a pixel coordinate (halves round up)."""
    return np.floor(np.asarray(coordinate, dtype=np.float64) + 0.5).astype(np.intp)


def rotation_from_quaternion(qx: float, qy: float, qz: float, qw: float) -> np.ndarray:
    """3x3 rotation matrix of a quaternion (x, y, z, w order, as geometry_msgs writes it).

    The quaternion is normalised first (YAML values rarely have unit norm to the last digit); a
    zero or non-finite one raises ValueError."""
    q = np.array([qx, qy, qz, qw], dtype=np.float64)
    norm = float(np.linalg.norm(q))
    if not math.isfinite(norm) or norm < 1e-9:
        raise ValueError(f"quaternion (x y z w) = {tuple(q.tolist())} is not a rotation (zero or non-finite)")
    x, y, z, w = q / norm
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def rigid_transform(extrinsic) -> tuple[np.ndarray, np.ndarray]:
    """(R, t) of a static extrinsic ``x y z qx qy qz qw``: the pose of a sensor frame in the
    camera frame (what tf2's lookup_transform(camera_frame, sensor_frame) returns), so that a
    point p in the sensor frame is R @ p + t in the camera frame.  Raises ValueError unless there
    are exactly 7 finite numbers and the quaternion is a rotation."""
    values = np.asarray(extrinsic, dtype=np.float64).reshape(-1)
    if values.size != 7 or not np.isfinite(values).all():
        raise ValueError(f"an extrinsic is 7 finite numbers x y z qx qy qz qw (metres, quaternion); "
                         f"got {values.tolist()}")
    return rotation_from_quaternion(*values[3:]), values[:3].copy()


def transform_points(points, extrinsic) -> np.ndarray:
    """(N, 3) float64 points of a sensor frame expressed in the camera frame by
    :func:`rigid_transform`.

    Written out per coordinate rather than as ``points @ R.T``: numpy hands that product to
    OpenBLAS, whose threads stall when other processes hold the cores, while element-wise numpy
    runs on one core at a steady speed (benchmarks/NOTES.md, section 10).  The result is the
    transposed view of a (3, N) array, so each coordinate is contiguous for the projection."""
    rotation, translation = rigid_transform(extrinsic)
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got shape {points.shape}")
    coordinates = [points[:, axis] for axis in range(3)]
    out = np.empty((3, points.shape[0]))
    term = np.empty(points.shape[0])
    for axis in range(3):
        row, column = rotation[axis], out[axis]
        np.multiply(coordinates[0], row[0], out=column)
        for k in (1, 2):
            np.multiply(coordinates[k], row[k], out=term)
            column += term
        column += translation[axis]
    return out.T


def intrinsics_from_projection(P, from_size=None,
                               to_size=None) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) from CameraInfo.P, optionally rescaled to another image size.

    ``P`` is the 12-element row-major 3x4 projection matrix (or a 3x4 array).  ``from_size`` and
    ``to_size`` are (height, width) of the calibrated image and of the image the intrinsics are
    wanted for; fx and cx scale by to_w / from_w, fy and cy by to_h / from_h - exactly what
    image_proc's resize node does to K and P.
    """
    p = np.asarray(P, dtype=np.float64).reshape(-1)
    if p.size != 12:
        raise ValueError(f"P must have 12 elements (3x4 row-major), got {p.size}")
    fx, cx, fy, cy = p[0], p[2], p[5], p[6]
    if (from_size is None) != (to_size is None):
        raise ValueError("give both from_size and to_size, or neither")
    if from_size is not None:
        (from_h, from_w), (to_h, to_w) = from_size, to_size
        if min(from_h, from_w, to_h, to_w) <= 0:
            raise ValueError(f"image sizes must be positive: from {from_size}, to {to_size}")
        sx, sy = to_w / from_w, to_h / from_h
        fx, cx, fy, cy = fx * sx, cx * sx, fy * sy, cy * sy
    fx, fy, cx, cy = float(fx), float(fy), float(cx), float(cy)
    _check_intrinsics(fx, fy, cx, cy)
    return fx, fy, cx, cy


def camera_intrinsics(info, height: int, width: int) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) of an image of ``height`` x ``width`` pixels described by a CameraInfo.

    ``info`` is duck-typed (rclpy or rosbags CameraInfo): ``p``, ``width``, ``height``,
    ``binning_x``, ``binning_y`` and ``roi`` (``x_offset``, ``y_offset``, ``width``, ``height``).
    As image_geometry's PinholeCameraModel does, the calibration (P, at the full sensor
    resolution width x height) is first cut to the ROI (an ROI of zero size is the full image)
    and divided by the binning (0 means 1): fx' = fx / bx, cx' = (cx - x_offset) / bx, and so
    for y.  An image of exactly that size gets those intrinsics; an image that is that one
    rescaled uniformly (the same factor on both axes, to the pixel) gets them rescaled as
    image_proc's resize does.  Any other size raises ValueError naming both sizes, as does an
    ROI outside the sensor or an uncalibrated P.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    binning_x = max(1, int(info.binning_x))
    binning_y = max(1, int(info.binning_y))
    roi = info.roi
    full_roi = roi.width == 0 or roi.height == 0
    x_offset, y_offset = (0, 0) if full_roi else (int(roi.x_offset), int(roi.y_offset))
    roi_width, roi_height = (int(info.width), int(info.height)) if full_roi else (int(roi.width), int(roi.height))
    if not full_roi and info.width and info.height and (
            x_offset + roi_width > info.width or y_offset + roi_height > info.height):
        raise ValueError(f"camera_info ROI {roi_width}x{roi_height}+{x_offset}+{y_offset} lies outside the "
                         f"{info.width}x{info.height} sensor")
    expected_w, expected_h = roi_width // binning_x, roi_height // binning_y
    p = np.asarray(info.p, dtype=np.float64).reshape(-1)
    if p.size != 12:
        raise ValueError(f"P must have 12 elements (3x4 row-major), got {p.size}")
    fx, fy = p[0] / binning_x, p[5] / binning_y
    cx, cy = (p[2] - x_offset) / binning_x, (p[6] - y_offset) / binning_y
    if (height, width) != (expected_h, expected_w):
        if expected_w <= 0 or expected_h <= 0:
            raise ValueError(f"camera_info gives no image size ({info.width}x{info.height}, binning "
                             f"{binning_x}x{binning_y}) to match the {width}x{height} image against")
        scale = width / expected_w
        if round(expected_h * scale) != height:
            raise ValueError(f"camera_info describes a {expected_w}x{expected_h} image (size, ROI and binning) "
                             f"but the image is {width}x{height}, not a uniform rescale of it")
        fx, cx, fy, cy = fx * scale, cx * scale, fy * height / expected_h, cy * height / expected_h
    fx, fy, cx, cy = float(fx), float(fy), float(cx), float(cy)
    _check_intrinsics(fx, fy, cx, cy)
    return fx, fy, cx, cy


def has_distortion(info) -> bool:
    """True when a CameraInfo declares non-zero distortion coefficients: such an image is not
    rectified, and back-projecting it through P places its points slightly wrong."""
    return any(float(value) != 0.0 for value in info.d)


def check_stride(stride) -> int:
    """Validate a decimation stride (a positive integer) and return it as int."""
    if isinstance(stride, bool) or int(stride) != stride or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    return int(stride)


def decimate(image, stride: int = 1):
    """Every ``stride``-th row and column (a view), starting at pixel (0, 0).

    Works on numpy arrays and torch tensors with rows and columns as the first two axes, e.g.
    (H, W), (H, W, 3).  The output has ceil(H / stride) rows and ceil(W / stride) columns, and
    pixel (i, j) of it is pixel (i*stride, j*stride) of the input, so decimating xyz keeps every
    kept point exactly where full-resolution back-projection put it.
    """
    stride = check_stride(stride)
    if stride == 1:
        return image
    return image[::stride, ::stride]
