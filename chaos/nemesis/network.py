"""Nemeses that act on the network, through the drill's proxies
(chaos/proxy.py, chaos/cluster.py: a cut ``(i, j)`` stops node i and the
clients next to it from sending to node j; blocked links blackhole).

- isolate-leader: the leader of a random partition is cut off from every
  other node in both directions, and so are clients: those next to it
  reach only it, the others cannot reach it. The majority elects a new
  leader; the old one must not acknowledge anything meanwhile that the
  majority then loses.
- split: a random minority (1 node of 3; 1 or 2 of 5) is cut off from the
  majority in both directions.
- ring: overlapping majorities. With 5 nodes in a random ring, each node
  reaches only its two neighbours: every node sees a majority (itself and
  two others), no two see the same one. With 3 nodes every pair would be
  neighbours, so it is a bridge instead: two nodes cannot reach each other
  and the third reaches both.
- one-way: the leader of a random partition can no longer send to any
  other node (outbound), or no other node can send to it (inbound), chosen
  at random; traffic the other way flows.
- slow: every link gets a delay of 20-100 ms with jitter of half of it.
- lossy: every link loses 3-15% of its chunks (each loss stalls the byte
  stream 150-400 ms, as a TCP retransmission would) and resets a connection
  for 0.2% of its chunks.
- reply-reset: client connections (only) are reset on 10-30% of the
  answers coming back: the request reached the leader and may have
  committed, the client cannot know and retries. Idempotent producers must
  not duplicate anything; without idempotence this is where duplicates
  come from.
"""

from __future__ import annotations

from chaos.cluster import ChaosCluster
from chaos.history import TP, FaultRecord
from chaos.nemesis import Nemesis, NemesisContext
from chaos.proxy import LinkMode

__all__ = ["IsolateLeader", "Lossy", "OneWay", "ReplyReset", "Ring", "Slow", "Split"]


def _both_ways(group_a: set[int], group_b: set[int]) -> set[tuple[int, int]]:
    cuts = set()
    for a in group_a:
        for b in group_b:
            if a != b:
                cuts |= {(a, b), (b, a)}
    return cuts


class _NetworkNemesis(Nemesis):
    def unavailable(self, cluster: ChaosCluster) -> str | None:
        if len(cluster.node_ids) < 3:
            return "network faults need at least 3 nodes"
        return None

    async def heal(self, ctx: NemesisContext) -> None:
        ctx.cluster.heal_network()

    def _cut(
        self,
        ctx: NemesisContext,
        leaders: dict[TP, int],
        cuts: set[tuple[int, int]],
        hit: tuple[int, ...],
        text: str,
    ) -> FaultRecord:
        """Apply ``cuts``; the fault hits ``hit`` and the partitions they led."""
        at = ctx.clock()
        ctx.cluster.partition(cuts)
        return FaultRecord(self.name, text, at, nodes=hit, affected=ctx.led_by(leaders, hit))

    def _degrade_every_link(self, ctx: NemesisContext, mode: LinkMode, duration: float) -> FaultRecord:
        at = ctx.clock()
        ctx.cluster.degrade(mode)
        return FaultRecord(
            self.name,
            f"every link: {mode.describe()} for {duration:.1f} s",
            at,
            nodes=tuple(ctx.cluster.node_ids),
            affected=ctx.all_partitions(),
        )


class IsolateLeader(_NetworkNemesis):
    name = "isolate-leader"
    summary = "cut the leader of a random partition off from every other node and from remote clients"
    durations = (3.0, 8.0)

    async def inject(self, ctx: NemesisContext, duration: float) -> FaultRecord:
        leaders = await ctx.leaders()
        victim = ctx.pick_leader(leaders)
        others = set(ctx.cluster.node_ids) - {victim}
        text = f"isolate node {victim} from {sorted(others)} both ways for {duration:.1f} s"
        return self._cut(ctx, leaders, _both_ways({victim}, others), (victim,), text)


class Split(_NetworkNemesis):
    name = "split"
    summary = "cut a random minority off from the majority, both ways"
    durations = (3.0, 8.0)

    async def inject(self, ctx: NemesisContext, duration: float) -> FaultRecord:
        leaders = await ctx.leaders()
        nodes = list(ctx.cluster.node_ids)
        size = ctx.rng.randint(1, (len(nodes) - 1) // 2)
        minority = set(ctx.rng.sample(nodes, size))
        majority = set(nodes) - minority
        text = f"split {sorted(minority)} | {sorted(majority)} for {duration:.1f} s"
        return self._cut(ctx, leaders, _both_ways(minority, majority), tuple(sorted(minority)), text)


class Ring(_NetworkNemesis):
    name = "ring"
    summary = "overlapping majorities: each node reaches only its ring neighbours (a bridge with 3 nodes)"
    durations = (4.0, 8.0)

    async def inject(self, ctx: NemesisContext, duration: float) -> FaultRecord:
        leaders = await ctx.leaders()
        nodes = list(ctx.cluster.node_ids)
        ctx.rng.shuffle(nodes)
        n = len(nodes)
        cuts: set[tuple[int, int]] = set()
        if n <= 3:
            bridge, a, b = nodes[0], nodes[1], nodes[2]
            cuts = _both_ways({a}, {b})
            text = f"bridge: {a} and {b} cut from each other, {bridge} reaches both"
            hit: tuple[int, ...] = (a, b)
        else:
            for i in range(n):
                for j in range(n):
                    distance = min((i - j) % n, (j - i) % n)
                    if distance > 1:
                        cuts.add((nodes[i], nodes[j]))
            text = f"ring {' - '.join(map(str, nodes))} - {nodes[0]}: each node reaches its neighbours only"
            hit = tuple(sorted(nodes))
        return self._cut(ctx, leaders, cuts, hit, f"{text}, for {duration:.1f} s")


class OneWay(_NetworkNemesis):
    name = "one-way"
    summary = "the leader of a random partition cannot send (or cannot receive); the other direction flows"
    durations = (3.0, 8.0)

    async def inject(self, ctx: NemesisContext, duration: float) -> FaultRecord:
        leaders = await ctx.leaders()
        victim = ctx.pick_leader(leaders)
        others = [n for n in ctx.cluster.node_ids if n != victim]
        outbound = ctx.rng.random() < 0.5
        cuts = {(victim, o) for o in others} if outbound else {(o, victim) for o in others}
        direction = (
            f"node {victim} cannot send to {others}" if outbound else f"{others} cannot send to node {victim}"
        )
        return self._cut(ctx, leaders, cuts, (victim,), f"one-way: {direction} for {duration:.1f} s")


class Slow(_NetworkNemesis):
    name = "slow"
    summary = "delay every link by 20-100 ms with jitter"
    durations = (4.0, 8.0)

    async def inject(self, ctx: NemesisContext, duration: float) -> FaultRecord:
        delay = ctx.rng.uniform(20.0, 100.0)
        mode = LinkMode(delay_ms=delay, jitter_ms=delay / 2)
        return self._degrade_every_link(ctx, mode, duration)


class Lossy(_NetworkNemesis):
    name = "lossy"
    summary = "every link loses chunks (stalls, as TCP retransmissions) and sometimes resets connections"
    durations = (4.0, 8.0)

    async def inject(self, ctx: NemesisContext, duration: float) -> FaultRecord:
        mode = LinkMode(
            delay_ms=2.0,
            jitter_ms=2.0,
            loss=ctx.rng.uniform(0.03, 0.15),
            stall_ms=ctx.rng.uniform(150.0, 400.0),
            reset=0.002,
        )
        return self._degrade_every_link(ctx, mode, duration)


class ReplyReset(_NetworkNemesis):
    name = "reply-reset"
    summary = "reset client connections on 10-30% of the answers (outcome unknown to the client)"
    durations = (2.0, 5.0)

    async def inject(self, ctx: NemesisContext, duration: float) -> FaultRecord:
        mode = LinkMode(reply_reset=ctx.rng.uniform(0.1, 0.3))
        at = ctx.clock()
        ctx.cluster.degrade_clients(mode)
        return FaultRecord(
            self.name,
            f"client links: {mode.describe()} for {duration:.1f} s",
            at,
            affected=ctx.all_partitions(),
        )
