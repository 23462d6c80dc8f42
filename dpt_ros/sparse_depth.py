"""Sparse metric depth samples in the camera image, from a depth image or a point cloud (ROS-free).

The online aligner (dpt_ros.alignment) fits the model's relative inverse depth to metric depth
measured at a few pixels of the camera image.  This module turns what a robot's metric sensors
publish into such samples:

* a depth image registered to the camera (an RGB-D camera's aligned depth: same size and
  intrinsics): every valid pixel is a sample where it is;
* a depth image of another camera (its own intrinsics, and the static extrinsic of its optical
  frame in ours): valid pixels are back-projected, moved into our optical frame and projected;
* a point cloud (lidar), in its sensor frame: moved into our optical frame by a static extrinsic
  and projected.

Projected samples are kept only in front of the camera and inside the image.  Their pixel
coordinates stay fractional (the aligner reads the prediction at the nearest pixel) and their
depth is the distance along the camera's optical axis (REP 118), not the range.  Depth images
arrive as arrays in metres or as Image-like messages (16UC1 millimetres or 32FC1 metres, REP 118
invalid values, decoded by dpt_ros.image_codec); clouds as (N, 3) arrays or PointCloud2-like
messages (read by dpt_ros.cloud).  Every source gives at most ``max_samples`` samples, so the aligner's
cost stays bounded whatever the sensor's resolution: a depth image is read on a regular grid of
about that many pixels (the rest is never decoded), a cloud's points in view are cut evenly in
scan order.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dpt_ros.geometry import (
    back_project_pixels, camera_intrinsics, points_in_view, project_points, transform_points)

# Enough samples to fit two parameters to well under 1 % on a noisy scene, few enough that the
# robust fit stays far below the 2 ms budget (benchmarks/alignment.py).
DEFAULT_MAX_SAMPLES = 4096
IDENTITY_EXTRINSIC = (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0)


@dataclass(frozen=True, eq=False)  # numpy fields: compare the arrays, not the objects
class DepthSamples:
    """Metric depth at N points of a camera image of ``image_size`` = (height, width) pixels.

    ``u`` (column) and ``v`` (row) are pixel coordinates with pixel centres at integers (the
    convention of dpt_ros.geometry); ``depth`` is metres along the optical axis.  All three are
    float64 arrays of shape (N,)."""

    u: np.ndarray
    v: np.ndarray
    depth: np.ndarray
    image_size: tuple[int, int]
    # Valid samples the source offered before the max_samples cut (for a depth image: valid
    # pixels of its sampling grid), for logs and diagnostics.
    available: int = field(default=-1, compare=False)

    def __post_init__(self):
        arrays = [np.asarray(a, dtype=np.float64).reshape(-1) for a in (self.u, self.v, self.depth)]
        if len({a.size for a in arrays}) != 1:
            raise ValueError(f"u, v and depth must have the same length, got {[a.size for a in arrays]}")
        height, width = (int(n) for n in self.image_size)
        if height <= 0 or width <= 0:
            raise ValueError(f"image size must be positive, got {self.image_size}")
        for name, array in zip(("u", "v", "depth"), arrays):
            object.__setattr__(self, name, array)
        object.__setattr__(self, "image_size", (height, width))
        if self.available < 0:
            object.__setattr__(self, "available", arrays[0].size)

    def __len__(self) -> int:
        return self.depth.size

    @classmethod
    def empty(cls, image_size: tuple[int, int]) -> "DepthSamples":
        return cls(np.empty(0), np.empty(0), np.empty(0), image_size, available=0)

    def subsampled(self, max_samples: int) -> "DepthSamples":
        """At most ``max_samples`` of these samples, evenly spaced in their order (self if fewer)."""
        keep = evenly_spaced(len(self), max_samples)
        if keep is None:
            return self
        return DepthSamples(self.u[keep], self.v[keep], self.depth[keep], self.image_size, available=self.available)


def evenly_spaced(count: int, max_count: int) -> np.ndarray | None:
    """Indices of ``max_count`` items evenly spread over ``count`` (None when all fit).

    Deterministic, so the same input always gives the same samples, and spread over the whole
    image (or scan) when the items come in raster (or scan) order."""
    max_count = int(max_count)
    if max_count < 1:
        raise ValueError(f"max_samples must be at least 1, got {max_count}")
    if count <= max_count:
        return None
    return (np.arange(max_count, dtype=np.int64) * count) // max_count


def _camera_tuple(camera, height: int, width: int) -> tuple[float, float, float, float]:
    """(fx, fy, cx, cy) from a 4-tuple, an object with fx/fy/cx/cy (pipeline.Intrinsics) or a
    CameraInfo-like message (through geometry.camera_intrinsics for an image of that size)."""
    if hasattr(camera, "p"):
        return camera_intrinsics(camera, height, width)
    if hasattr(camera, "fx"):
        return float(camera.fx), float(camera.fy), float(camera.cx), float(camera.cy)
    fx, fy, cx, cy = (float(value) for value in camera)
    return fx, fy, cx, cy


def _depth_shape(depth) -> tuple[int, int]:
    """(height, width) of a depth image message or array, without decoding it."""
    if hasattr(depth, "encoding"):
        return int(depth.height), int(depth.width)
    shape = np.shape(depth)
    if len(shape) != 2:
        raise ValueError(f"a depth image must be (H, W), got shape {shape}")
    return int(shape[0]), int(shape[1])


def _sampling_stride(height: int, width: int, max_samples: int) -> int:
    """The largest grid stride that still leaves at least ``max_samples`` pixels on the grid: a
    640x480 image with 4096 samples is read every 8th row and column (4800 pixels), so the
    rest of the image is never decoded."""
    return max(1, math.isqrt(height * width // max(1, int(max_samples))))


def _depth_metres(depth, stride: int) -> np.ndarray:
    """Every stride-th row and column of a depth image, in metres (NaN or +-Inf invalid)."""
    if hasattr(depth, "encoding"):
        from dpt_ros.image_codec import depth_image_to_metres

        return depth_image_to_metres(depth, stride=stride)
    return np.asarray(depth)[::stride, ::stride]


def _check_range(min_depth: float, max_depth: float) -> None:
    if not (min_depth >= 0.0 and max_depth > min_depth):
        raise ValueError(f"need 0 <= min_depth < max_depth, got {min_depth} and {max_depth}")


def _valid_pixels(depth, min_depth: float, max_depth: float, max_samples: int):
    """Rows, columns and depths of at most max_samples valid pixels of a depth image (message or
    array), from a regular grid over the image (cut evenly in raster order if the grid still
    holds more), and the number of valid grid pixels."""
    stride = _sampling_stride(*_depth_shape(depth), max_samples)
    grid = _depth_metres(depth, stride)
    with np.errstate(invalid="ignore"):
        # NaN fails both bounds; +-Inf (REP 118: out of range) is not a measurement either.
        valid = (grid > min_depth) & (grid <= max_depth) & np.isfinite(grid)
    flat = np.flatnonzero(valid)
    available = flat.size
    keep = evenly_spaced(flat.size, max_samples)
    if keep is not None:
        flat = flat[keep]
    rows, cols = np.divmod(flat, grid.shape[1])
    return rows * stride, cols * stride, grid.reshape(-1)[flat], available


def registered_depth_samples(depth, image_size: tuple[int, int], *, max_samples: int = DEFAULT_MAX_SAMPLES,
                             min_depth: float = 0.0, max_depth: float = math.inf) -> DepthSamples:
    """Samples of a depth image registered to the camera: same size and intrinsics, so each
    valid pixel (finite depth in (min_depth, max_depth] metres) is a sample at its own pixel.
    The pixels are those of a regular grid with at least ``max_samples`` pixels (every 8th row
    and column at 640x480 and 4096 samples), cut evenly in raster order if more are valid;
    ``available`` counts the valid grid pixels.

    ``depth`` is an (H, W) array in metres or an Image-like message (16UC1 mm / 32FC1 m).  A
    depth image of another size is not registered: ValueError, which names
    :func:`reprojected_depth_samples` for that case."""
    _check_range(min_depth, max_depth)
    height, width = (int(n) for n in image_size)
    depth_height, depth_width = _depth_shape(depth)
    if (depth_height, depth_width) != (height, width):
        raise ValueError(f"the depth image is {depth_width}x{depth_height} but the camera image is "
                         f"{width}x{height}: a registered depth image has the camera's size and intrinsics "
                         "(reproject it through its own camera_info and extrinsic instead)")
    rows, cols, values, available = _valid_pixels(depth, min_depth, max_depth, max_samples)
    return DepthSamples(cols, rows, values, (height, width), available=available)


def reprojected_depth_samples(depth, depth_camera, camera, image_size: tuple[int, int],
                              extrinsic=IDENTITY_EXTRINSIC, *, max_samples: int = DEFAULT_MAX_SAMPLES,
                              min_depth: float = 0.0, max_depth: float = math.inf) -> DepthSamples:
    """Samples of a depth image from another camera (a stereo or RGB-D depth camera that is not
    registered to ours).

    Valid pixels (at most ``max_samples``, from a grid as in :func:`registered_depth_samples`)
    are back-projected through
    ``depth_camera`` (the depth image's intrinsics: a CameraInfo-like message, an Intrinsics or
    (fx, fy, cx, cy)), moved into our optical frame by ``extrinsic`` (x y z qx qy qz qw of the
    depth camera's optical frame in ours) and projected through ``camera`` (ours, at
    ``image_size``); those in front of the camera and inside the image are kept, with their depth
    along our optical axis.  ``min_depth`` / ``max_depth`` bound both the measured and the
    reprojected depth."""
    _check_range(min_depth, max_depth)
    height, width = (int(n) for n in image_size)
    depth_fx, depth_fy, depth_cx, depth_cy = _camera_tuple(depth_camera, *_depth_shape(depth))
    fx, fy, cx, cy = _camera_tuple(camera, height, width)
    rows, cols, values, available = _valid_pixels(depth, min_depth, max_depth, max_samples)
    points = back_project_pixels(cols, rows, values, depth_fx, depth_fy, depth_cx, depth_cy)
    samples = _projected(transform_points(points, extrinsic), (fx, fy, cx, cy), (height, width), min_depth,
                         max_depth, max_samples)
    return DepthSamples(samples.u, samples.v, samples.depth, samples.image_size, available=available)


def cloud_xyz(cloud) -> np.ndarray:
    """(N, 3) float64 x, y, z of the finite points of a PointCloud2-like message (read with
    dpt_ros.cloud.from_pointcloud2) or of an (..., 3) array."""
    if hasattr(cloud, "fields"):
        from dpt_ros.cloud import from_pointcloud2

        points = from_pointcloud2(cloud).points().reshape(-1)
        missing = [name for name in "xyz" if name not in (points.dtype.names or ())]
        if missing:
            raise ValueError(f"the PointCloud2 has no field {', '.join(missing)} "
                             f"(fields: {', '.join(points.dtype.names or ())})")
        columns = [points[name] for name in "xyz"]  # strided views into the point records
    else:
        xyz = np.asarray(cloud)
        if xyz.ndim < 2 or xyz.shape[-1] != 3:
            raise ValueError(f"points must be (..., 3), got shape {xyz.shape}")
        xyz = xyz.reshape(-1, 3)
        columns = [xyz[:, axis] for axis in range(3)]
    # Per column: isfinite(...).all(axis=1) on an (N, 3) array is several times slower.
    finite = np.isfinite(columns[0]) & np.isfinite(columns[1]) & np.isfinite(columns[2])
    out = np.empty((3, int(finite.sum())), dtype=np.float64)  # each coordinate contiguous
    for axis, column in enumerate(columns):
        out[axis] = column[finite]
    return out.T


def point_samples(cloud, camera, image_size: tuple[int, int], extrinsic=IDENTITY_EXTRINSIC, *,
                  max_samples: int = DEFAULT_MAX_SAMPLES, min_depth: float = 0.0,
                  max_depth: float = math.inf) -> DepthSamples:
    """Samples of a point cloud (a lidar scan) in its sensor frame.

    ``cloud`` is a PointCloud2-like message or an (N, 3) array; ``extrinsic`` is x y z qx qy qz
    qw of the sensor frame in the camera's optical frame.  Every finite point is moved into the
    optical frame and projected through ``camera`` (a CameraInfo-like message, an Intrinsics or
    (fx, fy, cx, cy) at ``image_size``); points with depth in (min_depth, max_depth] that land on
    a pixel are kept, then cut to ``max_samples``.  All points are projected before the cut,
    because most of a spinning lidar's points lie outside the camera's view."""
    _check_range(min_depth, max_depth)
    height, width = (int(n) for n in image_size)
    camera = _camera_tuple(camera, height, width)
    xyz = cloud_xyz(cloud)
    return _projected(transform_points(xyz, extrinsic), camera, (height, width), min_depth, max_depth,
                      max_samples)


def _projected(points: np.ndarray, camera, image_size, min_depth: float, max_depth: float,
               max_samples: int) -> DepthSamples:
    """Samples of (N, 3) points already in the camera's optical frame."""
    u, v = project_points(points, *camera)
    z = points[:, 2]
    keep = np.flatnonzero(points_in_view(u, v, z, *image_size, min_depth=min_depth, max_depth=max_depth))
    available = keep.size
    spaced = evenly_spaced(keep.size, max_samples)
    if spaced is not None:
        keep = keep[spaced]
    return DepthSamples(u[keep], v[keep], z[keep], image_size, available=available)


# ------------------------------------------------------------------------------------------------
# One sensor message -> samples, as dpt_node's alignment.source says
# ------------------------------------------------------------------------------------------------

SOURCES = ("none", "depth_image", "points")


@dataclass(frozen=True)
class SampleSettings:
    """How one sensor message becomes samples (dpt_node's alignment.* values beyond the aligner's)."""

    registered: bool = True        # depth_image source: registered to the camera (else reprojected)
    extrinsic: tuple = IDENTITY_EXTRINSIC  # x y z qx qy qz qw of the sensor frame in the camera's optical frame
    stamp_tolerance: float = 0.05  # seconds between the image and the message it is aligned to
    min_depth: float = 0.0         # metres; depths at or below are ignored
    max_depth: float = math.inf    # metres; depths beyond are ignored
    max_samples: int = DEFAULT_MAX_SAMPLES

    def uses_extrinsic(self, source: str) -> bool:
        """Whether the sensor's pose in the camera frame takes part (all but a registered image)."""
        return not (source == "depth_image" and self.registered)


def samples_from_message(source: str, message, settings: SampleSettings, image_size: tuple[int, int],
                         camera=None, depth_camera=None, extrinsic=None) -> DepthSamples:
    """Samples of one sensor message for a camera image of ``image_size`` = (height, width).

    ``source`` is "depth_image" (an Image-like message: registered, or reprojected through
    ``depth_camera``, its CameraInfo, when ``settings.registered`` is false) or "points" (a
    PointCloud2-like message).  ``camera``: our intrinsics (a CameraInfo-like message, an
    Intrinsics or (fx, fy, cx, cy)), needed for everything but a registered image; ``extrinsic``:
    the sensor's pose in our optical frame (default ``settings.extrinsic``; the node passes TF's).
    Raises ValueError saying what is missing or wrong."""
    kwargs = dict(max_samples=settings.max_samples, min_depth=settings.min_depth, max_depth=settings.max_depth)
    extrinsic = settings.extrinsic if extrinsic is None else extrinsic
    if source == "depth_image" and settings.registered:
        return registered_depth_samples(message, image_size, **kwargs)
    if camera is None:
        raise ValueError("the image has no usable camera_info: samples cannot be projected into it")
    if source == "depth_image":
        if depth_camera is None:
            raise ValueError("no camera_info for the depth image yet: it cannot be reprojected (or set it "
                             "registered)")
        return reprojected_depth_samples(message, depth_camera, camera, image_size, extrinsic, **kwargs)
    if source == "points":
        return point_samples(message, camera, image_size, extrinsic, **kwargs)
    raise ValueError(f"unknown alignment source {source!r}; expected depth_image or points")
