"""dpt_node's online-alignment parameters (alignment.*): the proposed table rows (ROS-free).

These rows are part of dpt_node's one parameter table (dpt_ros.node_parameters.PARAMETERS ends
with them), so the node declares, validates and documents them like the others.
:func:`aligner_settings` turns their values into the aligner's settings, :func:`sample_settings`
into what the node needs to turn a sensor's messages into samples, and :func:`alignment_problem`
adds the checks that a range cannot express (the extrinsic).
"""
from __future__ import annotations

import math
from typing import Mapping

from dpt_ros.alignment import ALIGNMENT_MODES, AlignerSettings
from dpt_ros.geometry import rigid_transform
from dpt_ros.parameter_spec import ParameterSpec
from dpt_ros.sparse_depth import IDENTITY_EXTRINSIC, SOURCES, SampleSettings

ALIGNMENT_SOURCES = SOURCES
_DEFAULTS = AlignerSettings()

ALIGNMENT_PARAMETERS: tuple[ParameterSpec, ...] = (
    ParameterSpec("alignment.source", "none",
                  "Sparse metric depth to align relative depth to: none; depth_image (alignment/depth, 16UC1 mm or "
                  "32FC1 m, with alignment/camera_info); points (PointCloud2 on alignment/points)",
                  applies="restart", choices=ALIGNMENT_SOURCES),
    ParameterSpec("alignment.mode", _DEFAULTS.mode,
                  "full: fit scale and shift of a relative model's inverse depth; scale_only: fit a scale "
                  "correction of a metric model (shift 0). A change resets the alignment",
                  choices=ALIGNMENT_MODES),
    ParameterSpec("alignment.registered", True,
                  "depth_image source: true = registered to the camera (same size and intrinsics, e.g. aligned "
                  "RGB-D depth); false = reprojected through alignment/camera_info and alignment.extrinsic"),
    ParameterSpec("alignment.extrinsic", list(IDENTITY_EXTRINSIC),
                  "Pose of the sensor's frame in the camera's optical frame: x y z (m) qx qy qz qw"),
    ParameterSpec("alignment.use_tf", False,
                  "Take the sensor pose from TF at the image stamp instead of alignment.extrinsic (needs tf2_ros)",
                  applies="restart"),
    ParameterSpec("alignment.stamp_tolerance", 0.05,
                  "Largest stamp difference (s) between an image and the sparse depth aligned to it; the nearest "
                  "within it is used, none = the frame keeps the previous alignment", minimum=0.0, maximum=10.0),
    ParameterSpec("alignment.timeout", _DEFAULTS.timeout,
                  "Seconds without an accepted fit until the alignment is stale: metric outputs stop, relative "
                  "keeps flowing, diagnostics warn; 0 = never", minimum=0.0, maximum=3600.0),
    ParameterSpec("alignment.min_depth", 0.1,
                  "Sparse depths at or below this (m) are ignored (the robot's own body, sensor minimum range)",
                  minimum=0.0, maximum=1e6),
    ParameterSpec("alignment.max_depth", 0.0,
                  "Sparse depths beyond this (m) are ignored (noisy far range); 0 = no limit", minimum=0.0,
                  maximum=1e6),
    ParameterSpec("alignment.max_samples", _DEFAULTS.max_samples,
                  "Most samples used per frame (evenly spaced over the sensor's; bounds the fit's cost)",
                  minimum=10, maximum=1_000_000),
    ParameterSpec("alignment.fit.inlier_threshold", _DEFAULTS.inlier_threshold,
                  "A sample is an inlier when measured depth / aligned depth - 1 is within +-this",
                  minimum=0.001, maximum=10.0),
    ParameterSpec("alignment.fit.min_inliers", _DEFAULTS.min_inliers,
                  "Fewer inliers: the frame's fit is refused and the previous alignment kept", minimum=2,
                  maximum=1_000_000),
    ParameterSpec("alignment.fit.min_inlier_fraction", _DEFAULTS.min_inlier_fraction,
                  "Inliers below this fraction of the samples: the fit is refused", minimum=0.0, maximum=1.0),
    ParameterSpec("alignment.fit.max_residual", _DEFAULTS.max_residual,
                  "RMS relative residual of the inliers above this: the fit is refused", minimum=0.001,
                  maximum=10.0),
    ParameterSpec("alignment.fit.iterations", _DEFAULTS.iterations,
                  "RANSAC hypotheses per frame", minimum=1, maximum=10_000),
    ParameterSpec("alignment.filter.smoothing", _DEFAULTS.smoothing,
                  "Weight of a new fit in the moving average of scale and shift (1 = no smoothing); the first "
                  "1/smoothing fits are averaged equally", minimum=0.01, maximum=1.0),
    ParameterSpec("alignment.filter.gate", _DEFAULTS.gate,
                  "A fit that would change the depth by more than this fraction (median at its inliers) is "
                  "rejected as an outlier frame", minimum=0.001, maximum=100.0),
    ParameterSpec("alignment.filter.gate_frames", _DEFAULTS.gate_frames,
                  "This many rejected fits in a row that agree with each other are a real change: the "
                  "alignment restarts from the last", minimum=1, maximum=1000),
)

# Parameter -> AlignerSettings field.
_SETTINGS_FIELDS = {
    "alignment.mode": "mode",
    "alignment.timeout": "timeout",
    "alignment.max_samples": "max_samples",
    "alignment.fit.inlier_threshold": "inlier_threshold",
    "alignment.fit.min_inliers": "min_inliers",
    "alignment.fit.min_inlier_fraction": "min_inlier_fraction",
    "alignment.fit.max_residual": "max_residual",
    "alignment.fit.iterations": "iterations",
    "alignment.filter.smoothing": "smoothing",
    "alignment.filter.gate": "gate",
    "alignment.filter.gate_frames": "gate_frames",
}


def aligner_settings(values: Mapping[str, object]) -> AlignerSettings:
    """AlignerSettings from parameter values by name (missing ones keep the defaults).  Doubles
    given as integers on the command line (``-p alignment.timeout:=2``) are taken as numbers.
    Raises ValueError naming every bad value."""
    fields = {}
    for name, field_name in _SETTINGS_FIELDS.items():
        if name in values:
            value = values[name]
            default = getattr(_DEFAULTS, field_name)
            if isinstance(default, float) and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            fields[field_name] = value
    return AlignerSettings(**fields)


def sample_settings(values: Mapping[str, object]) -> SampleSettings:
    """SampleSettings from parameter values by name (all of alignment.registered, extrinsic,
    stamp_tolerance, min_depth, max_depth, max_samples); max_depth 0 means no limit."""
    max_depth = float(values["alignment.max_depth"])
    return SampleSettings(registered=bool(values["alignment.registered"]),
                          extrinsic=tuple(float(value) for value in values["alignment.extrinsic"]),
                          stamp_tolerance=float(values["alignment.stamp_tolerance"]),
                          min_depth=float(values["alignment.min_depth"]),
                          max_depth=max_depth if max_depth > 0.0 else math.inf,
                          max_samples=int(values["alignment.max_samples"]))


def alignment_problem(name: str, value) -> str | None:
    """Why ``value`` is unusable for ``name`` beyond its type and range, or None."""
    if name == "alignment.extrinsic":
        try:
            rigid_transform(list(value))
        except (TypeError, ValueError) as error:
            return f"alignment.extrinsic: {error}"
    return None
