"""Percentiles and small summaries, with no I/O."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile (``p`` in 0..100) of ``values``; NaN when there are none."""
    if not 0 <= p <= 100:
        raise ValueError("p must be in 0..100")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / max in milliseconds and the sample count."""
    return {
        "p50_ms": percentile(seconds, 50) * 1000,
        "p99_ms": percentile(seconds, 99) * 1000,
        "max_ms": (max(seconds) * 1000) if seconds else math.nan,
        "samples": float(len(seconds)),
    }


def ratio(value: float, ceiling: float) -> float:
    return value / ceiling if ceiling else math.nan
