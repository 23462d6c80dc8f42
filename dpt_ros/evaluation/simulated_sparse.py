"""Sparse metric depth simulated from a frame's ground-truth depth (evaluate_bag --simulate-sparse).

What online alignment (dpt_ros.alignment) would give with a sparse sensor the recording does not
have: samples are taken from the ground-truth depth image matched to the frame, optionally made
noisy, and go through the same OnlineAligner as a real sensor's.  ROS-free, numpy only.

The specification is ``PATTERN:COUNT[,noise=SIGMA][,outliers=FRACTION][,seed=K]``:

* ``points:N`` — N pixels drawn at random, without replacement, among the ground-truth pixels
  with a valid depth in the alignment's range (all of them when fewer are valid);
* ``lidar:L`` — L scan lines: ground-truth rows ``floor((i + 0.5) * H / L)`` for i = 0 .. L-1
  (the centres of L equal bands of the image's H rows), every valid pixel of each.  A lidar's
  scan line is a cone of constant elevation; for a lidar level with the camera near its optical
  centre it crosses the image close to a row, which is what this pattern keeps (the curvature of
  tilted lines is left out).  With more lines than rows, every row is a line.
* ``noise=SIGMA`` — each sampled depth is multiplied by (1 + SIGMA * n), n standard normal
  (a relative error, as range sensors have); default 0.
* ``outliers=FRACTION`` — that fraction of the samples (rounded down) get a depth drawn
  uniformly between the nearest and the farthest valid ground truth of the frame, like returns
  from another surface at occlusion edges or reflections; default 0.
* ``seed=K`` — the random draws of a frame come from a generator seeded with (K, the frame's index
  in the run), so a run is reproducible and frames differ; default 0.

Samples are in the pixel coordinates of the camera image: a ground truth of another size than the
image (registered to it, at another resolution) is mapped pixel centre to pixel centre.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dpt_ros.sparse_depth import DepthSamples

PATTERNS = ("points", "lidar")
SPEC_FORMAT = "points:N or lidar:L, optionally followed by ,noise=SIGMA ,outliers=FRACTION ,seed=K"


@dataclass(frozen=True)
class SparseSimulation:
    """A parsed --simulate-sparse specification (see the module doc)."""

    pattern: str
    count: int
    noise: float = 0.0
    outliers: float = 0.0
    seed: int = 0

    def __post_init__(self):
        problems = []
        if self.pattern not in PATTERNS:
            problems.append(f"pattern must be one of {', '.join(PATTERNS)}, got {self.pattern!r}")
        if isinstance(self.count, bool) or not isinstance(self.count, int) or self.count < 1:
            problems.append(f"the count must be an integer >= 1, got {self.count!r}")
        if not (math.isfinite(self.noise) and self.noise >= 0.0):
            problems.append(f"noise must be >= 0, got {self.noise!r}")
        if not (0.0 <= self.outliers <= 1.0):
            problems.append(f"outliers must be a fraction in [0, 1], got {self.outliers!r}")
        if problems:
            raise ValueError("; ".join(problems))

    @classmethod
    def parse(cls, spec: str) -> "SparseSimulation":
        """The simulation of a specification string; ValueError saying what is wrong."""
        head, *options = [part.strip() for part in str(spec).split(",")]
        pattern, colon, count = head.partition(":")
        if not colon or not count.strip().isdigit():
            raise ValueError(f"expected {SPEC_FORMAT}; got {spec!r}")
        fields = {"pattern": pattern.strip(), "count": int(count)}
        parsers = {"noise": float, "outliers": float, "seed": int}
        for option in options:
            name, equals, value = option.partition("=")
            name = name.strip()
            if not equals or name not in parsers:
                raise ValueError(f"unknown option {option!r} in {spec!r}; expected {SPEC_FORMAT}")
            try:
                fields[name] = parsers[name](value)
            except ValueError:
                raise ValueError(f"{name} must be a{'n integer' if name == 'seed' else ' number'}, got {value!r} "
                                 f"in {spec!r}") from None
        try:
            return cls(**fields)
        except ValueError as error:
            raise ValueError(f"{spec!r}: {error}") from None

    def describe(self) -> str:
        """The specification, in full (what report.json records)."""
        return f"{self.pattern}:{self.count},noise={self.noise:g},outliers={self.outliers:g},seed={self.seed}"

    def samples(self, gt_depth: np.ndarray, image_size: tuple[int, int], frame_index: int,
                min_depth: float = 0.0, max_depth: float = math.inf) -> DepthSamples:
        """Samples of one frame from its ground-truth depth (metres, NaN invalid), for a camera
        image of ``image_size`` = (height, width); ground truth in (min_depth, max_depth] counts
        as valid (the alignment's sample range)."""
        gt = np.asarray(gt_depth, dtype=np.float64)
        if gt.ndim != 2:
            raise ValueError(f"ground-truth depth must be (H, W), got shape {gt.shape}")
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(gt) & (gt > min_depth) & (gt <= max_depth)
        rng = np.random.default_rng([self.seed, int(frame_index)])
        if self.pattern == "points":
            flat = np.flatnonzero(valid)
            if flat.size > self.count:  # raster order kept: the aligner's max_samples cut spreads evenly
                flat = np.sort(rng.choice(flat, size=self.count, replace=False))
        else:
            rows = np.unique(lidar_rows(gt.shape[0], self.count))
            line_pixels = np.zeros_like(valid)
            line_pixels[rows] = valid[rows]
            flat = np.flatnonzero(line_pixels)
        rows, cols = np.divmod(flat, gt.shape[1])
        depth = gt.reshape(-1)[flat]
        if depth.size:
            depth = self._disturbed(depth, gt[valid], rng)
        height, width = (int(n) for n in image_size)
        # Pixel centre to pixel centre: (i + 0.5) / size is the same fraction of either image.
        u = (cols + 0.5) * (width / gt.shape[1]) - 0.5
        v = (rows + 0.5) * (height / gt.shape[0]) - 0.5
        return DepthSamples(u, v, depth, (height, width))

    def _disturbed(self, depth: np.ndarray, valid_gt: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.noise > 0.0:
            depth = depth * (1.0 + self.noise * rng.standard_normal(depth.size))
        wrong = int(self.outliers * depth.size)
        if wrong:
            which = rng.choice(depth.size, size=wrong, replace=False)
            depth = depth.copy()
            depth[which] = rng.uniform(valid_gt.min(), valid_gt.max(), size=wrong)
        return depth


def lidar_rows(height: int, lines: int) -> np.ndarray:
    """Rows of an L-line pattern on an image of ``height`` rows: the centres of L equal bands."""
    return np.floor((np.arange(lines) + 0.5) * height / lines).astype(np.intp)
