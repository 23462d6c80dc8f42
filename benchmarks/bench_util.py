"""Small helpers shared by the benchmark scripts: percentiles, plain-text tables, import path.

The scripts run as ``python benchmarks/<name>.py``; Python then puts ``benchmarks/`` first on
``sys.path``, not the repository root, so :func:`use_checkout` puts the checkout's ``dpt_ros``
ahead of the colcon install space (whose copy may be older): benchmarks measure the code in the
working tree.  ``dpt_ros.msg`` is still found in the install space (``dpt_ros/__init__.py``
extends the package path).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Iterable, Sequence

REPO = Path(__file__).resolve().parents[1]


def use_checkout() -> None:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0..100) with linear interpolation between order statistics
    (numpy's default method); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Right-aligned plain-text columns (first column left-aligned), one header line and a rule."""
    cells = [[str(h) for h in headers]] + [[_cell(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def line(row):
        return "  ".join(value.ljust(width) if i == 0 else value.rjust(width)
                         for i, (value, width) in enumerate(zip(row, widths)))

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([line(cells[0]), rule] + [line(row) for row in cells[1:]])


def _cell(value: object) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if value != 0.0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
            return f"{value:.2e}"
        return f"{value:.2f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)
