"""How available the cluster stayed: figures from the acknowledgements in a
``History`` and its faults. Pure (tests/chaos/test_availability.py).

Definitions (times in the history's clock, seconds; reported in ms):

- failover of a partition for a fault: from the injection to the first
  acknowledgement of a record on that partition that was *sent* after the
  injection (so an acknowledgement already on its way when the fault struck
  does not count as recovery). ``None`` when no such record was ever
  acknowledged. ``failover_p50_ms``/``p99`` (nearest rank) are over the
  partitions each fault was expected to interrupt (``FaultRecord.affected``),
  or over every partition when no fault named any. ``by_nemesis`` gives the
  same figures per fault type (nemesis name), by the same rule applied to
  that nemesis's faults alone, so a slow kind of failover is not hidden in
  the overall percentiles. Skipped faults are left out of both.
- longest window without an acknowledgement: the longest gap between
  consecutive acknowledgements of any partition (``longest_gap``), and the
  same per partition; measured from the first acknowledgement to the last.
  For a fault, the longest gap between any acknowledgements from its
  injection until the next fault's (or the end).
- throughput: acknowledgements per second during the fault (injection to
  heal) and after it (heal to the next injection, at most ``after_s``);
  ``baseline`` is before the first fault.
"""

from __future__ import annotations

import bisect
import itertools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from chaos.history import TP, Attempt, History, Outcome

__all__ = ["Availability", "FaultAvailability", "NemesisFailover", "availability", "percentile"]


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass
class FaultAvailability:
    nemesis: str
    description: str
    injected_at: float
    healed_at: float | None
    affected: list[str]
    failover_ms: dict[str, float | None]
    longest_gap_ms: float
    throughput_during: float
    throughput_after: float
    skipped: str = ""


@dataclass
class NemesisFailover:
    """Failover figures of one nemesis's faults (the module docstring's
    rule). ``samples``: (fault, partition) pairs measured; ``unrecovered``:
    affected partitions that never took a write again (then p99 is None)."""

    faults: int = 0
    samples: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None
    max_ms: float | None = None
    unrecovered: int = 0


@dataclass
class Availability:
    acked: int = 0
    baseline_throughput: float = 0.0
    failover_p50_ms: float | None = None
    failover_p99_ms: float | None = None
    failover_max_ms: float | None = None
    unrecovered: int = 0
    longest_gap_ms: float = 0.0
    longest_gap_at: float | None = None
    partition_longest_gap_ms: dict[str, float] = field(default_factory=dict)
    faults: list[FaultAvailability] = field(default_factory=list)
    by_nemesis: dict[str, NemesisFailover] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _rate(times: Sequence[float], start: float, end: float) -> float:
    if end <= start:
        return 0.0
    count = bisect.bisect_left(times, end) - bisect.bisect_left(times, start)
    return count / (end - start)


def _longest_gap(times: Sequence[float], start: float | None = None, end: float | None = None) -> float:
    """Longest gap between consecutive times in [start, end], counting the
    edges when given (so a window with no acknowledgement at all is one gap)."""
    inside = [t for t in times if (start is None or t >= start) and (end is None or t <= end)]
    points = ([start] if start is not None else []) + inside + ([end] if end is not None else [])
    return max((b - a for a, b in itertools.pairwise(points)), default=0.0)


def availability(history: History, *, end: float | None = None, after_s: float = 10.0) -> Availability:
    acks: list[Attempt] = sorted(
        (a for a in history.attempts if a.outcome is Outcome.OK and a.done_at is not None),
        key=lambda a: a.done_at or 0.0,
    )
    times = [a.done_at or 0.0 for a in acks]
    per_tp: dict[TP, list[Attempt]] = defaultdict(list)
    for attempt in acks:
        per_tp[attempt.tp].append(attempt)
    partitions = sorted({a.tp for a in history.attempts})
    end = end if end is not None else (times[-1] if times else 0.0)
    result = Availability(acked=len(acks))
    if times:
        gaps = list(itertools.pairwise(times))
        if gaps:
            a, b = max(gaps, key=lambda g: g[1] - g[0])
            result.longest_gap_ms, result.longest_gap_at = (b - a) * 1000, a
    for tp in partitions:
        tp_times = [a.done_at or 0.0 for a in per_tp.get(tp, [])]
        result.partition_longest_gap_ms[f"{tp[0]}/{tp[1]}"] = _longest_gap(tp_times) * 1000

    faults = [f for f in history.faults if not f.skipped]
    if faults and times:
        result.baseline_throughput = _rate(times, times[0], faults[0].injected_at)
    affected_samples: list[float] = []
    all_samples: list[float] = []
    # Per nemesis, the same two sample lists, its fault count and unrecovered partitions.
    per_nemesis: dict[str, tuple[list[float], list[float]]] = {}
    per_nemesis_faults: dict[str, int] = defaultdict(int)
    per_nemesis_unrecovered: dict[str, int] = defaultdict(int)
    for index, fault in enumerate(history.faults):
        following = [f.injected_at for f in history.faults[index + 1 :] if not f.skipped]
        next_start = following[0] if following else end
        healed = fault.healed_at if fault.healed_at is not None else next_start
        failover: dict[str, float | None] = {}
        if not fault.skipped:
            mine_affected, mine_all = per_nemesis.setdefault(fault.nemesis, ([], []))
            per_nemesis_faults[fault.nemesis] += 1
            for tp in partitions:
                first = next(
                    (
                        a.done_at
                        for a in per_tp.get(tp, [])
                        if a.done_at is not None
                        and a.done_at >= fault.injected_at
                        and a.sent_at >= fault.injected_at
                    ),
                    None,
                )
                ms = None if first is None else (first - fault.injected_at) * 1000
                failover[f"{tp[0]}/{tp[1]}"] = ms
                sample = ms if ms is not None else math.inf
                all_samples.append(sample)
                mine_all.append(sample)
                if tp in fault.affected:
                    affected_samples.append(sample)
                    mine_affected.append(sample)
                    if ms is None:
                        result.unrecovered += 1
                        per_nemesis_unrecovered[fault.nemesis] += 1
        result.faults.append(
            FaultAvailability(
                nemesis=fault.nemesis,
                description=fault.description,
                injected_at=fault.injected_at,
                healed_at=fault.healed_at,
                affected=[f"{t}/{p}" for t, p in fault.affected],
                failover_ms=failover,
                longest_gap_ms=_longest_gap(times, fault.injected_at, max(next_start, fault.injected_at))
                * 1000
                if not fault.skipped
                else 0.0,
                throughput_during=_rate(times, fault.injected_at, healed) if not fault.skipped else 0.0,
                throughput_after=_rate(times, healed, min(next_start, healed + after_s))
                if not fault.skipped
                else 0.0,
                skipped=fault.skipped,
            )
        )
    summary = _failover(affected_samples or all_samples)
    result.failover_p50_ms, result.failover_p99_ms, result.failover_max_ms = (
        summary.p50_ms,
        summary.p99_ms,
        summary.max_ms,
    )
    for nemesis, (mine_affected, mine_all) in per_nemesis.items():
        figures = _failover(mine_affected or mine_all)
        figures.faults = per_nemesis_faults[nemesis]
        figures.unrecovered = per_nemesis_unrecovered[nemesis]
        result.by_nemesis[nemesis] = figures
    return result


def _failover(samples: Sequence[float]) -> NemesisFailover:
    """p50, p99 and max of failover samples (ms; ``inf``: never
    recovered), None where a figure is infinite or there are no samples."""
    figures = NemesisFailover(samples=len(samples))
    if samples:
        p50, p99 = percentile(samples, 50), percentile(samples, 99)
        figures.p50_ms = p50 if p50 is not None and math.isfinite(p50) else None
        figures.p99_ms = p99 if p99 is not None and math.isfinite(p99) else None
        finite = [s for s in samples if math.isfinite(s)]
        figures.max_ms = max(finite) if finite else None
    return figures
