"""Small, dependency-free statistics used by every section: percentiles and summaries."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) with linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary(values: Sequence[float], *, scale: float = 1.0, digits: int = 3) -> dict[str, float | int | None]:
    """count, mean, p50, p95, p99, max of ``values`` multiplied by ``scale`` (e.g. 1000 for ms)."""

    def fmt(x: float | None) -> float | None:
        return None if x is None else round(x * scale, digits)

    return {
        "count": len(values),
        "mean": fmt(sum(values) / len(values)) if values else None,
        "p50": fmt(percentile(values, 50)),
        "p95": fmt(percentile(values, 95)),
        "p99": fmt(percentile(values, 99)),
        "max": fmt(max(values)) if values else None,
    }


def median(values: Sequence[float]) -> float | None:
    return percentile(values, 50)
