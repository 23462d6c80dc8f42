"""Labels = argmax over classes of bilinearly resized logits, without resizing every class (ROS-free).

The reference (``plain_resized_argmax``) resizes all C logit planes to the image size with
``F.interpolate(bilinear, align_corners=False)`` and takes the argmax: C x H x W values for
H x W labels, 100-350 ms for 150 classes at 640x480 on a small CPU.  ``resized_argmax`` gives
the same labels, every pixel, at a fraction of that:

1. At network resolution: each pixel's best class and its margin over the runner-up.
2. Bilinear interpolation makes an output pixel a convex combination of four network pixels.  If
   those four agree on the best class, each with a margin larger than the rounding error of the
   interpolation can be, that class wins the interpolated argmax too (for any weights, the
   combination of the margins is positive), so the label is copied without interpolating.
3. Only the other pixels - near class boundaries - are interpolated, and only for the classes
   that can still win there (a class whose largest neighbour value lies below another class's
   smallest neighbour value cannot), with the CPU kernel's own arithmetic, bit for bit: the
   weights and indices as ATen computes them, and its fused multiply-adds, emulated exactly
   (float64 products and round-to-odd sums).  The tie rule is the reference's: the lowest
   class index among equal values.

Bit-exactness is checked once per geometry (logits size -> image size) against ``F.interpolate``
on random logits; where it does not hold (another torch build, a kernel that dispatches
differently) ``resized_argmax`` uses the reference itself.  On the GPU the reference is fast and
is what runs.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

# Interpolated values are compared only after this much of the largest |logit| is allowed for the
# rounding of the interpolation kernel (a few float32 ulps; 2**-16 leaves a factor of ~30).
ROUNDING_BOUND = 2.0 ** -16
# Upper bound on elements of one resized-logits chunk (fp32) in the reference: 64 Mi elements =
# 256 MiB.  The full 150-class map of a 1080p image would be 1.2 GiB.
_LOGITS_CHUNK_ELEMENTS = 1 << 26
# Boundary pixels are interpolated in groups of at most this many (pixel, candidate) pairs.
_PAIRS_PER_CHUNK = 1 << 20
# ATen picks its channels-last bilinear kernel when the output's height + width is at most this,
# whatever the input's layout (a different arithmetic than the one emulated here).
_SMALL_OUTPUT_SIDES = 128


def resized_argmax(logits: torch.Tensor, size: tuple[int, int], dtype: torch.dtype = torch.int64) -> torch.Tensor:
    """(B, H, W) argmax over classes of ``logits`` (B, C, h, w) bilinearly resized to ``size`` =
    (H, W) (align_corners=False), equal to :func:`plain_resized_argmax` at every pixel, as
    ``dtype`` (uint8 saves a conversion pass when the labels are bytes anyway)."""
    size = (int(size[0]), int(size[1]))
    if tuple(logits.shape[-2:]) == size:
        return argmax_classes(logits).to(dtype)  # a same-size bilinear resize is the identity
    if _exact_on_host(logits, size):
        return torch.from_numpy(_host_resized_argmax(logits, size, np.dtype(str(dtype).removeprefix("torch."))))
    return plain_resized_argmax(logits, size).to(dtype)


def plain_resized_argmax(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """The reference: every class plane resized (NCHW), then argmax (first index wins ties).

    Chunks of classes are resized at a time when the full resized map would be large, keeping a
    running maximum (strict comparison: an earlier class keeps a tie)."""
    logits = logits.contiguous()  # the NCHW kernel: one arithmetic for every class plane
    batch, classes = logits.shape[:2]
    per_chunk = max(1, _LOGITS_CHUNK_ELEMENTS // max(1, batch * size[0] * size[1]))
    if per_chunk >= classes:
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False).argmax(dim=1)
    best_value = best_index = None
    for start in range(0, classes, per_chunk):
        resized = F.interpolate(logits[:, start:start + per_chunk], size=size, mode="bilinear", align_corners=False)
        value, index = resized.max(dim=1)
        if best_value is None:
            best_value, best_index = value, index
        else:
            better = value > best_value
            best_value = torch.where(better, value, best_value)
            best_index = torch.where(better, index + start, best_index)
    return best_index


def argmax_classes(logits: torch.Tensor) -> torch.Tensor:
    """(B, H, W) int64 argmax over dim 1 (first index wins ties).  Channels-last logits on the CPU
    go through numpy, which reduces each pixel's contiguous class vector ~5x faster than torch."""
    if logits.device.type == "cpu" and logits.dtype == torch.float32 and \
            logits.is_contiguous(memory_format=torch.channels_last):
        return torch.from_numpy(np.argmax(logits.permute(0, 2, 3, 1).numpy(), axis=-1))
    return logits.argmax(dim=1)


# --------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _AxisWeights:
    """What ATen's CPU bilinear kernel uses along one axis for every output index: the two source
    indices and their float32 weights (area_pixel_compute_source_index, guard_index_and_lambda)."""

    i0: np.ndarray
    i1: np.ndarray
    w0: np.ndarray
    w1: np.ndarray


def _axis_weights(in_size: int, out_size: int) -> _AxisWeights:
    if in_size == out_size:  # ATen copies: index o with weights (1, 0)
        index = np.arange(out_size)
        return _AxisWeights(index, index, np.ones(out_size, np.float32), np.zeros(out_size, np.float32))
    scale = np.float32(in_size) / np.float32(out_size)
    source = scale * (np.arange(out_size).astype(np.float32) + np.float32(0.5)) - np.float32(0.5)
    source = np.maximum(source, np.float32(0.0))
    i0 = np.minimum(np.floor(source).astype(np.int64), in_size - 1)
    w1 = np.clip(source - i0.astype(np.float32), np.float32(0.0), np.float32(1.0))
    i1 = np.where(i0 < in_size - 1, i0 + 1, i0)
    return _AxisWeights(i0, i1, np.float32(1.0) - w1, w1)


def _fma(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """float32 ``a*b + c`` rounded once, as a fused multiply-add does.

    The product of two float32 is exact in float64; the sum is rounded to odd in float64 (the
    TwoSum error says which way the exact sum lies), and rounding that to float32 is then the
    correctly rounded result (float64 has more than 24 + 2 bits)."""
    product = a.astype(np.float64) * b
    total = product + c
    back = total - product
    error = (product - (total - back)) + (c - back)
    inexact_even = (error != 0) & ((total.view(np.int64) & 1) == 0)
    if inexact_even.any():
        total = np.where(inexact_even, np.nextafter(total, np.where(error > 0, np.inf, -np.inf)), total)
    return total.astype(np.float32)


def _interpolate(a, b, c, d, w0, w1, h0, h1) -> np.ndarray:
    """ATen's CPU bilinear kernel for NCHW float32 (upsample_generic_Nd, Interpolate<2>), as built
    for AVX2/AVX512 with contracted multiply-adds: along the row first, then between the rows.
    ``a, b`` are the top row's left/right neighbours, ``c, d`` the bottom row's."""
    top = _fma(a, w0, b * w1)
    bottom = _fma(c, w0, d * w1)
    return _fma(top, h0, bottom * h1)


def _emulated_resize(logits: np.ndarray, rows: _AxisWeights, cols: _AxisWeights,
                     out_rows: np.ndarray, out_cols: np.ndarray) -> np.ndarray:
    """Interpolated values at output pixels (out_rows[k], out_cols[k]) of NHWC ``logits`` (one
    image): (K, C) float32."""
    r0, r1 = rows.i0[out_rows], rows.i1[out_rows]
    c0, c1 = cols.i0[out_cols], cols.i1[out_cols]
    w0, w1 = cols.w0[out_cols, None], cols.w1[out_cols, None]
    h0, h1 = rows.w0[out_rows, None], rows.w1[out_rows, None]
    return _interpolate(logits[r0, c0], logits[r0, c1], logits[r1, c0], logits[r1, c1], w0, w1, h0, h1)


_verified: dict[tuple, bool] = {}
_verified_lock = threading.Lock()


def _exact_on_host(logits: torch.Tensor, size: tuple[int, int]) -> bool:
    """Whether the host path applies: CPU logits resized to at least as many pixels (shrinking, the
    reference touches fewer values than the network has and is as fast), and a geometry for which
    the emulation reproduces the reference bit for bit (checked once)."""
    batch, classes, height, width = logits.shape
    if logits.device.type != "cpu" or logits.dtype != torch.float32 or classes < 4 or min(height, width) < 2 \
            or size[0] + size[1] <= _SMALL_OUTPUT_SIDES or size[0] * size[1] < height * width:
        return False
    key = (classes, height, width, size)
    with _verified_lock:
        if key not in _verified:
            _verified[key] = _emulation_matches(classes, height, width, size)
        return _verified[key]


def _emulation_matches(classes: int, height: int, width: int, size: tuple[int, int]) -> bool:
    """Random logits of this geometry through F.interpolate and through the emulation: equal bits
    at every output row and column (a full row and a full column of pixels, plus a scatter)?"""
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(1, classes, height, width, generator=generator) * 8
    with torch.inference_mode():
        reference = F.interpolate(probe, size=size, mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    rows, cols = _axis_weights(height, size[0]), _axis_weights(width, size[1])
    rng = np.random.default_rng(0)
    out_rows = np.concatenate([np.arange(size[0]), np.full(size[1], size[0] // 2), rng.integers(0, size[0], 4096)])
    out_cols = np.concatenate([np.full(size[0], size[1] // 3), np.arange(size[1]), rng.integers(0, size[1], 4096)])
    emulated = _emulated_resize(probe[0].permute(1, 2, 0).numpy(), rows, cols, out_rows, out_cols)
    return bool(np.array_equal(emulated.view(np.int32), reference[out_rows, out_cols].view(np.int32)))


# --------------------------------------------------------------------------------------------------
def _host_resized_argmax(logits: torch.Tensor, size: tuple[int, int], dtype: np.dtype) -> np.ndarray:
    batch, classes, height, width = logits.shape
    rows, cols = _axis_weights(height, size[0]), _axis_weights(width, size[1])
    nhwc = logits.detach().permute(0, 2, 3, 1)
    nhwc = np.ascontiguousarray(nhwc.numpy())  # a view for channels-last logits, else one copy
    labels = np.empty((batch,) + size, dtype)
    for image in range(batch):
        labels[image] = _image_labels(nhwc[image], rows, cols)
    return labels


def _image_labels(logits: np.ndarray, rows: _AxisWeights, cols: _AxisWeights) -> np.ndarray:
    """(H, W) int16 labels of one image from its (h, w, C) logits."""
    height, width, classes = logits.shape
    best = np.argmax(logits, axis=-1)
    best_value = np.take_along_axis(logits, best[..., None], axis=-1)[..., 0]
    bound = np.float32(ROUNDING_BOUND * max(float(best_value.max()), -float(logits.min()), 1e-30))
    # Decided: no other class within the rounding bound of the best (a tie is never decided).
    near_best = logits >= (best_value - bound)[..., None]
    decided = np.add.reduce(near_best.view(np.uint8), axis=-1, dtype=np.uint8) == 1

    # A network pixel (i, j) anchors the 2x2 block (i..i+1, j..j+1) (clamped at the last row and
    # column, as the kernel clamps its second index); an output pixel lies in the block of its
    # first neighbours (rows.i0, cols.i0).
    down = np.minimum(np.arange(height) + 1, height - 1)
    right = np.minimum(np.arange(width) + 1, width - 1)
    agree = decided & decided[down] & decided[:, right] & decided[down][:, right]
    agree &= (best == best[down]) & (best == best[:, right]) & (best == best[down][:, right])
    labels = np.where(agree, best, -1).astype(np.int16)[rows.i0][:, cols.i0]

    # The output pixels of the other blocks: block (i, j) holds the output rows whose first
    # neighbour is row i (a run: rows.i0 never decreases) times the columns whose first is j.
    row_count, col_count = np.bincount(rows.i0, minlength=height), np.bincount(cols.i0, minlength=width)
    row_start, col_start = np.cumsum(row_count) - row_count, np.cumsum(col_count) - col_count
    top, left = np.nonzero(~agree & (row_count[:, None] > 0) & (col_count[None, :] > 0))
    if top.size:
        per_block = row_count[top] * col_count[left]
        pixel_block = np.repeat(np.arange(top.size), per_block)
        within = np.arange(pixel_block.size) - np.repeat(np.cumsum(per_block) - per_block, per_block)
        across = col_count[left][pixel_block]
        out_rows = row_start[top][pixel_block] + within // across
        out_cols = col_start[left][pixel_block] + within % across
        labels[out_rows, out_cols] = _boundary_labels(logits, best, top, left, pixel_block, rows, cols,
                                                      out_rows, out_cols, bound)
    return labels


def _boundary_labels(logits, best, top, left, pixel_block, rows: _AxisWeights, cols: _AxisWeights, out_rows,
                     out_cols, bound) -> np.ndarray:
    """Exact labels of the output pixels (out_rows, out_cols) of the blocks anchored at (top, left)
    (pixel k lies in block pixel_block[k]), whose corners do not agree: interpolating only the
    classes that can win there."""
    height, width, classes = logits.shape
    bottom = np.minimum(top + 1, height - 1)
    right = np.minimum(left + 1, width - 1)
    pixels = logits.reshape(-1, classes)
    corner_pixels = np.stack([top * width + left, top * width + right, bottom * width + left,
                              bottom * width + right], axis=1)  # (blocks, 4)
    # Any class's interpolated value is at least its smallest corner value (less rounding), so the
    # winner reaches the best of those, the block's floor; a class whose largest corner value stays
    # below the floor cannot win.  A lower bound of the floor from the corners' own best classes
    # (16 values a block) and each class's largest value in the image rule out, for every block at
    # once, the classes that never come near (most of the 150 in a real scene).
    corner_best = best.reshape(-1)[corner_pixels]  # (blocks, 4)
    floor_bound = pixels[corner_pixels[:, :, None], corner_best[:, None, :]].min(axis=1).max(axis=1)
    active = np.flatnonzero(pixels.max(axis=0) >= floor_bound.min() - 2 * bound)
    corners = tuple(pixels[corner_pixels[:, corner, None], active] for corner in range(4))  # 4 x (blocks, A)
    lowest = np.minimum(np.minimum(corners[0], corners[1]), np.minimum(corners[2], corners[3]))
    highest = np.maximum(np.maximum(corners[0], corners[1]), np.maximum(corners[2], corners[3]))
    candidate = highest >= (lowest.max(axis=1) - 2 * bound)[:, None]
    counts = np.count_nonzero(candidate, axis=1)
    # Each block's candidate classes in ascending order (nonzero walks each row in order, and
    # ``active`` is ascending), padded to the largest count with the block's first candidate.
    pair_block, pair_class = np.nonzero(candidate)
    first = np.cumsum(counts) - counts
    order = np.repeat(pair_class[first][:, None], counts.max(), axis=1)
    order[pair_block, np.arange(pair_block.size) - np.repeat(first, counts)] = pair_class
    values = [np.take_along_axis(corner, order, axis=1) for corner in corners]  # 4 x (blocks, K)
    order = active[order]

    labels = np.empty(out_rows.size, np.int16)
    pixel_counts = counts[pixel_block]
    for count in np.unique(counts):  # pixels grouped by their blocks' number of candidates
        members = np.flatnonzero(pixel_counts == count)
        block_values = [value[:, :count] for value in values]
        if count == 2:  # most boundary pixels: per block, the two candidates' difference at each corner
            block_values = [value[:, :1] - value[:, 1:] for value in block_values]
        for start in range(0, members.size, max(1, _PAIRS_PER_CHUNK // count)):
            part = members[start:start + max(1, _PAIRS_PER_CHUNK // count)]
            block_here = pixel_block[part]
            winner = _winners([value[block_here] for value in block_values], count, rows, cols, out_rows[part],
                              out_cols[part], bound, lambda: [value[block_here, :count] for value in values])
            labels[part] = order[block_here, winner]
    return labels


def _winners(values, count: int, rows: _AxisWeights, cols: _AxisWeights, out_rows, out_cols, bound,
             candidate_values) -> np.ndarray:
    """Position of the kernel's argmax among ``count`` candidates, lowest position on ties.

    ``values``: the four (n, K) arrays of the candidates' values at the top-left, top-right,
    bottom-left and bottom-right corners; for two candidates, the (n, 1) differences first minus
    second instead.  ``candidate_values()`` gives the former in every case (for near-ties)."""
    if count == 1:
        return np.zeros(values[0].shape[0], np.int64)
    w0, w1 = cols.w0[out_cols, None], cols.w1[out_cols, None]
    h0, h1 = rows.w0[out_rows, None], rows.w1[out_rows, None]
    # Plain float32 arithmetic is within a few ulps of the kernel's: where one candidate leads every
    # other by more than the rounding bound, it is the kernel's argmax too.
    approximate = (values[0] * w0 + values[1] * w1) * h0 + (values[2] * w0 + values[3] * w1) * h1
    if count == 2:  # the sign of the interpolated difference decides
        winner = (approximate[:, 0] < 0).astype(np.int64)
        close = np.abs(approximate[:, 0]) <= bound
    else:
        winner = np.argmax(approximate, axis=1)
        leader = np.take_along_axis(approximate, winner[:, None], axis=1)
        close = np.count_nonzero(approximate >= leader - bound, axis=1) > 1
    if close.any():  # near-ties: the kernel's own rounding decides, so emulate it exactly
        exact = _interpolate(*(value[close] for value in candidate_values()), w0[close], w1[close], h0[close],
                             h1[close])
        winner[close] = np.argmax(exact, axis=1)
    return winner
