"""Online alignment of the model's relative inverse depth to sparse metric depth (ROS-free, numpy).

A relative model (DPT, MiDaS, Depth Anything) predicts inverse depth up to an unknown affine map:
``1 / depth = scale * prediction + shift`` (inverse metres).  Given metric depth measured at a
few pixels of the same frame (dpt_ros.sparse_depth: lidar, RGB-D, stereo), the aligner finds
scale and shift frame after frame, so that dpt_ros.depth.relative_to_metric(prediction, scale,
shift) gives depth in metres for any relative model.  In ``scale_only`` mode the shift is held at
0: the prediction is then a metric model's inverse depth (1 / its depth) and the fitted scale a
correction, depth = model depth / scale.

Per frame (:meth:`OnlineAligner.update`):

1. The prediction is read at the samples' nearest pixels; samples are capped at ``max_samples``.
2. Robust fit (:func:`robust_fit`).  The residual of a sample is relative:
   ``r = (scale * p + shift) * depth - 1``, i.e. measured depth / aligned depth - 1, so one
   threshold fits near and far points and every model's output units.  RANSAC proposes
   (scale, shift) from random pairs of samples (one sample in scale_only mode; the current
   estimate is one more hypothesis) and keeps the one with the least truncated squared residual
   (MSAC); then weighted least squares in inverse depth on its inliers (weights depth**2, i.e.
   minimising the squared relative residuals; dpt_ros.depth.fit_scale_shift, the evaluator's
   fit) is repeated until the inlier set settles.  Occlusion edges, glass and calibration error
   give samples far off the model: they fall outside ``inlier_threshold`` and take no part.
   The fit is refused when it has fewer than ``min_inliers`` inliers, fewer than
   ``min_inlier_fraction`` of the samples, an RMS inlier residual above ``max_residual``, or a
   scale that is not positive (inverse depth must grow with the prediction).
3. Temporal filter on (scale, shift).  The aligned inverse depth is linear in the two
   parameters, so averaging them averages the aligned maps.  The first accepted fit initialises
   the estimate; later ones are blended in with weight max(``smoothing``, 1/n) (a running mean
   over the first fits, then an exponential moving average) while the state is ``converging``,
   ``tracking`` once n >= 1/smoothing.  Gating: a fit that would change the aligned depth at its
   inliers by more than ``gate`` (median relative change) is rejected, so one bad frame does not
   make the depth jump; when ``gate_frames`` gated fits in a row agree with each other, the scene
   (or the relative model's own scale) really changed and the estimate is re-initialised.
4. Age: seconds (image stamps) since the last accepted fit.  Past ``timeout`` the estimate is
   ``stale`` and must not be used for metric output; the next accepted fit re-initialises it.
   A stamp earlier than the last accepted one (a bag played in a loop, a simulator restart)
   resets the aligner, as tf2 clears its buffer on a backward time jump.

:meth:`OnlineAligner.reset` forgets everything (the node calls it when the model is reloaded:
another model has another scale).
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np

from dpt_ros.depth import AlignmentError, fit_scale, fit_scale_shift
from dpt_ros.geometry import nearest_pixel
from dpt_ros.sparse_depth import DEFAULT_MAX_SAMPLES, DepthSamples

ALIGNMENT_MODES = ("full", "scale_only")
# RANSAC scores each hypothesis on at most this many samples (evenly spread); the refinement uses
# them all.  256 samples tell a hypothesis with 70 % inliers from one with 30 % with certainty.
SCORING_SAMPLES = 256
# Inlier-set refinements after RANSAC; it usually settles after two.
MAX_REFINEMENTS = 5


class AlignmentState(enum.IntEnum):
    """What the aligner's estimate is worth at a frame (values = DepthAlignment.msg constants)."""

    NONE = 0        # no estimate since start or reset: no metric output
    CONVERGING = 1  # estimate from fewer than 1/smoothing accepted fits; usable
    TRACKING = 2    # estimate follows accepted fits; usable
    REJECTED = 3    # this frame's samples gave no acceptable fit (or were gated); the estimate,
                    # still younger than the timeout, stays in use
    STALE = 4       # no accepted fit for longer than the timeout: not usable until the next one


USABLE_STATES = (AlignmentState.CONVERGING, AlignmentState.TRACKING, AlignmentState.REJECTED)


@dataclass(frozen=True)
class AlignerSettings:
    """Settings of :class:`OnlineAligner` (the node's alignment.* parameters)."""

    mode: str = "full"                # "full": scale and shift; "scale_only": shift fixed at 0
    max_samples: int = DEFAULT_MAX_SAMPLES  # samples per frame; more are cut, evenly spaced
    inlier_threshold: float = 0.15    # |measured / aligned depth - 1| of an inlier
    min_inliers: int = 30             # fewer inliers: the frame's fit is refused
    min_inlier_fraction: float = 0.3  # inliers / samples below this: refused
    # RMS relative residual of the inliers above this: refused.  With the threshold above, fits
    # of samples with independent relative errors up to about 11 % (a zero-shot relative model's
    # typical error) pass and 15 % mostly fail; samples unrelated to the prediction never pass.
    max_residual: float = 0.08
    iterations: int = 64              # RANSAC hypotheses per frame
    smoothing: float = 0.3            # weight of a new fit in the moving average (1 = no filter)
    gate: float = 0.2                 # a fit changing the aligned depth by more is gated
    gate_frames: int = 3              # this many agreeing gated fits in a row re-initialise
    timeout: float = 1.0              # seconds without an accepted fit until stale; 0 = never
    seed: int = 0                     # RANSAC's random generator, re-seeded on reset

    def __post_init__(self):
        problems = []
        if self.mode not in ALIGNMENT_MODES:
            problems.append(f"mode must be one of {', '.join(ALIGNMENT_MODES)}, got {self.mode!r}")
        for name, low in (("max_samples", 1), ("min_inliers", 1), ("iterations", 1), ("gate_frames", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
                problems.append(f"{name} must be an integer >= {low}, got {value!r}")
        for name, low, high, open_low in (("inlier_threshold", 0.0, math.inf, True),
                                          ("min_inlier_fraction", 0.0, 1.0, False),
                                          ("max_residual", 0.0, math.inf, True),
                                          ("smoothing", 0.0, 1.0, True),
                                          ("gate", 0.0, math.inf, True),
                                          ("timeout", 0.0, math.inf, False)):
            value = getattr(self, name)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
                and (value > low if open_low else value >= low) and value <= high
            if not ok:
                problems.append(f"{name} must be a number in {'(' if open_low else '['}{low}, {high}], got {value!r}")
        if problems:
            raise ValueError("alignment settings: " + "; ".join(problems))


@dataclass(frozen=True)
class RobustFit:
    """One frame's robust fit. ``error`` says why it is refused; None when it is acceptable."""

    scale: float
    shift: float
    samples: int       # valid samples the fit saw
    inliers: int
    residual: float    # RMS relative residual of the inliers (NaN without a fit)
    error: str | None
    inlier_prediction: np.ndarray = field(repr=False, compare=False, default_factory=lambda: np.empty(0))


@dataclass(frozen=True)
class AlignmentEstimate:
    """The aligner's answer for one frame: what a depth/alignment message carries.

    ``scale`` and ``shift`` are the estimate applied to this frame (0 when there is none);
    ``samples``, ``inliers`` and ``residual`` describe this frame's own fit (0, 0, NaN when the
    frame had no samples); ``age`` is seconds since the last accepted fit (inf when none)."""

    stamp: float
    state: AlignmentState
    scale: float
    shift: float
    samples: int
    inliers: int
    residual: float
    age: float
    mode: str
    message: str

    @property
    def usable(self) -> bool:
        """True when metric depth may be derived from this frame's scale and shift."""
        return self.state in USABLE_STATES

    def message_fields(self) -> dict:
        """Fields of a dpt_ros/DepthAlignment message, all but the header."""
        return {"state": int(self.state), "scale": float(self.scale), "shift": float(self.shift),
                "sample_count": int(self.samples), "inlier_count": int(self.inliers),
                "residual": float(self.residual), "age": float(self.age), "mode": self.mode,
                "message": self.message}


def prediction_at(prediction, samples: DepthSamples) -> np.ndarray:
    """float64 prediction at each sample's nearest pixel (NaN for a sample off the image).

    ``prediction`` is an (H, W) numpy array or torch tensor (any device: only the N values are
    gathered there and copied back) of the samples' image size."""
    shape = tuple(prediction.shape)
    if shape != tuple(samples.image_size):
        raise ValueError(f"the prediction is {shape[-1]}x{shape[0]} (shape {shape}) but the samples are for a "
                         f"{samples.image_size[1]}x{samples.image_size[0]} image")
    height, width = shape
    rows, cols = nearest_pixel(samples.v), nearest_pixel(samples.u)
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    flat = np.where(inside, rows * width + cols, 0)
    if hasattr(prediction, "detach"):  # a torch tensor, maybe on a GPU
        import torch

        index = torch.from_numpy(flat).to(prediction.device)
        values = prediction.detach().reshape(-1)[index].to(torch.float64).cpu().numpy()
    else:
        values = np.asarray(prediction).reshape(-1)[flat].astype(np.float64)
    values[~inside] = np.nan  # a sample off the image has no prediction: the fit skips it
    return values


def relative_residuals(scale: float, shift: float, prediction: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """measured depth / aligned depth - 1 = (scale * prediction + shift) * depth - 1."""
    return (scale * prediction + shift) * depth - 1.0


def robust_fit(prediction, depth, settings: AlignerSettings, rng: np.random.Generator,
               hint: tuple[float, float] | None = None) -> RobustFit:
    """Scale and shift (shift 0 in scale_only mode) of ``1/depth ~ scale * prediction + shift``
    from samples with outliers: RANSAC (MSAC scoring) then weighted least squares on the inliers,
    as the module docstring describes.  ``hint`` (the current estimate) is scored as one more
    hypothesis.  Never raises for bad data: ``error`` of the result says why it is refused."""
    scale_only = settings.mode == "scale_only"
    p = np.asarray(prediction, dtype=np.float64).reshape(-1)
    d = np.asarray(depth, dtype=np.float64).reshape(-1)
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(p) & np.isfinite(d) & (d > 0)
        if scale_only:
            valid &= p > 0  # a metric model's inverse depth; <= 0 has no depth to correct
    if not valid.all():
        p, d = p[valid], d[valid]
    n = p.size

    def refused(why: str, scale=math.nan, shift=math.nan, inliers=0, residual=math.nan) -> RobustFit:
        return RobustFit(scale, shift, n, inliers, residual, why)

    if n < settings.min_inliers:
        return refused(f"too few samples: {n} valid, at least {settings.min_inliers} needed")
    y = 1.0 / d
    threshold = settings.inlier_threshold

    # Hypotheses from minimal samples, scored on an evenly spread subset.
    k = settings.iterations
    if scale_only:
        first = rng.integers(0, n, size=k)
        scales, shifts = y[first] / p[first], np.zeros(k)
    else:
        first, second = rng.integers(0, n, size=(2, k))
        with np.errstate(divide="ignore", invalid="ignore"):
            scales = (y[first] - y[second]) / (p[first] - p[second])
        shifts = y[first] - scales * p[first]
    if hint is not None:
        scales, shifts = np.append(scales, hint[0]), np.append(shifts, hint[1])
    plausible = np.isfinite(scales) & np.isfinite(shifts) & (scales > 0)
    if not plausible.any():
        return refused("no plausible scale: the prediction does not grow with inverse depth at the samples "
                       "(or is constant there)")
    scales, shifts = scales[plausible], shifts[plausible]
    step = max(1, n // SCORING_SAMPLES)
    p_score, d_score = p[::step], d[::step]
    residuals = (scales[:, None] * p_score[None, :] + shifts[:, None]) * d_score[None, :] - 1.0
    cost = np.minimum(residuals * residuals, threshold * threshold).sum(axis=1)
    best = int(np.argmin(cost))
    scale, shift = float(scales[best]), float(shifts[best])

    # Refinement: weighted least squares on the inliers until they no longer change.
    weights = d * d
    inliers = None
    for _ in range(MAX_REFINEMENTS):
        current = np.abs(relative_residuals(scale, shift, p, d)) <= threshold
        if inliers is not None and np.array_equal(current, inliers):
            break
        inliers = current
        try:
            if scale_only:
                scale = fit_scale(p, y, inliers, weights)
            else:
                scale, shift = fit_scale_shift(p, y, inliers, weights)
        except AlignmentError as error:
            return refused(f"least squares on the inliers failed: {error}")
    r = relative_residuals(scale, shift, p, d)
    inliers = np.abs(r) <= threshold
    count = int(inliers.sum())
    residual = float(np.sqrt(np.mean(r[inliers] ** 2))) if count else math.nan
    result = dict(scale=scale, shift=shift, inliers=count, residual=residual)
    if not scale > 0:
        return refused(f"fitted scale {scale:.6g} is not positive", **result)
    if count < settings.min_inliers:
        return refused(f"too few inliers: {count} of {n} samples within {threshold:g}, at least "
                       f"{settings.min_inliers} needed", **result)
    if count < settings.min_inlier_fraction * n:
        return refused(f"too few inliers: {count} of {n} samples ({count / n:.0%}) within {threshold:g}, at least "
                       f"{settings.min_inlier_fraction:.0%} needed", **result)
    if residual > settings.max_residual:
        return refused(f"residual {residual:.3g} of the inliers above max_residual {settings.max_residual:g}",
                       **result)
    return RobustFit(scale, shift, n, count, residual, None, p[inliers])


def depth_change(new: tuple[float, float], old: tuple[float, float], prediction: np.ndarray) -> float:
    """Median relative change of the aligned inverse depth (and so of depth) at ``prediction``
    when (scale, shift) go from ``old`` to ``new``; inf where the old one gives no depth."""
    if prediction.size == 0:
        return math.inf
    before = old[0] * prediction + old[1]
    after = new[0] * prediction + new[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        change = np.where(before > 0, np.abs(after / before - 1.0), np.inf)
    return float(np.median(change))


class OnlineAligner:
    """Scale and shift of one camera's relative depth, frame after frame (see the module doc).

    Not thread-safe: one caller (the node's worker for this camera) at a time."""

    def __init__(self, settings: AlignerSettings | None = None):
        self._settings = settings if settings is not None else AlignerSettings()
        self.reset()

    @property
    def settings(self) -> AlignerSettings:
        return self._settings

    def configure(self, settings: AlignerSettings) -> None:
        """New settings from the next frame on; the estimate is kept unless the mode changes
        (a scale_only estimate means nothing as a full one)."""
        mode_changed = settings.mode != self._settings.mode
        self._settings = settings
        if mode_changed:
            self.reset(f"alignment mode changed to {settings.mode}")

    def reset(self, reason: str = "reset") -> None:
        """Forget the estimate and everything learnt (call it when the model changes)."""
        self._rng = np.random.default_rng(self._settings.seed)
        self._scale = self._shift = 0.0
        self._have_estimate = False
        self._accepted = 0              # accepted fits since the estimate was (re)initialised
        self._accepted_stamp = -math.inf
        self._pending: tuple[float, float] | None = None  # the last gated fit
        self._pending_count = 0
        self.last = AlignmentEstimate(math.nan, AlignmentState.NONE, 0.0, 0.0, 0, 0, math.nan, math.inf,
                                      self._settings.mode, reason)

    # -------------------------------------------------------------------------------- per frame
    def update(self, prediction, samples: DepthSamples, stamp: float) -> AlignmentEstimate:
        """Fit this frame's ``samples`` to its ``prediction`` ((H, W), numpy or torch), filter, and
        return the estimate to apply to this frame, stamped ``stamp`` (seconds).  Bad data never
        raises (the estimate says why it was refused); samples for another image size than the
        prediction's are a caller's bug: ValueError."""
        stamp = float(stamp)
        jumped = self._check_clock(stamp)
        samples = samples.subsampled(self._settings.max_samples)
        values = prediction_at(prediction, samples)
        hint = (self._scale, self._shift) if self._usable_at(stamp) else None
        fit = robust_fit(values, samples.depth, self._settings, self._rng, hint)
        if fit.error is not None:
            return self._record(stamp, fit, self._held_state(stamp, AlignmentState.REJECTED),
                                jumped + f"fit refused: {fit.error}")
        if not self._usable_at(stamp):
            why = "first fit" if not self._have_estimate else "first fit after the estimate went stale"
            return self._initialise(stamp, fit, jumped + why)
        change = depth_change((fit.scale, fit.shift), (self._scale, self._shift), fit.inlier_prediction)
        if change <= self._settings.gate:
            self._pending, self._pending_count = None, 0
            self._accepted += 1
            weight = max(self._settings.smoothing, 1.0 / self._accepted)
            self._scale += weight * (fit.scale - self._scale)
            self._shift += weight * (fit.shift - self._shift)
            self._accepted_stamp = stamp
            return self._record(stamp, fit, self._filter_state(), jumped + f"fit accepted (depth change {change:.1%})")
        return self._gated(stamp, fit, change, jumped)

    def status(self, stamp: float) -> AlignmentEstimate:
        """The estimate for a frame that has no samples (none within the stamp tolerance): it
        ages, and goes stale after the timeout."""
        stamp = float(stamp)
        jumped = self._check_clock(stamp)
        state = self._held_state(stamp, self._filter_state())
        return self._record(stamp, None, state, jumped + "no samples for this frame")

    # -------------------------------------------------------------------------------- internals
    def _gated(self, stamp: float, fit: RobustFit, change: float, jumped: str) -> AlignmentEstimate:
        candidate = (fit.scale, fit.shift)
        if self._pending is not None and depth_change(candidate, self._pending, fit.inlier_prediction) \
                <= self._settings.gate:
            self._pending_count += 1
        else:
            self._pending_count = 1
        self._pending = candidate
        if self._pending_count >= self._settings.gate_frames:
            return self._initialise(stamp, fit, jumped + f"depth changed by {change:.1%} for {self._pending_count} "
                                    "fits in a row: re-initialised")
        return self._record(stamp, fit, AlignmentState.REJECTED,
                            jumped + f"fit gated: it would change the depth by {change:.1%} (gate "
                            f"{self._settings.gate:.0%}), {self._pending_count} of {self._settings.gate_frames}")

    def _initialise(self, stamp: float, fit: RobustFit, message: str) -> AlignmentEstimate:
        self._scale, self._shift = fit.scale, fit.shift
        self._have_estimate = True
        self._accepted = 1
        self._accepted_stamp = stamp
        self._pending, self._pending_count = None, 0
        return self._record(stamp, fit, self._filter_state(), message)

    def _filter_state(self) -> AlignmentState:
        if not self._have_estimate:
            return AlignmentState.NONE
        converged = self._accepted >= math.ceil(1.0 / self._settings.smoothing - 1e-9)
        return AlignmentState.TRACKING if converged else AlignmentState.CONVERGING

    def _age(self, stamp: float) -> float:
        return stamp - self._accepted_stamp if self._have_estimate else math.inf

    def _usable_at(self, stamp: float) -> bool:
        timeout = self._settings.timeout
        return self._have_estimate and (timeout == 0.0 or self._age(stamp) <= timeout)

    def _held_state(self, stamp: float, otherwise: AlignmentState) -> AlignmentState:
        """State of a frame that does not update the estimate."""
        if not self._have_estimate:
            return AlignmentState.NONE
        return otherwise if self._usable_at(stamp) else AlignmentState.STALE

    def _check_clock(self, stamp: float) -> str:
        """Reset on a stamp before the last accepted fit; returns a note for the message."""
        if self._have_estimate and stamp < self._accepted_stamp:
            back = self._accepted_stamp - stamp
            self.reset(f"stamp went back {back:.3f} s")
            return f"stamp went back {back:.3f} s (bag loop or clock reset): reset; "
        return ""

    def _record(self, stamp: float, fit: RobustFit | None, state: AlignmentState, message: str) -> AlignmentEstimate:
        scale, shift = (self._scale, self._shift) if self._have_estimate else (0.0, 0.0)
        samples, inliers, residual = (fit.samples, fit.inliers, fit.residual) if fit is not None else (0, 0, math.nan)
        self.last = AlignmentEstimate(stamp, state, scale, shift, samples, inliers, residual, self._age(stamp),
                                      self._settings.mode, message)
        return self.last
