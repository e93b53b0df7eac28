"""Nemeses: the faults a drill injects, each a ``Nemesis`` with a name.

A nemesis ``run`` injects its fault, keeps it for the scheduled duration
(or, for a process such as a rolling restart, for as long as it takes),
heals it, and returns a ``FaultRecord`` (when, what it hit, which partitions
it was expected to interrupt). Choices (victims, cuts, delays) come from the
drill's seeded ``random.Random`` and from the cluster's state at injection
(who leads what), so a seed replays the same schedule and the same choices
given the same leaders.

Invariants: ``run`` always heals what it broke, even when cancelled or when
injection fails half-way (``heal`` in a ``finally``); a nemesis that cannot
run here says why through ``unavailable`` and is recorded as skipped, never
silently dropped.

The registry (``NEMESES``) is the list ``--nemesis`` accepts, in the order
the README's table gives them.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterable
from dataclasses import dataclass
from typing import ClassVar

from chaos.cluster import ChaosCluster
from chaos.history import TP, FaultRecord, History

__all__ = ["NEMESES", "Nemesis", "NemesisContext"]


@dataclass
class NemesisContext:
    cluster: ChaosCluster
    history: History
    rng: random.Random

    def clock(self) -> float:
        return self.history.clock()

    def log(self, message: str) -> None:
        self.history.event(message)

    async def leaders(self) -> dict[TP, int]:
        return await self.cluster.leaders()

    def pick_leader(self, leaders: dict[TP, int]) -> int:
        """The leader of a random partition (seeded choice); a random running
        node when no partition has a known leader."""
        if not leaders:
            return self.rng.choice(self.cluster.running)
        return leaders[self.rng.choice(sorted(leaders))]

    @staticmethod
    def led_by(leaders: dict[TP, int], nodes: Iterable[int]) -> tuple[TP, ...]:
        hit = set(nodes)
        return tuple(sorted(tp for tp, node in leaders.items() if node in hit))

    def all_partitions(self) -> tuple[TP, ...]:
        return tuple(sorted(self.cluster.groups))


class Nemesis:
    """Base: subclasses set ``name``, ``summary``, ``durations`` and
    implement ``inject`` and ``heal``, or override ``run`` whole."""

    name: ClassVar[str]
    summary: ClassVar[str]
    durations: ClassVar[tuple[float, float]] = (3.0, 6.0)
    """Range the schedule draws this fault's duration from (seconds)."""

    def unavailable(self, cluster: ChaosCluster) -> str | None:
        """Why this nemesis cannot run against ``cluster`` (None: it can)."""
        return None

    async def inject(self, ctx: NemesisContext, duration: float) -> FaultRecord:
        raise NotImplementedError

    async def heal(self, ctx: NemesisContext) -> None:
        raise NotImplementedError

    async def run(self, ctx: NemesisContext, duration: float) -> FaultRecord:
        fault: FaultRecord | None = None
        try:
            fault = await self.inject(ctx, duration)
            ctx.log(f"{self.name}: {fault.description}")
            await asyncio.sleep(duration)
        finally:
            await self.heal(ctx)
            if fault is not None:
                fault.healed_at = ctx.clock()
                ctx.log(f"{self.name}: healed")
        assert fault is not None
        return fault


def _registry() -> dict[str, Nemesis]:
    from chaos.nemesis.network import IsolateLeader, Lossy, OneWay, ReplyReset, Ring, Slow, Split
    from chaos.nemesis.process import (
        Decommission,
        KillController,
        KillLeader,
        KillNode,
        LeaderStorm,
        Pause,
        RollingRestart,
    )

    found: list[Nemesis] = [
        KillLeader(),
        KillNode(),
        KillController(),
        Pause(),
        IsolateLeader(),
        Split(),
        Ring(),
        OneWay(),
        Slow(),
        Lossy(),
        ReplyReset(),
        LeaderStorm(),
        RollingRestart(),
        Decommission(),
    ]
    return {n.name: n for n in found}


NEMESES: dict[str, Nemesis] = _registry()
