"""One camera frame through DPT to every output the node can publish (ROS-free).

The node decides which outputs someone is listening to; this module computes exactly those, from
the engine's raw results: metric depth (REP 118: metres, NaN where invalid), relative inverse
depth, colour visualisations, labels, and the packed point cloud.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from dpt_ros.cloud import PackedCloud, pack_cloud
from dpt_ros.colorize import blend, colorize_depth, colorize_labels
from dpt_ros.depth import relative_to_metric
from dpt_ros.geometry import depth_to_xyz


@dataclass(frozen=True)
class OutputRequest:
    """Which outputs to compute for a frame (the node sets these from subscriber counts)."""

    depth_metric: bool = True
    depth_relative: bool = True
    depth_colored: bool = False
    labels: bool = True
    labels_colored: bool = False
    cloud: bool = False


@dataclass(frozen=True)
class PipelineSettings:
    """Run-time settings; all of them may change between frames."""

    # Affine map from the model's relative inverse depth to inverse metres; scale 0 = not set.
    depth_scale: float = 0.0
    depth_shift: float = 0.0
    # Depth beyond this many metres is reported invalid (NaN); 0 = no limit.
    depth_max_range: float = 0.0
    cloud_stride: int = 1
    # Points beyond this many metres are NaN in the cloud; 0 = no limit.
    cloud_max_range: float = 0.0
    colored_alpha: float = 0.5


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics at the depth image's resolution (pixels)."""

    fx: float
    fy: float
    cx: float
    cy: float


@dataclass
class FrameOutputs:
    depth_metric: np.ndarray | None = None      # (H, W) float32 metres, NaN invalid
    depth_relative: np.ndarray | None = None    # (H, W) float32 unitless inverse depth
    depth_colored: np.ndarray | None = None     # (H, W, 3) uint8 RGB
    labels: np.ndarray | None = None            # (H, W) uint8 class ids
    labels_colored: np.ndarray | None = None    # (H, W, 3) uint8 RGB blended over the image
    cloud: PackedCloud | None = None
    network_size: tuple[int, int] = (0, 0)      # (height, width) of the depth network input
    timings_ms: dict[str, float] = field(default_factory=dict)


def metric_depth_available(depth_output_kind: str, settings: PipelineSettings) -> bool:
    """True when the node can publish depth in metres (REP 118) for this model and settings."""
    return depth_output_kind == "metric_depth" or settings.depth_scale > 0.0


def to_metric_depth(raw: np.ndarray, depth_output_kind: str, settings: PipelineSettings) -> np.ndarray:
    """Metres with NaN for invalid pixels: non-finite, non-positive or beyond depth_max_range."""
    if depth_output_kind == "metric_depth":
        depth = raw.astype(np.float32, copy=True)
    else:
        depth = relative_to_metric(raw.astype(np.float32), settings.depth_scale, settings.depth_shift)
        depth = depth.astype(np.float32, copy=False)
    invalid = ~np.isfinite(depth) | (depth <= 0.0)
    if settings.depth_max_range > 0.0:
        invalid |= depth > settings.depth_max_range
    depth[invalid] = np.nan
    return depth


def needed_tasks(enabled: tuple[str, ...], requests: list[OutputRequest]) -> tuple[str, ...]:
    """The enabled tasks whose results some request uses: a model nobody listens to is not run.

    Clouds carry a label field whenever segmentation is enabled, so a cloud needs both."""
    wanted = set()
    for request in requests:
        if request.depth_metric or request.depth_relative or request.depth_colored or request.cloud:
            wanted.add("depth")
        if request.labels or request.labels_colored or request.cloud:
            wanted.add("segmentation")
    return tuple(task for task in enabled if task in wanted)


def process_frame(engine, rgb: np.ndarray, settings: PipelineSettings, request: OutputRequest,
                  intrinsics: Intrinsics | None = None) -> FrameOutputs:
    """Run the engine on one RGB frame and derive the requested outputs at the input resolution."""
    return process_frames(engine, [rgb], settings, [request], [intrinsics])[0]


def process_frames(engine, images: list[np.ndarray], settings: PipelineSettings,
                   requests: list[OutputRequest], intrinsics: list[Intrinsics | None]) -> list[FrameOutputs]:
    """Frames of several cameras through one engine call (batched per network size), then each
    frame's requested outputs at its own input resolution."""
    results = engine.infer(images, tasks=needed_tasks(engine.tasks, requests))
    return [_derive_outputs(engine, rgb, result, settings, request, camera)
            for rgb, result, request, camera in zip(images, results, requests, intrinsics)]


def _derive_outputs(engine, rgb, result, settings: PipelineSettings, request: OutputRequest,
                    intrinsics: Intrinsics | None) -> FrameOutputs:
    outputs = FrameOutputs(timings_ms=dict(result.timings_ms))
    if result.depth is not None:
        outputs.network_size = engine.network_size(rgb.shape[0], rgb.shape[1], "depth")
    elif result.labels is not None:
        outputs.network_size = engine.network_size(rgb.shape[0], rgb.shape[1], "segmentation")

    started = time.perf_counter()
    kind = engine.depth_output_kind
    if result.depth is not None:
        if request.depth_relative and kind != "metric_depth":
            outputs.depth_relative = result.depth
        want_metric = request.depth_metric or request.cloud
        if want_metric and metric_depth_available(kind, settings):
            outputs.depth_metric = to_metric_depth(result.depth, kind, settings)
        if request.depth_colored:
            # Near is bright either way: metres are coloured through 1/depth, and the model's
            # relative output already is inverse depth.
            if outputs.depth_metric is not None:
                outputs.depth_colored = colorize_depth(outputs.depth_metric, inverse=True)
            else:
                outputs.depth_colored = colorize_depth(result.depth)
    if result.labels is not None:
        if request.labels:
            outputs.labels = result.labels
        if request.labels_colored:
            outputs.labels_colored = blend(rgb, colorize_labels(result.labels), settings.colored_alpha)
    if request.cloud and outputs.depth_metric is not None and intrinsics is not None:
        max_range = settings.cloud_max_range if settings.cloud_max_range > 0.0 else math.inf
        xyz = depth_to_xyz(outputs.depth_metric, intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy,
                           max_range=max_range)
        outputs.cloud = pack_cloud(xyz, rgb=rgb, labels=result.labels, stride=settings.cloud_stride)
    outputs.timings_ms["postprocess"] = outputs.timings_ms.get("postprocess", 0.0) + (
        time.perf_counter() - started) * 1e3
    return outputs
