"""The seeded order of faults in a drill.

A schedule is a list of steps, each a nemesis, how long its fault lasts and
how long the cluster then gets to recover before the next one (so each
fault's failover and after-fault throughput are measured on their own).
The same seed, nemeses and duration give the same schedule.

- ``smoke``: leader kill, pause, leader isolation (one network partition):
  what ``make chaos-smoke`` and ``make test`` run; 18-40 s of faults and
  recovery gaps (the nemeses' ``durations`` plus 4-7 s after each).
- ``full``: every nemesis, in a random order per round, rounds repeated
  until the fault phase fills ``duration_s`` (``make chaos``: 420 s of
  scheduled faults and recovery; a rolling restart is scheduled as 0 s and
  takes what it takes, and start-up and checking come on top).
- a custom list (``--nemesis a,b``): those nemeses in turn until
  ``duration_s`` is filled; each runs at least once.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from chaos.nemesis import NEMESES

__all__ = ["FULL", "SMOKE", "Step", "build_schedule"]

SMOKE = ("kill-leader", "pause", "isolate-leader")
FULL = tuple(NEMESES)


@dataclass(frozen=True, slots=True)
class Step:
    nemesis: str
    duration: float
    recovery: float


def build_schedule(
    nemeses: Sequence[str],
    duration_s: float,
    rng: random.Random,
    *,
    shuffle: bool = False,
    recovery_s: tuple[float, float] = (4.0, 7.0),
) -> list[Step]:
    """Steps cycling through ``nemeses`` until their durations and recovery
    gaps add up to ``duration_s`` (every nemesis at least once).
    ``shuffle``: a fresh random order each round instead of the given one."""
    unknown = [n for n in nemeses if n not in NEMESES]
    if unknown:
        raise ValueError(f"unknown nemeses {unknown}; known: {', '.join(NEMESES)}")
    if not nemeses:
        raise ValueError("no nemeses")
    steps: list[Step] = []
    total = 0.0
    first_round = True
    while first_round or total < duration_s:
        order = list(nemeses)
        if shuffle:
            rng.shuffle(order)
        for name in order:
            low, high = NEMESES[name].durations
            step = Step(name, round(rng.uniform(low, high), 2), round(rng.uniform(*recovery_s), 2))
            if not first_round and total + step.duration + step.recovery > duration_s:
                return steps
            steps.append(step)
            total += step.duration + step.recovery
        first_round = False
    return steps
