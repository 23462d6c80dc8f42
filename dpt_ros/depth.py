"""Depth conversions shared by the model, the node and the bag evaluator (numpy or torch)."""

# Smallest inverse depth accepted before inverting; the published metric DPT models clamp here too.
MIN_INVERSE_DEPTH = 1e-8


def relative_to_metric(out, scale: float, shift: float):
    """Metric depth in metres from the network's inverse-depth output.

    The KITTI/NYU DPT models predict ``scale*out + shift`` in inverse metres; values at or below
    MIN_INVERSE_DEPTH are clamped so the division never produces inf or a negative depth.
    Works on numpy arrays and torch tensors alike.
    """
    inverse = out * scale + shift
    if hasattr(inverse, "clamp"):
        inverse = inverse.clamp(min=MIN_INVERSE_DEPTH)
    else:
        import numpy as np

        inverse = np.maximum(inverse, MIN_INVERSE_DEPTH)
    return 1.0 / inverse


# ------------------------------------------------------------------------------------------------
# Alignment of a relative (affine-invariant inverse-depth) prediction to metric ground truth.
# ------------------------------------------------------------------------------------------------

ALIGNMENT_NONE = "none"
ALIGNMENT_SCALE_SHIFT = "scale_shift_inverse_depth"


class AlignmentError(ValueError):
    """The least-squares fit is undetermined (too few valid pixels or a constant prediction)."""


def fit_scale_shift(prediction, target, mask=None) -> tuple[float, float]:
    """Least-squares ``(s, t)`` minimizing ``sum((s*prediction + t - target)**2)`` over ``mask``.

    Closed form of the 2x2 normal equations, in float64 so that large images do not lose precision
    in the sums. Raises AlignmentError when fewer than two distinct prediction values are available.
    """
    import numpy as np

    prediction = np.asarray(prediction, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    valid = np.isfinite(prediction) & np.isfinite(target)
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    p = prediction[valid]
    y = target[valid]
    n = p.size
    if n < 2:
        raise AlignmentError(f"scale/shift alignment needs at least 2 valid pixels, got {n}")
    # Centre the data: the normal equations then decouple and stay well conditioned even when the
    # prediction has a large offset relative to its spread.
    p_mean, y_mean = p.mean(), y.mean()
    p_centred = p - p_mean
    variance = float(np.dot(p_centred, p_centred))
    if variance <= 1e-12 * max(1.0, float(np.dot(p, p))):
        raise AlignmentError("scale/shift alignment is undetermined: the prediction is constant")
    scale = float(np.dot(p_centred, y - y_mean) / variance)
    shift = float(y_mean - scale * p_mean)
    return scale, shift


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
