"""Nemeses that act on node processes: SIGKILL, SIGSTOP/SIGCONT, SIGTERM.

- kill-leader: SIGKILL the leader of a random partition; restart it when
  the fault ends.
- kill-node: SIGKILL a random node; restart it when the fault ends.
- kill-controller: SIGKILL the node leading the metadata controller
  (Raft group 0; found through the admin API's cluster status); restart it
  when the fault ends. Admin calls fail over to the new controller leader;
  produce and fetch must not notice beyond the partitions that node led.
- pause: SIGSTOP the leader of a random partition, SIGCONT when the fault
  ends. The frozen leader keeps believing it leads; when it wakes up, the
  others have moved on (new term), and anything it then acknowledges would
  be a stale write: the checker catches one as lost or divergent.
- leader-storm: for the whole fault, again and again, freeze the leader of
  a random partition just longer than an election timeout, so another node
  takes over; the drill runs the cluster with the preferred-leader balancer
  every second, which then hands leadership back through Raft's leader
  transfer. Each round is one election plus one transfer. (No admin call
  to request a transfer exists yet; when one does, call it here.)
- rolling-restart: every node in turn: SIGTERM, restart, wait until its
  replicas have applied what their leaders had committed, then the next.
  Lasts as long as that takes.
- decommission: under load, ask the controller to decommission a random
  node (``DecommissionNode``): it moves the node's replicas to other live
  nodes, one Raft membership step at a time. The fault lasts until the node
  holds no replica any more, at most the duration or 20 s, whichever is
  longer (moving replicas takes what it takes); the node stays
  decommissioned (it cannot rejoin under its id), so a drill does this once
  and only when another node can take the replicas (more nodes than the
  largest replica set). Otherwise, and for any later decommission in the
  drill, it falls back to stopping a random node cleanly (SIGTERM) for the
  fault and restarting it after: the rest carries on with one replica
  fewer, as during a decommission that cannot move anything.
"""

from __future__ import annotations

import asyncio

from chaos.history import TP, FaultRecord
from chaos.nemesis import Nemesis, NemesisContext

__all__ = [
    "Decommission",
    "KillController",
    "KillLeader",
    "KillNode",
    "LeaderStorm",
    "Pause",
    "RollingRestart",
]


def _describe_led(led: tuple[TP, ...]) -> str:
    if not led:
        return "leading nothing"
    names = [f"{t}/{p}" for t, p in led]
    return "leader of " + (
        ", ".join(names) if len(names) <= 3 else f"{', '.join(names[:3])} +{len(names) - 3}"
    )


class _OneNodeFault(Nemesis):
    """A fault on one node: pick it (seeing who leads what at injection),
    act on it, undo the act when healed. Subclasses say how to pick, act,
    undo and describe; the victim is remembered before the act, so a
    half-done act is still undone."""

    def __init__(self) -> None:
        self.victim: int | None = None

    async def _pick(self, ctx: NemesisContext, leaders: dict[TP, int]) -> int:
        return ctx.pick_leader(leaders)

    async def _act(self, ctx: NemesisContext, victim: int) -> None:
        raise NotImplementedError

    async def _undo(self, ctx: NemesisContext, victim: int) -> None:
        raise NotImplementedError

    def _describe(self, victim: int, led: str, duration: float) -> str:
        raise NotImplementedError

    async def inject(self, ctx: NemesisContext, duration: float) -> FaultRecord:
        leaders = await ctx.leaders()
        victim = self.victim = await self._pick(ctx, leaders)
        at = ctx.clock()
        await self._act(ctx, victim)
        led = ctx.led_by(leaders, [victim])
        return FaultRecord(
            self.name,
            self._describe(victim, _describe_led(led), duration),
            at,
            nodes=(victim,),
            affected=led,
        )

    async def heal(self, ctx: NemesisContext) -> None:
        if self.victim is not None:
            await self._undo(ctx, self.victim)
            self.victim = None


class KillLeader(_OneNodeFault):
    name = "kill-leader"
    summary = "SIGKILL the leader of a random partition; restart it when the fault ends"
    durations = (1.0, 5.0)

    async def _act(self, ctx: NemesisContext, victim: int) -> None:
        await ctx.cluster.kill(victim)

    async def _undo(self, ctx: NemesisContext, victim: int) -> None:
        await ctx.cluster.start(victim)

    def _describe(self, victim: int, led: str, duration: float) -> str:
        return f"SIGKILL node {victim} ({led}), restart after {duration:.1f} s"


class KillNode(KillLeader):
    name = "kill-node"
    summary = "SIGKILL a random node; restart it when the fault ends"

    async def _pick(self, ctx: NemesisContext, leaders: dict[TP, int]) -> int:
        return ctx.rng.choice(ctx.cluster.running)


class KillController(KillLeader):
    name = "kill-controller"
    summary = "SIGKILL the node leading the metadata controller; restart it when the fault ends"

    async def _pick(self, ctx: NemesisContext, leaders: dict[TP, int]) -> int:
        victim = await ctx.cluster.controller_leader()
        if victim is None:
            raise _NoVictim("no node says it leads the metadata controller")
        return victim

    def _describe(self, victim: int, led: str, duration: float) -> str:
        return f"SIGKILL node {victim} (controller leader, {led}), restart after {duration:.1f} s"

    async def run(self, ctx: NemesisContext, duration: float) -> FaultRecord:
        try:
            return await super().run(ctx, duration)
        except _NoVictim as exc:
            return FaultRecord(self.name, "", ctx.clock(), skipped=str(exc))


class _NoVictim(Exception):
    pass


class Pause(_OneNodeFault):
    name = "pause"
    summary = "SIGSTOP the leader of a random partition; SIGCONT when the fault ends"
    durations = (2.0, 6.0)

    async def _act(self, ctx: NemesisContext, victim: int) -> None:
        ctx.cluster.pause(victim)

    async def _undo(self, ctx: NemesisContext, victim: int) -> None:
        ctx.cluster.resume(victim)

    def _describe(self, victim: int, led: str, duration: float) -> str:
        return f"SIGSTOP node {victim} ({led}) for {duration:.1f} s"


class LeaderStorm(Nemesis):
    name = "leader-storm"
    summary = (
        "force leader changes again and again: brief SIGSTOPs of leaders, then the balancer's transfers back"
    )
    durations = (6.0, 12.0)

    async def run(self, ctx: NemesisContext, duration: float) -> FaultRecord:
        cluster = ctx.cluster
        freeze = cluster.election_timeout_s * 2.5
        fault = FaultRecord(
            self.name,
            f"for {duration:.1f} s: freeze a random leader {freeze:.2f} s, let it be replaced and handed back",
            ctx.clock(),
            affected=ctx.all_partitions(),
        )
        ctx.log(f"{self.name}: {fault.description}")
        deadline = ctx.clock() + duration
        rounds = 0
        hit: set[int] = set()
        victim: int | None = None
        try:
            while ctx.clock() < deadline:
                leaders = await ctx.leaders()
                if leaders:
                    victim = ctx.pick_leader(leaders)
                    hit.add(victim)
                    cluster.pause(victim)
                    await asyncio.sleep(freeze)
                    cluster.resume(victim)
                    victim = None
                    rounds += 1
                await asyncio.sleep(ctx.rng.uniform(0.3, 1.2))
        finally:
            if victim is not None:
                cluster.resume(victim)
            fault.healed_at = ctx.clock()
        fault.nodes = tuple(sorted(hit))
        fault.description += f" ({rounds} rounds)"
        ctx.log(f"{self.name}: healed after {rounds} rounds")
        return fault


class RollingRestart(Nemesis):
    name = "rolling-restart"
    summary = "SIGTERM and restart every node in turn, waiting for it to catch up in between"
    durations = (0.0, 0.0)

    async def run(self, ctx: NemesisContext, duration: float) -> FaultRecord:
        cluster = ctx.cluster
        order = list(cluster.node_ids)
        ctx.rng.shuffle(order)
        fault = FaultRecord(
            self.name,
            f"restart nodes {', '.join(map(str, order))} one at a time",
            ctx.clock(),
            nodes=tuple(order),
            affected=ctx.all_partitions(),
        )
        ctx.log(f"{self.name}: {fault.description}")
        slow: list[int] = []
        try:
            for node in order:
                await cluster.stop(node)
                await asyncio.sleep(ctx.rng.uniform(0.2, 1.0))
                await cluster.start(node)
                if not await cluster.wait_caught_up(node, 20.0):
                    slow.append(node)
        finally:
            await cluster.heal_all()
            fault.healed_at = ctx.clock()
        if slow:
            fault.description += f" (not caught up within 20 s of restarting: {slow})"
        ctx.log(f"{self.name}: done")
        return fault


class Decommission(_OneNodeFault):
    name = "decommission"
    summary = "decommission a node under load (its replicas move); without a spare node, stop one instead"
    durations = (6.0, 12.0)

    async def run(self, ctx: NemesisContext, duration: float) -> FaultRecord:
        cluster = ctx.cluster
        widest = max((len(r) for r in cluster.replicas.values()), default=len(cluster.node_ids))
        if cluster.decommissioned or len(cluster.node_ids) <= widest:
            return await super().run(ctx, duration)
        leaders = await ctx.leaders()
        victim = ctx.rng.choice(cluster.running)
        held = [tp for tp, r in cluster.replicas.items() if victim in r]
        at = ctx.clock()
        await cluster.decommission(victim)
        fault = FaultRecord(
            self.name,
            f"DecommissionNode {victim} (replica of {len(held)} partitions, "
            f"{_describe_led(ctx.led_by(leaders, [victim]))})",
            at,
            nodes=(victim,),
            affected=tuple(sorted(held)),
        )
        ctx.log(f"{self.name}: {fault.description}")
        deadline = at + max(duration, 20.0)
        left: int | None = None
        while ctx.clock() < deadline:
            # Done when the controller assigns it nothing and the node itself
            # hosts none of the drill's partitions any more.
            left = await cluster.replicas_on(victim)
            if left == 0:
                stats = (await cluster.stats()).get(victim)
                groups = set(cluster.groups.values())
                left = len([r for r in stats.partitions if r.group in groups]) if stats is not None else None
                if left == 0:
                    break
            await asyncio.sleep(0.5)
        fault.healed_at = ctx.clock()
        fault.description += (
            f": its replicas left it in {fault.healed_at - at:.1f} s"
            if left == 0
            else f": {left} replicas still on it after {fault.healed_at - at:.1f} s"
        )
        await cluster.refresh_assignments()
        ctx.log(f"{self.name}: {fault.description}")
        return fault

    # Without a spare node (or a second time): stop one cleanly instead.

    async def _pick(self, ctx: NemesisContext, leaders: dict[TP, int]) -> int:
        return ctx.rng.choice(ctx.cluster.running)

    async def _act(self, ctx: NemesisContext, victim: int) -> None:
        await ctx.cluster.stop(victim)

    async def _undo(self, ctx: NemesisContext, victim: int) -> None:
        await ctx.cluster.start(victim)

    def _describe(self, victim: int, led: str, duration: float) -> str:
        return (
            f"SIGTERM node {victim} ({led}), out for {duration:.1f} s "
            "(no spare node to move its replicas to: stopped instead of decommissioned)"
        )
