"""One camera frame through DPT to every output the node can publish (ROS-free).

The node decides which outputs someone is listening to; this module computes exactly those, from
the engine's results: metric depth (REP 117/118: metres, NaN where invalid, +inf beyond range; see
dpt_ros.depth), relative inverse depth, colour visualisations, labels, and the packed point cloud.

The engine leaves its results on its device; only what an output needs comes to the host.  With a
GPU engine, metric depth and the point cloud are computed with torch on the device: the
back-projection and the interleaving of x, y, z, rgb, label happen there and the finished cloud is
copied to the host once, so a frame whose only subscriber is the cloud downloads neither the depth
image nor the labels.  With a CPU engine they are computed with numpy on views of the engine's
tensors (no copies): single-threaded numpy keeps its speed when other processes load the cores,
while torch's multi-threaded element-wise kernels slowed down up to 100x there
(benchmarks/NOTES.md, `ablations.py --cloud-only`).  The colour visualisations (debug outputs) are
made on the host either way.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from dpt_ros.cloud import PackedCloud, pack_cloud
from dpt_ros.colorize import blend, colorize_depth, colorize_labels
from dpt_ros.depth import relative_to_metric
from dpt_ros.geometry import depth_to_xyz, depth_to_xyz_torch


@dataclass(frozen=True)
class OutputRequest:
    """Which outputs to compute for a frame (the node sets these from subscriber counts)."""

    depth_metric: bool = True
    depth_relative: bool = True
    depth_colored: bool = False
    labels: bool = True
    labels_colored: bool = False
    cloud: bool = False
    # The depth prediction is read for online alignment (dpt_ros.alignment) even if no depth
    # output is wanted: someone listens to depth/alignment.
    alignment: bool = False


@dataclass(frozen=True)
class PipelineSettings:
    """Run-time settings; all of them may change between frames."""

    # Affine map from the model's relative inverse depth to inverse metres; scale 0 = not set.
    depth_scale: float = 0.0
    depth_shift: float = 0.0
    # Depth beyond this many metres is reported beyond range (+inf, REP 117); 0 = no limit.
    depth_max_range: float = 0.0
    cloud_stride: int = 1
    # Points beyond this many metres are NaN in the cloud; 0 = no limit.
    cloud_max_range: float = 0.0
    colored_alpha: float = 0.5
    # True: depth_scale/depth_shift are an online alignment of this frame (dpt_ros.alignment) and
    # map the model's inverse depth (model_inverse_depth) for any model, metric ones included (a
    # scale_only correction); scale 0 = no usable alignment, so no metric depth even from a
    # metric model.  Made by aligned().
    depth_aligned: bool = False

    def aligned(self, scale_shift: tuple[float, float] | None) -> "PipelineSettings":
        """These settings for a frame whose metric depth comes from an online alignment:
        ``scale_shift`` of the model's inverse depth, or None when the frame has no usable
        alignment (then it has no metric depth: no depth/image, no cloud)."""
        scale, shift = scale_shift if scale_shift is not None else (0.0, 0.0)
        return replace(self, depth_aligned=True, depth_scale=float(scale), depth_shift=float(shift))


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics at the depth image's resolution (pixels)."""

    fx: float
    fy: float
    cx: float
    cy: float


@dataclass
class FrameOutputs:
    depth_metric: np.ndarray | None = None      # (H, W) float32 metres, NaN invalid, +inf beyond range
    depth_relative: np.ndarray | None = None    # (H, W) float32 unitless inverse depth
    depth_colored: np.ndarray | None = None     # (H, W, 3) uint8 RGB
    labels: np.ndarray | None = None            # (H, W) uint8 class ids
    labels_colored: np.ndarray | None = None    # (H, W, 3) uint8 RGB blended over the image
    cloud: PackedCloud | None = None
    network_size: tuple[int, int] = (0, 0)      # (height, width) of the depth network input
    timings_ms: dict[str, float] = field(default_factory=dict)


def metric_depth_available(depth_output_kind: str, settings: PipelineSettings) -> bool:
    """True when the node can publish depth in metres (REP 118) for this model and settings."""
    if settings.depth_aligned:
        return settings.depth_scale > 0.0
    return depth_output_kind == "metric_depth" or settings.depth_scale > 0.0


def model_inverse_depth(raw, depth_output_kind: str):
    """The model's depth output as inverse depth, the quantity scale and shift apply to: a relative
    model's output as it is, 1 / metres of a metric model (numpy array or torch tensor)."""
    if depth_output_kind != "metric_depth":
        return raw
    if isinstance(raw, torch.Tensor):
        return raw.reciprocal()
    with np.errstate(divide="ignore"):  # 0 m (never from the published models) becomes inf: invalid
        return np.reciprocal(raw)


def to_metric_depth(raw, depth_output_kind: str, settings: PipelineSettings):
    """Metres by the depth validity rule of REP 117/118 (dpt_ros.depth): NaN where invalid, +inf
    where beyond range, never a large finite stand-in.

    A relative model's output goes through ``relative_to_metric`` with depth.scale/shift (a
    non-positive inverse depth is +inf); a metric model's output is kept, except that NaN, zero,
    negative and -inf depths are invalid (NaN); with an online alignment (settings.depth_aligned)
    any model's inverse depth goes through ``relative_to_metric`` with the alignment's scale/shift.  Depth beyond ``depth_max_range`` is +inf: the
    model saw something, but farther than the range the depth is trusted to.
    ``raw`` is the engine's depth output as a numpy array (float32 numpy comes back) or a torch
    tensor (a float32 tensor on the same device comes back, with no host sync); both give the same
    values.  The input is never modified."""
    keep_metric = depth_output_kind == "metric_depth" and not settings.depth_aligned
    if isinstance(raw, torch.Tensor):
        if keep_metric:
            depth = raw.to(torch.float32, copy=True)
            depth.masked_fill_(~(depth > 0.0), math.nan)  # NaN fails "> 0" and stays NaN
        else:
            depth = relative_to_metric(model_inverse_depth(raw.to(torch.float32), depth_output_kind),
                                       settings.depth_scale, settings.depth_shift)
        if settings.depth_max_range > 0.0:
            depth.masked_fill_(depth > settings.depth_max_range, math.inf)
        return depth
    if keep_metric:
        depth = raw.astype(np.float32, copy=True)
        np.copyto(depth, np.nan, where=~(depth > 0.0))
    else:
        depth = relative_to_metric(model_inverse_depth(raw.astype(np.float32, copy=False), depth_output_kind),
                                   settings.depth_scale, settings.depth_shift)
    if settings.depth_max_range > 0.0:
        np.copyto(depth, np.inf, where=depth > settings.depth_max_range)
    return depth


def needed_tasks(enabled: tuple[str, ...], requests: list[OutputRequest]) -> tuple[str, ...]:
    """The enabled tasks whose results some request uses: a model nobody listens to is not run.

    Clouds carry a label field whenever segmentation is enabled, so a cloud needs both."""
    wanted = set()
    for request in requests:
        if request.depth_metric or request.depth_relative or request.depth_colored or request.cloud \
                or request.alignment:
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
    results = infer_frames(engine, images, requests)
    return [derive_outputs(engine, rgb, result, settings, request, camera)
            for rgb, result, request, camera in zip(images, results, requests, intrinsics)]


def infer_frames(engine, images: list[np.ndarray], requests: list[OutputRequest]) -> list:
    """The first half of process_frames: one engine call for the tasks the requests need.  A
    caller that needs the prediction before deciding a frame's settings (online alignment) runs
    this, then derive_outputs per frame with that frame's settings."""
    return engine.infer(images, tasks=needed_tasks(engine.tasks, requests))


def derives_on_device(engine) -> bool:
    """Whether metric depth and clouds are computed with torch on the engine's device (GPU) rather
    than with numpy on the host (CPU engine)."""
    return engine.device.type != "cpu"


def derive_outputs(engine, rgb, result, settings: PipelineSettings, request: OutputRequest,
                   intrinsics: Intrinsics | None) -> FrameOutputs:
    """The second half of process_frames: one frame's requested outputs from its engine result."""
    on_device = derives_on_device(engine)
    # Reading the timings waits for the engine's work of this call (once, on a GPU); what follows
    # is this module's own post-processing, timed on the host.
    outputs = FrameOutputs(timings_ms=result.timings_ms)
    has_depth, has_labels = result.has("depth"), result.has("labels")
    if has_depth:
        outputs.network_size = engine.network_size(rgb.shape[0], rgb.shape[1], "depth")
    elif has_labels:
        outputs.network_size = engine.network_size(rgb.shape[0], rgb.shape[1], "segmentation")

    started = time.perf_counter()
    kind = engine.depth_output_kind
    metric = None
    if has_depth:
        if request.depth_relative and kind != "metric_depth":
            outputs.depth_relative = result.depth
        if (request.depth_metric or request.cloud) and metric_depth_available(kind, settings):
            metric = to_metric_depth(result.on_device["depth"] if on_device else result.depth, kind, settings)
            if request.depth_metric or request.depth_colored:  # the cloud alone needs no host copy
                outputs.depth_metric = engine.staging.to_host(metric) if on_device else metric
        if request.depth_colored:
            # Near is bright either way: metres are coloured through 1/depth, and the model's
            # relative output already is inverse depth.
            if outputs.depth_metric is not None:
                outputs.depth_colored = colorize_depth(outputs.depth_metric, inverse=True)
            else:
                outputs.depth_colored = colorize_depth(result.depth)
            if not request.depth_metric:
                outputs.depth_metric = None  # computed for the colours only: not an output
    if has_labels:
        if request.labels:
            outputs.labels = result.labels
        if request.labels_colored:
            outputs.labels_colored = blend(rgb, colorize_labels(result.labels), settings.colored_alpha)
    if request.cloud and metric is not None and intrinsics is not None:
        max_range = settings.cloud_max_range if settings.cloud_max_range > 0.0 else math.inf
        back_project = depth_to_xyz_torch if on_device else depth_to_xyz
        xyz = back_project(metric, intrinsics.fx, intrinsics.fy, intrinsics.cx, intrinsics.cy, max_range=max_range)
        # On the device path these are the engine's device tensors: the cloud is interleaved there
        # and crosses to the host once, through the engine's staging buffers.
        labels = (result.on_device["labels"] if on_device else result.labels) if has_labels else None
        outputs.cloud = pack_cloud(xyz, rgb=result.on_device["image"] if on_device else rgb, labels=labels,
                                   stride=settings.cloud_stride, staging=engine.staging if on_device else None)
    outputs.timings_ms["postprocess"] = outputs.timings_ms.get("postprocess", 0.0) + (
        time.perf_counter() - started) * 1e3
    return outputs
