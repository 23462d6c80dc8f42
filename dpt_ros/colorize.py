"""Depth and label images -> RGB for humans (RViz, demo output, debugging)."""
from __future__ import annotations

import math

import cv2
import numpy as np

from dpt_ros.labels import ADE20K_PALETTE, NUM_CLASSES

# Percentiles used for the colour range when none is given: ignores a few outliers at each end.
ROBUST_PERCENTILES = (2.0, 98.0)
# Above this many valid pixels the percentiles are taken from an evenly spaced subsample; the
# range barely moves and colourising a 640x480 frame stays ~1 ms.
_PERCENTILE_SAMPLES = 65536

# Label -> colour for every uint8 value: the palette, then black for 150..255 (255 = unknown).
_LABEL_LUT = np.zeros((256, 3), dtype=np.uint8)
_LABEL_LUT[:NUM_CLASSES] = ADE20K_PALETTE


def _robust_range(depth: np.ndarray, inverse: bool) -> tuple[float, float]:
    """2nd/98th percentiles of the valid pixels, from an evenly spaced subsample if large."""
    sample = depth.reshape(-1)
    if sample.size > _PERCENTILE_SAMPLES:
        sample = sample[:: sample.size // _PERCENTILE_SAMPLES]
    keep = np.isfinite(sample)
    if inverse:
        keep &= sample > 0
    sample = sample[keep]
    if sample.size == 0:
        return math.nan, math.nan
    lo, hi = np.percentile(sample, ROBUST_PERCENTILES)
    return float(lo), float(hi)


def colorize_depth(depth: np.ndarray, vmin: float | None = None, vmax: float | None = None,
                   inverse: bool = False, colormap: int = cv2.COLORMAP_VIRIDIS) -> np.ndarray:
    """(H, W) depth -> (H, W, 3) uint8 RGB through a perceptually uniform colormap.

    ``vmin``/``vmax`` bound the colour range in the units of ``depth``; a missing bound is the
    2nd/98th percentile of the valid pixels.  By default ``vmin`` maps to the colormap's low
    end and ``vmax`` to its high end.  ``inverse=True`` colours 1/depth instead (disparity-like:
    near is bright and detail is spent on near objects), still bounded by the same vmin/vmax
    in depth units; it then needs positive depths.  Pass relative inverse depth (a DPT output)
    with ``inverse=False``.  NaN, infinite (and, with ``inverse``, non-positive) pixels are black.
    """
    depth = np.asarray(depth, dtype=np.float32)
    if depth.ndim != 2:
        raise ValueError(f"depth must be (H, W), got shape {depth.shape}")
    if vmin is None or vmax is None:
        lo, hi = _robust_range(depth, inverse)
        if math.isnan(lo):  # no valid pixel at all
            return np.zeros(depth.shape + (3,), dtype=np.uint8)
        vmin = lo if vmin is None else float(vmin)
        vmax = hi if vmax is None else float(vmax)
    if inverse:
        if vmin <= 0 or vmax <= 0:
            raise ValueError(f"inverse colouring needs a positive range, got [{vmin}, {vmax}]")
        # 1/d runs from 1/vmax (far, low end) to 1/vmin (near, high end).
        with np.errstate(divide="ignore", invalid="ignore"):
            values = np.reciprocal(depth)
        lo, hi = 1.0 / vmax, 1.0 / vmin
        invalid = ~(depth > 0) | ~np.isfinite(values)
    else:
        values = depth.copy()
        lo, hi = vmin, vmax
        invalid = ~np.isfinite(depth)
    # Map [lo, hi] onto colormap indices 0..255 (rounded); a flat range gives index 0.
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    values -= np.float32(lo)
    values *= np.float32(scale)
    np.copyto(values, 0.0, where=invalid)  # NaN/inf would not survive the uint8 cast
    np.clip(values, 0.0, 255.0, out=values)
    index = np.rint(values, out=values).astype(np.uint8)
    # applyColorMap returns BGR; flip to RGB, then black out the invalid pixels.
    rgb = cv2.cvtColor(cv2.applyColorMap(index, colormap), cv2.COLOR_BGR2RGB)
    np.copyto(rgb, 0, where=invalid[:, :, None])
    return rgb


def colorize_labels(labels: np.ndarray) -> np.ndarray:
    """(H, W) class indices -> (H, W, 3) uint8 RGB in the ADE20K palette.

    255 (unknown) and any value outside 0..149 are black.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
    if labels.dtype != np.uint8:
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be integers, got {labels.dtype}")
        in_range = (labels >= 0) & (labels < NUM_CLASSES)
        labels = np.where(in_range, labels, 255).astype(np.uint8)
    return np.take(_LABEL_LUT, labels, axis=0)  # ~10x faster than fancy indexing here


def blend(image_rgb: np.ndarray, overlay_rgb: np.ndarray, alpha: float,
          mask: np.ndarray | None = None) -> np.ndarray:
    """``(1 - alpha) * image + alpha * overlay``, rounded to uint8.

    With ``mask`` ((H, W) bool) only the masked pixels are blended; the rest keep the image,
    e.g. ``mask=labels != IGNORE_LABEL`` leaves unlabelled pixels untouched.
    """
    image_rgb = np.asarray(image_rgb)
    overlay_rgb = np.asarray(overlay_rgb)
    if image_rgb.shape != overlay_rgb.shape or image_rgb.dtype != np.uint8 \
            or overlay_rgb.dtype != np.uint8:
        raise ValueError(
            f"blend needs two uint8 arrays of one shape, got {image_rgb.dtype}{image_rgb.shape} "
            f"and {overlay_rgb.dtype}{overlay_rgb.shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    mixed = cv2.addWeighted(image_rgb, 1.0 - alpha, overlay_rgb, alpha, 0.0)
    if mask is None:
        return mixed
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != image_rgb.shape[:2]:
        raise ValueError(f"mask must be {image_rgb.shape[:2]}, got {mask.shape}")
    np.copyto(mixed, image_rgb, where=~mask[:, :, None])  # much faster than boolean indexing
    return mixed
