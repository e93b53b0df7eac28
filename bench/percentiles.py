"""Latency summaries: nearest-rank percentiles of a list of milliseconds."""

from __future__ import annotations

import math
from collections.abc import Iterable


def percentile(ordered: list[float], q: float) -> float:
    """The nearest-rank ``q`` percentile (0 < q <= 100) of an ascending list."""
    if not ordered:
        raise ValueError("no samples")
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(samples_ms: Iterable[float]) -> dict[str, float | int]:
    """p50, p99, p99.9 and max of ``samples_ms`` (rounded to µs), and the count."""
    ordered = sorted(samples_ms)
    if not ordered:
        return {"samples": 0}
    return {
        "samples": len(ordered),
        "p50_ms": round(percentile(ordered, 50), 3),
        "p99_ms": round(percentile(ordered, 99), 3),
        "p999_ms": round(percentile(ordered, 99.9), 3),
        "max_ms": round(ordered[-1], 3),
    }
