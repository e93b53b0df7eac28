"""``Buckets``: a fixed-bound histogram cheap enough for the hot path.

The telemetry collector (cluster/telemetry/node_collector.py) turns one
into a Prometheus histogram at scrape time; partitions/ never imports
prometheus_client. Recording is one ``bisect`` and two additions, with no
lock and no allocation.

Invariants:

- ``bounds`` are the upper bounds of the finite buckets, strictly
  increasing, fixed at construction; ``counts`` has one more slot, the
  +Inf bucket. A value ``v`` lands in the first bucket whose bound is
  ``>= v`` (Prometheus' ``le``), else in +Inf.
- Counts only grow. One thread records (a replica's owner task on the
  event loop, or the group-commit writer thread); readers on other threads
  may see a record half done (a count without its sum): ``snapshot`` takes
  the total count from the buckets it copied, so a reader's buckets and
  count always agree, and the sum is at most one record off.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

__all__ = [
    "BATCH_BYTES_BOUNDS",
    "BATCH_WRITES_BOUNDS",
    "LATENCY_BOUNDS_S",
    "Buckets",
    "BucketsSnapshot",
]

LATENCY_BOUNDS_S: tuple[float, ...] = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Seconds, 100 us to 10 s: an fsync on a fast SSD takes ~100 us, a commit
over a LAN a few ms, anything past seconds is an outage."""

BATCH_WRITES_BOUNDS: tuple[float, ...] = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
"""Write sets per synced batch (how many replicas' writes shared an fsync)."""

BATCH_BYTES_BOUNDS: tuple[float, ...] = tuple(float(1 << shift) for shift in range(8, 27, 2))
"""Bytes per synced batch, 256 B to 64 MiB (the writer's batch cap) by x4."""


@dataclass(frozen=True, slots=True)
class BucketsSnapshot:
    """A copy of a histogram: per-bucket (not cumulative) counts, the +Inf
    bucket last, and the sum of the recorded values."""

    bounds: tuple[float, ...]
    counts: tuple[int, ...]
    total: float

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, count of values <= le)`` pairs, ``+Inf`` last (what a
        Prometheus histogram exposes)."""
        pairs: list[tuple[str, int]] = []
        running = 0
        for bound, count in zip(self.bounds, self.counts, strict=False):
            running += count
            pairs.append((_le(bound), running))
        pairs.append(("+Inf", running + self.counts[-1]))
        return pairs


def _le(bound: float) -> str:
    return repr(float(bound))


class Buckets:
    """Counts of recorded values by bucket (module docstring)."""

    __slots__ = ("_counts", "_sum", "bounds")

    def __init__(self, bounds: Sequence[float]) -> None:
        if not bounds or any(later <= earlier for earlier, later in pairwise(bounds)):
            raise ValueError(f"bucket bounds must be non-empty and strictly increasing, got {list(bounds)}")
        self.bounds = tuple(float(b) for b in bounds)
        self._counts = [0] * (len(self.bounds) + 1)
        self._sum = 0.0

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self.bounds, value)] += 1
        self._sum += value

    def snapshot(self) -> BucketsSnapshot:
        return BucketsSnapshot(self.bounds, tuple(self._counts), self._sum)
