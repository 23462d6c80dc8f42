"""Depth conversions shared by the model, the node and the bag evaluator (numpy or torch).

Depth validity follows REP 117/118 (one rule for every output of this package):

* a finite positive value is a depth in metres;
* ``+inf`` means "beyond range": nothing within the range the depth can represent, i.e. a
  non-positive inverse depth (``scale * out + shift <= MIN_INVERSE_DEPTH``) or a depth beyond
  the configured maximum range;
* ``NaN`` means invalid: a non-finite model output, a zero or negative metric depth;
* never a large finite stand-in (a costmap raytraces finite points and clears what lies before
  them), and never ``-inf`` (REP 117's "too close", which a monocular model cannot tell).
"""
import numpy as np
import torch

# Inverse depths (1/m) at or below this are beyond range (+inf).  The published metric DPT models
# clamp here and would report 1e8 m; a depth that far means "no surface in range", which REP 117
# spells +inf.
MIN_INVERSE_DEPTH = 1e-8


def relative_to_metric(out, scale: float, shift: float):
    """Metric depth in metres from the network's inverse-depth output, by the rule above.

    The KITTI/NYU DPT models predict ``scale*out + shift`` in inverse metres: a positive inverse
    depth gives ``1 / inverse``; an inverse depth at or below MIN_INVERSE_DEPTH (a negative
    ``shift`` makes such values common) is beyond range, ``+inf``; a non-finite ``out`` (or an
    inverse depth that overflowed) is invalid, ``NaN``.  Works on numpy arrays and torch tensors
    alike, with the same float operations, so both give identical values.
    """
    if isinstance(out, torch.Tensor):
        inverse = out * scale + shift
        depth = 1.0 / inverse
        depth = depth.masked_fill(inverse <= MIN_INVERSE_DEPTH, float("inf"))
        return depth.masked_fill(~torch.isfinite(inverse), float("nan"))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inverse = out * scale + shift
        depth = np.divide(1.0, inverse)
        depth = np.where(inverse <= MIN_INVERSE_DEPTH, np.inf, depth)
        return np.where(np.isfinite(inverse), depth, np.nan).astype(depth.dtype, copy=False)


# ------------------------------------------------------------------------------------------------
# Alignment of a relative (affine-invariant inverse-depth) prediction to metric ground truth.
# ------------------------------------------------------------------------------------------------

ALIGNMENT_NONE = "none"
ALIGNMENT_SCALE_SHIFT = "scale_shift_inverse_depth"


class AlignmentError(ValueError):
    """The least-squares fit is undetermined (too few valid pixels or a constant prediction)."""


def _fit_inputs(prediction, target, mask, weights):
    """float64 prediction, target and weights at the usable points: all finite, weight > 0."""
    import numpy as np

    prediction = np.asarray(prediction, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    valid = np.isfinite(prediction) & np.isfinite(target)
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    if weights is None:
        return prediction[valid], target[valid], None
    weights = np.broadcast_to(np.asarray(weights, dtype=np.float64), prediction.shape)
    valid &= np.isfinite(weights) & (weights > 0)
    return prediction[valid], target[valid], weights[valid]


def fit_scale_shift(prediction, target, mask=None, weights=None) -> tuple[float, float]:
    """Least-squares ``(s, t)`` minimizing ``sum(w * (s*prediction + t - target)**2)`` over ``mask``.

    ``weights`` (default: all 1) lets a caller fit relative errors: the online aligner weighs each
    sample by its depth squared.  Points with a non-finite value or a weight <= 0 take no part.
    Closed form of the 2x2 normal equations, in float64 so that large images do not lose precision
    in the sums. Raises AlignmentError when fewer than two distinct prediction values are available.
    """
    import numpy as np

    p, y, w = _fit_inputs(prediction, target, mask, weights)
    n = p.size
    if n < 2:
        raise AlignmentError(f"scale/shift alignment needs at least 2 valid pixels, got {n}")
    # Centre the data: the normal equations then decouple and stay well conditioned even when the
    # prediction has a large offset relative to its spread.
    if w is None:
        p_mean, y_mean = p.mean(), y.mean()
        p_centred = p - p_mean
        variance = float(np.dot(p_centred, p_centred))
        covariance = float(np.dot(p_centred, y - y_mean))
        magnitude = float(np.dot(p, p))
    else:
        total = float(w.sum())
        p_mean, y_mean = float(np.dot(w, p)) / total, float(np.dot(w, y)) / total
        p_centred = p - p_mean
        weighted = w * p_centred
        variance = float(np.dot(weighted, p_centred))
        covariance = float(np.dot(weighted, y - y_mean))
        magnitude = float(np.dot(w * p, p))
    if variance <= 1e-12 * max(1.0, magnitude):
        raise AlignmentError("scale/shift alignment is undetermined: the prediction is constant")
    scale = covariance / variance
    shift = float(y_mean - scale * p_mean)
    return scale, shift


def fit_scale(prediction, target, mask=None, weights=None) -> float:
    """Least-squares ``s`` minimizing ``sum(w * (s*prediction - target)**2)`` over ``mask``: the
    shift-free twin of :func:`fit_scale_shift`, for predictions that are already inverse depth up
    to a scale (metric models that need only a correction).  Raises AlignmentError when no point
    has a non-zero prediction."""
    import numpy as np

    p, y, w = _fit_inputs(prediction, target, mask, weights)
    w = np.ones_like(p) if w is None else w
    weighted = w * p
    magnitude = float(np.dot(weighted, p))
    if p.size == 0 or magnitude <= 0.0:
        raise AlignmentError(f"scale alignment needs a valid pixel with a non-zero prediction, got {p.size} "
                             "valid pixels")
    return float(np.dot(weighted, y)) / magnitude


def align_inverse_depth_to_metric(prediction, gt_depth, mask, max_depth: float):
    """Metric depth from a relative inverse-depth prediction, fitted to metric ground truth.

    As in the MiDaS/DPT evaluation: solve for ``s, t`` minimizing ``||s*prediction + t - 1/gt||^2``
    over the valid pixels (``mask``: where ``gt_depth`` is a usable measurement), then
    ``depth = 1 / max(s*prediction + t, 1/max_depth)``, so aligned inverse depths that fall at or
    below zero become ``max_depth`` rather than negative or infinite depths.
    Returns ``(depth float32 array of the prediction's shape, s, t)``.
    """
    import numpy as np

    gt_depth = np.asarray(gt_depth, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool) & np.isfinite(gt_depth) & (gt_depth > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        target = np.where(mask, 1.0 / gt_depth, np.nan)
    scale, shift = fit_scale_shift(prediction, target, mask)
    aligned = scale * np.asarray(prediction, dtype=np.float64) + shift
    depth = 1.0 / np.maximum(aligned, 1.0 / max_depth)
    return depth.astype(np.float32), scale, shift
