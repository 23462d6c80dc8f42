"""Depth and segmentation metrics (numpy only; no ROS, no torch).

Depth metrics follow the usual monocular-depth evaluation (Eigen et al. 2014, as used by the DPT
and MiDaS papers): computed per frame over the valid ground-truth pixels, then averaged over frames.
Segmentation metrics follow the ADE20K/mmseg convention: one confusion matrix is accumulated over
the whole run and IoU is computed from it, so large and small frames weigh by their pixel counts.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dpt_ros.labels import IGNORE_LABEL

DEPTH_METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "delta1", "delta2", "delta3")

# Thresholds of the three accuracy metrics: fraction of pixels with max(pred/gt, gt/pred) < 1.25^k.
DELTA_BASE = 1.25

NUM_ADE20K_CLASSES = 150


# --------------------------------------------------------------------------------------------
# Depth
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DepthMetrics:
    """Standard depth errors of one frame (or their mean over frames)."""

    abs_rel: float
    sq_rel: float
    rmse: float
    rmse_log: float
    delta1: float
    delta2: float
    delta3: float
    valid_pixels: int

    def as_dict(self) -> dict:
        return asdict(self)


def valid_depth_mask(gt: np.ndarray, min_depth: float, max_depth: float) -> np.ndarray:
    """Pixels whose ground truth is finite and within [min_depth, max_depth] metres.

    REP 118 marks missing depth as NaN (16UC1 uses 0, which the codec turns into NaN), so a plain
    range test plus a finiteness test covers every "no measurement" encoding.
    """
    gt = np.asarray(gt)
    with np.errstate(invalid="ignore"):
        return np.isfinite(gt) & (gt >= min_depth) & (gt <= max_depth)


def _evaluated_pixels(pred, gt, min_depth: float, max_depth: float, mask=None):
    """(prediction, ground truth) float64 values of the pixels a depth score covers.

    Pixels with valid ground truth (see valid_depth_mask), in the optional ``mask``, where the
    prediction is not NaN (REP 117: no estimate).  Predictions are clipped to [min_depth,
    max_depth], as the KITTI/NYU protocols do, so one wild pixel cannot dominate RMSE; REP 117's
    +Inf (beyond range) and -Inf (too close) are thereby scored as max_depth and min_depth.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from ground truth {gt.shape}")
    valid = valid_depth_mask(gt, min_depth, max_depth) & ~np.isnan(pred)
    if mask is not None:
        valid &= np.asarray(mask, dtype=bool)
    return np.clip(pred[valid], min_depth, max_depth), gt[valid]


# Per-pixel terms whose sums make every depth metric (and add up over frames and bags).
PIXEL_TERMS = ("abs_rel", "sq_rel", "squared_error", "squared_log_error", "delta1", "delta2", "delta3")


def _pixel_sums(p: np.ndarray, g: np.ndarray) -> dict[str, float]:
    ratio = np.maximum(p / g, g / p)
    diff = p - g
    return {
        "abs_rel": float(np.sum(np.abs(diff) / g)),
        "sq_rel": float(np.sum(diff**2 / g)),
        "squared_error": float(np.sum(diff**2)),
        "squared_log_error": float(np.sum((np.log(p) - np.log(g)) ** 2)),
        "delta1": float(np.count_nonzero(ratio < DELTA_BASE)),
        "delta2": float(np.count_nonzero(ratio < DELTA_BASE**2)),
        "delta3": float(np.count_nonzero(ratio < DELTA_BASE**3)),
    }


def _metrics_of_pixel_sums(sums: dict[str, float], count: int) -> DepthMetrics:
    return DepthMetrics(
        abs_rel=sums["abs_rel"] / count, sq_rel=sums["sq_rel"] / count,
        rmse=math.sqrt(sums["squared_error"] / count), rmse_log=math.sqrt(sums["squared_log_error"] / count),
        delta1=sums["delta1"] / count, delta2=sums["delta2"] / count, delta3=sums["delta3"] / count,
        valid_pixels=int(count))


def depth_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    min_depth: float,
    max_depth: float,
    mask: np.ndarray | None = None,
) -> DepthMetrics | None:
    """Depth errors of a metric prediction against metric ground truth (both metres, same shape),
    over the pixels of :func:`_evaluated_pixels`.  Returns None when no pixel is left to evaluate
    (the frame then has no depth metrics rather than NaNs)."""
    p, g = _evaluated_pixels(pred, gt, min_depth, max_depth, mask)
    if p.size == 0:
        return None
    return _metrics_of_pixel_sums(_pixel_sums(p, g), p.size)


@dataclass
class DepthMetricSums:
    """Additive sums of depth errors over the frames of a run: what report.json carries so that
    runs (bags of a fleet) combine exactly, weighting frames equally or pixels equally.

    ``frame_sums``: each per-frame metric summed over frames (their mean weighs frames equally,
    the usual benchmark figure); ``pixel_sums``: each per-pixel term summed over all evaluated
    pixels (their mean weighs pixels equally).
    """

    frames: int = 0
    pixels: int = 0
    frame_sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(DEPTH_METRIC_NAMES, 0.0))
    pixel_sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(PIXEL_TERMS, 0.0))

    def add(self, pred, gt, min_depth: float, max_depth: float, mask=None) -> DepthMetrics | None:
        """Score one frame, add it to the sums and return its metrics (None: nothing to score)."""
        p, g = _evaluated_pixels(pred, gt, min_depth, max_depth, mask)
        if p.size == 0:
            return None
        sums = _pixel_sums(p, g)
        metrics = _metrics_of_pixel_sums(sums, p.size)
        self.frames += 1
        self.pixels += p.size
        for name in DEPTH_METRIC_NAMES:
            self.frame_sums[name] += getattr(metrics, name)
        for name in PIXEL_TERMS:
            self.pixel_sums[name] += sums[name]
        return metrics

    def merge(self, other: "DepthMetricSums") -> None:
        self.frames += other.frames
        self.pixels += other.pixels
        for name in DEPTH_METRIC_NAMES:
            self.frame_sums[name] += other.frame_sums[name]
        for name in PIXEL_TERMS:
            self.pixel_sums[name] += other.pixel_sums[name]

    def frame_mean(self) -> DepthMetrics | None:
        """Mean of the per-frame metrics (each frame weighs the same); valid_pixels is the total."""
        if not self.frames:
            return None
        return DepthMetrics(**{name: self.frame_sums[name] / self.frames for name in DEPTH_METRIC_NAMES},
                            valid_pixels=self.pixels)

    def pixel_mean(self) -> DepthMetrics | None:
        """The metrics over all evaluated pixels of all frames at once (each pixel weighs the same)."""
        return _metrics_of_pixel_sums(self.pixel_sums, self.pixels) if self.pixels else None

    def to_json(self) -> dict:
        return {"frames": self.frames, "pixels": self.pixels, "frame_sums": dict(self.frame_sums),
                "pixel_sums": dict(self.pixel_sums)}

    @classmethod
    def from_json(cls, data: dict) -> "DepthMetricSums":
        return cls(frames=int(data["frames"]), pixels=int(data["pixels"]),
                   frame_sums={name: float(data["frame_sums"][name]) for name in DEPTH_METRIC_NAMES},
                   pixel_sums={name: float(data["pixel_sums"][name]) for name in PIXEL_TERMS})


class DepthErrorHistogram:
    """Absolute relative error binned by ground-truth depth, accumulated over frames.

    Shows where in the depth range a model is wrong (e.g. far pixels for an indoor model), which
    the frame-level means hide.  It accumulates in fine bins over the whole evaluation range
    (``bins``, 2 cm over 0-80 m by default), which add up across runs with the same range;
    :meth:`over_data` regroups them into a few bins spanning only the depths the data covers.
    """

    FINE_BINS = 4000

    def __init__(self, min_depth: float, max_depth: float, bins: int = FINE_BINS):
        if not (0 <= min_depth < max_depth < math.inf):
            raise ValueError(f"need 0 <= min_depth < max_depth < inf, got {min_depth}, {max_depth}")
        self.edges = np.linspace(min_depth, max_depth, bins + 1)
        self.counts = np.zeros(bins, dtype=np.int64)
        self.abs_rel_sum = np.zeros(bins, dtype=np.float64)

    def add(self, pred: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> None:
        min_depth, max_depth = float(self.edges[0]), float(self.edges[-1])
        p, g = _evaluated_pixels(pred, gt, min_depth, max_depth, mask)
        index = np.clip(np.searchsorted(self.edges, g, side="right") - 1, 0, len(self.counts) - 1)
        self.counts += np.bincount(index, minlength=len(self.counts))
        self.abs_rel_sum += np.bincount(index, weights=np.abs(p - g) / g, minlength=len(self.counts))

    def merge(self, other: "DepthErrorHistogram") -> None:
        if not np.array_equal(self.edges, other.edges):
            raise ValueError("histograms with different bins cannot be merged")
        self.counts += other.counts
        self.abs_rel_sum += other.abs_rel_sum

    def mean_abs_rel(self) -> np.ndarray:
        """Mean AbsRel per bin (NaN for empty bins)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.counts > 0, self.abs_rel_sum / np.maximum(self.counts, 1), np.nan)

    def over_data(self, max_bins: int = 20) -> "DepthErrorHistogram":
        """The same counts in at most ``max_bins`` equal bins from the nearest to the farthest
        ground truth seen (whole fine bins each); an empty histogram stays as it is."""
        occupied = np.flatnonzero(self.counts)
        if occupied.size == 0:
            return self
        first, last = int(occupied[0]), int(occupied[-1])
        group = -(-(last - first + 1) // max_bins)  # fine bins per shown bin
        shown = -(-(last - first + 1) // group)
        width = self.edges[1] - self.edges[0]
        result = DepthErrorHistogram.__new__(DepthErrorHistogram)
        result.edges = self.edges[0] + width * (first + group * np.arange(shown + 1))
        padded = shown * group
        counts = np.zeros(padded, np.int64)
        sums = np.zeros(padded, np.float64)
        counts[: last - first + 1] = self.counts[first:last + 1]
        sums[: last - first + 1] = self.abs_rel_sum[first:last + 1]
        result.counts = counts.reshape(shown, group).sum(axis=1)
        result.abs_rel_sum = sums.reshape(shown, group).sum(axis=1)
        return result

    def shown_json(self) -> dict:
        """The bins report.json and the error-vs-depth plot show: :meth:`over_data`'s edges, pixel
        counts and mean AbsRel (None for an empty bin)."""
        shown = self.over_data()
        return {"edges_m": shown.edges.tolist(), "pixels": shown.counts.tolist(),
                "mean_abs_rel": [None if math.isnan(v) else float(v) for v in shown.mean_abs_rel()]}

    def to_json(self) -> dict:
        """Sparse: the range, the bin count and [bin, pixels, AbsRel sum] of the non-empty bins."""
        occupied = np.flatnonzero(self.counts)
        return {"min_depth": float(self.edges[0]), "max_depth": float(self.edges[-1]), "bins": len(self.counts),
                "nonzero_bin_pixels_abs_rel_sum": [[int(i), int(self.counts[i]), float(self.abs_rel_sum[i])]
                                                   for i in occupied]}

    @classmethod
    def from_json(cls, data: dict) -> "DepthErrorHistogram":
        histogram = cls(data["min_depth"], data["max_depth"], data["bins"])
        for index, pixels, abs_rel_sum in data["nonzero_bin_pixels_abs_rel_sum"]:
            histogram.counts[index] = pixels
            histogram.abs_rel_sum[index] = abs_rel_sum
        return histogram


@dataclass
class DepthRowSums:
    """Additive sums of one row of a depth comparison (report.json ``sums.depth_rows``: online
    alignment, per-frame oracle, no alignment): the error sums of the frames the row scored and,
    by reason, how many frames it could not score (e.g. no usable online alignment), so that a
    row over many bags is the merge of its rows per bag."""

    depth: DepthMetricSums = field(default_factory=DepthMetricSums)
    unscored: dict[str, int] = field(default_factory=dict)

    def count_unscored(self, reason: str) -> None:
        self.unscored[reason] = self.unscored.get(reason, 0) + 1

    def merge(self, other: "DepthRowSums") -> None:
        self.depth.merge(other.depth)
        for reason, count in other.unscored.items():
            self.unscored[reason] = self.unscored.get(reason, 0) + count

    def to_json(self) -> dict:
        return {"depth": self.depth.to_json(), "unscored_frames": dict(self.unscored)}

    @classmethod
    def from_json(cls, data: dict) -> "DepthRowSums":
        return cls(DepthMetricSums.from_json(data["depth"]),
                   {str(reason): int(count) for reason, count in data["unscored_frames"].items()})


# --------------------------------------------------------------------------------------------
# Segmentation
# --------------------------------------------------------------------------------------------

class ConfusionMatrix:
    """Pixel counts of (ground-truth class, predicted class), ignore pixels excluded.

    ``matrix[g, p]`` counts pixels of true class g predicted as p. Ground-truth pixels equal to
    ``ignore_index`` (or outside 0..num_classes-1) are not evaluated. A prediction outside the class
    range (e.g. 255, "no prediction") on an evaluated pixel is an error for its true class; it is
    counted in ``unpredicted[g]`` because it has no column.
    """

    def __init__(self, num_classes: int = NUM_ADE20K_CLASSES, ignore_index: int = IGNORE_LABEL):
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.unpredicted = np.zeros(num_classes, dtype=np.int64)

    def add(self, pred: np.ndarray, gt: np.ndarray) -> None:
        pred = np.asarray(pred).astype(np.int64, copy=False).ravel()
        gt = np.asarray(gt).astype(np.int64, copy=False).ravel()
        if pred.shape != gt.shape:
            raise ValueError(f"prediction has {pred.size} pixels, ground truth {gt.size}")
        n = self.num_classes
        evaluated = (gt >= 0) & (gt < n) & (gt != self.ignore_index)
        in_range = evaluated & (pred >= 0) & (pred < n)
        self.matrix += np.bincount(gt[in_range] * n + pred[in_range], minlength=n * n).reshape(n, n)
        self.unpredicted += np.bincount(gt[evaluated & ~in_range], minlength=n)

    def merge(self, other: "ConfusionMatrix") -> None:
        self.matrix += other.matrix
        self.unpredicted += other.unpredicted

    @property
    def total(self) -> int:
        return int(self.matrix.sum() + self.unpredicted.sum())

    def metrics(self) -> "SegmentationMetrics | None":
        """Pixel accuracy, per-class IoU and their mean; None when no pixel was evaluated.

        A class enters the mean IoU when it is present, i.e. its union (ground truth or prediction)
        is non-empty; a class that is predicted but absent from the ground truth therefore counts
        with IoU 0, as in mmseg's ADE20K evaluation.
        """
        total = self.total
        if total == 0:
            return None
        true_positive = np.diag(self.matrix).astype(np.float64)
        gt_area = self.matrix.sum(axis=1) + self.unpredicted
        pred_area = self.matrix.sum(axis=0)
        union = gt_area + pred_area - true_positive
        present = np.flatnonzero(union > 0)
        per_class = {int(c): float(true_positive[c] / union[c]) for c in present}
        return SegmentationMetrics(
            pixel_accuracy=float(true_positive.sum() / total),
            mean_iou=float(np.mean(list(per_class.values()))),
            per_class_iou=per_class,
            evaluated_pixels=total,
        )

    def nonzero_entries(self) -> list[list[int]]:
        """Sparse [gt, pred, count] triples (a 150x150 matrix is mostly zeros)."""
        rows, cols = np.nonzero(self.matrix)
        return [[int(r), int(c), int(self.matrix[r, c])] for r, c in zip(rows, cols)]

    def to_json(self) -> dict:
        return {"num_classes": self.num_classes, "ignore_index": self.ignore_index,
                "entries_gt_pred_count": self.nonzero_entries(), "unpredicted": self.unpredicted.tolist()}

    @classmethod
    def from_json(cls, data: dict) -> "ConfusionMatrix":
        confusion = cls(data["num_classes"], data["ignore_index"])
        for gt, pred, count in data["entries_gt_pred_count"]:
            confusion.matrix[gt, pred] = count
        confusion.unpredicted[:] = data["unpredicted"]
        return confusion


@dataclass(frozen=True)
class SegmentationMetrics:
    pixel_accuracy: float
    mean_iou: float
    per_class_iou: dict[int, float]
    evaluated_pixels: int

    def as_dict(self) -> dict:
        return {
            "pixel_accuracy": self.pixel_accuracy,
            "mean_iou": self.mean_iou,
            "per_class_iou": {str(k): v for k, v in self.per_class_iou.items()},
            "evaluated_pixels": self.evaluated_pixels,
        }


def segmentation_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    num_classes: int = NUM_ADE20K_CLASSES,
    ignore_index: int = IGNORE_LABEL,
) -> SegmentationMetrics | None:
    """Metrics of one label map against its ground truth (see ConfusionMatrix.metrics)."""
    confusion = ConfusionMatrix(num_classes, ignore_index)
    confusion.add(pred, gt)
    return confusion.metrics()


# --------------------------------------------------------------------------------------------
# Ground-truth label conventions
# --------------------------------------------------------------------------------------------

def load_label_map(path: str | Path) -> dict[int, int]:
    """Read a ground-truth id -> ADE20K class index mapping from JSON or CSV.

    JSON: an object {"gt_id": ade_index, ...}. CSV: rows ``gt_id,ade_index`` (a header row whose
    first field is not a number is skipped). An index of 255 (or any value outside 0..149) maps the
    id to "ignore".
    """
    path = Path(path)
    text = path.read_text()
    if path.suffix.lower() == ".json":
        raw = json.loads(text)
        if not isinstance(raw, dict):
            raise ValueError(f"{path}: expected a JSON object mapping ground-truth ids to classes")
        pairs = list(raw.items())
    else:
        pairs = []
        for row in csv.reader(text.splitlines()):
            if not row or row[0].strip().startswith("#"):
                continue
            if len(row) < 2:
                raise ValueError(f"{path}: expected rows 'gt_id,ade20k_index', got {row!r}")
            if not row[0].strip().lstrip("-").isdigit():
                continue  # header
            pairs.append((row[0], row[1]))
    try:
        return {int(k): int(v) for k, v in pairs}
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{path}: ids and class indices must be integers ({exc})") from None


def remap_ground_truth_labels(
    gt: np.ndarray,
    mapping: dict[int, int] | None = None,
    offset: int = 0,
    num_classes: int = NUM_ADE20K_CLASSES,
    ignore_index: int = IGNORE_LABEL,
) -> np.ndarray:
    """Ground-truth ids -> our label convention (0..num_classes-1, ``ignore_index`` elsewhere).

    With ``mapping``, each id is looked up (ids not in it become ignore). Otherwise ``offset`` is
    subtracted: offset 1 converts the raw ADE20K annotation (0 = unlabeled, k = class k-1).
    Anything that lands outside the class range becomes ``ignore_index``.
    """
    gt = np.asarray(gt)
    if gt.dtype.kind not in "ui":
        raise ValueError(f"ground-truth labels must be integers, got {gt.dtype}")
    if mapping is not None:
        size = max(int(gt.max(initial=0)), max(mapping, default=0)) + 1
        table = np.full(size, ignore_index, dtype=np.int64)
        for source, target in mapping.items():
            if source >= 0:
                table[source] = target
        ids = gt.astype(np.int64)
        mapped = table[np.maximum(ids, 0)]
        mapped[ids < 0] = ignore_index
    else:
        mapped = gt.astype(np.int64) - offset
    mapped[(mapped < 0) | (mapped >= num_classes)] = ignore_index
    return mapped.astype(np.uint8)
