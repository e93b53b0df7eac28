"""The nemeses against a stand-in cluster (no node processes): what each one
does to the cluster, the fault it records (description, nodes hit,
partitions affected), and that healing undoes it, even when the injection
failed half-way."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable
from typing import cast

import pytest

from chaos.cluster import ChaosCluster
from chaos.history import TP, History
from chaos.nemesis import NemesisContext
from chaos.nemesis.network import IsolateLeader, Lossy, OneWay, ReplyReset, Ring, Slow, Split
from chaos.nemesis.process import Decommission, KillController, KillLeader, KillNode, Pause
from chaos.proxy import LinkMode

# Node 2 leads two partitions, node 3 one, node 1 none.
LEADERS: dict[TP, int] = {("audit", 0): 2, ("orders", 0): 2, ("orders", 1): 3}
SEED = 5


class FakeCluster:
    """What the nemeses call on a ``ChaosCluster``; records every action."""

    def __init__(self, nodes: int = 3, controller: int | None = 3) -> None:
        self.node_ids = list(range(1, nodes + 1))
        self.running = list(self.node_ids)
        self.groups = {tp: g for g, tp in enumerate(sorted(LEADERS), start=1)}
        self.replicas = {tp: tuple(self.node_ids[:3]) for tp in LEADERS}
        self.decommissioned: set[int] = set()
        self.controller = controller
        self.actions: list[tuple[str, object]] = []
        self.fail_kill = False

    async def leaders(self) -> dict[TP, int]:
        return dict(LEADERS)

    async def controller_leader(self) -> int | None:
        return self.controller

    async def kill(self, node: int) -> None:
        self.actions.append(("kill", node))
        if self.fail_kill:
            raise RuntimeError("kill failed")

    async def stop(self, node: int) -> int:
        self.actions.append(("stop", node))
        return 0

    async def start(self, node: int) -> None:
        self.actions.append(("start", node))

    def pause(self, node: int) -> None:
        self.actions.append(("pause", node))

    def resume(self, node: int) -> None:
        self.actions.append(("resume", node))

    def partition(self, cuts: Iterable[tuple[int, int]]) -> None:
        self.actions.append(("partition", frozenset(cuts)))

    def degrade(self, mode: LinkMode) -> None:
        self.actions.append(("degrade", mode))

    def degrade_clients(self, mode: LinkMode) -> None:
        self.actions.append(("degrade_clients", mode))

    def heal_network(self) -> None:
        self.actions.append(("heal_network", None))


def context(cluster: FakeCluster) -> NemesisContext:
    return NemesisContext(cast(ChaosCluster, cluster), History(), random.Random(SEED))


def both_ways(a: int, others: Iterable[int]) -> frozenset[tuple[int, int]]:
    return frozenset({(a, o) for o in others} | {(o, a) for o in others})


async def test_kill_leader_kills_a_leader_and_restarts_it_on_heal() -> None:
    cluster = FakeCluster()
    ctx = context(cluster)
    nemesis = KillLeader()
    fault = await nemesis.inject(ctx, 2.0)
    victim = fault.nodes[0]
    assert cluster.actions == [("kill", victim)]
    assert fault.affected == tuple(tp for tp, n in sorted(LEADERS.items()) if n == victim)
    led = {2: "leader of audit/0, orders/0", 3: "leader of orders/1"}[victim]
    assert fault.description == f"SIGKILL node {victim} ({led}), restart after 2.0 s"
    await nemesis.heal(ctx)
    await nemesis.heal(ctx)  # healed once only
    assert cluster.actions == [("kill", victim), ("start", victim)]


async def test_kill_node_picks_any_running_node() -> None:
    cluster = FakeCluster()
    fault = await KillNode().inject(context(cluster), 1.5)
    victim = random.Random(SEED).choice([1, 2, 3])
    assert cluster.actions == [("kill", victim)]
    assert fault.nodes == (victim,)
    led = {1: "leading nothing", 2: "leader of audit/0, orders/0", 3: "leader of orders/1"}[victim]
    assert fault.description == f"SIGKILL node {victim} ({led}), restart after 1.5 s"


async def test_kill_controller_kills_the_controller_leader_or_is_skipped() -> None:
    cluster = FakeCluster(controller=3)
    fault = await KillController().run(context(cluster), 0.0)
    assert cluster.actions == [("kill", 3), ("start", 3)]
    assert (fault.nodes, fault.affected) == ((3,), (("orders", 1),))
    assert fault.description == "SIGKILL node 3 (controller leader, leader of orders/1), restart after 0.0 s"
    assert fault.healed_at is not None
    nobody = FakeCluster(controller=None)
    skipped = await KillController().run(context(nobody), 0.0)
    assert skipped.skipped == "no node says it leads the metadata controller"
    assert nobody.actions == []


async def test_pause_stops_a_leader_and_resumes_it_on_heal() -> None:
    cluster = FakeCluster()
    fault = await Pause().run(context(cluster), 0.0)
    victim = fault.nodes[0]
    assert cluster.actions == [("pause", victim), ("resume", victim)]
    led = {2: "leader of audit/0, orders/0", 3: "leader of orders/1"}[victim]
    assert fault.description == f"SIGSTOP node {victim} ({led}) for 0.0 s"


async def test_decommission_without_a_spare_node_stops_one_instead() -> None:
    cluster = FakeCluster(nodes=3)
    fault = await Decommission().run(context(cluster), 0.0)
    victim = random.Random(SEED).choice([1, 2, 3])
    assert cluster.actions == [("stop", victim), ("start", victim)]
    assert fault.description.startswith(f"SIGTERM node {victim} (")
    assert fault.description.endswith(
        "), out for 0.0 s (no spare node to move its replicas to: stopped instead of decommissioned)"
    )


async def test_a_failed_injection_is_still_healed() -> None:
    cluster = FakeCluster()
    cluster.fail_kill = True
    with pytest.raises(RuntimeError, match="kill failed"):
        await KillLeader().run(context(cluster), 0.0)
    (_, victim), restart = cluster.actions
    assert restart == ("start", victim)


async def test_isolate_leader_cuts_it_off_both_ways() -> None:
    cluster = FakeCluster()
    ctx = context(cluster)
    nemesis = IsolateLeader()
    fault = await nemesis.inject(ctx, 3.0)
    victim = fault.nodes[0]
    others = sorted({1, 2, 3} - {victim})
    assert cluster.actions == [("partition", both_ways(victim, others))]
    assert fault.description == f"isolate node {victim} from {others} both ways for 3.0 s"
    assert fault.affected == tuple(tp for tp, n in sorted(LEADERS.items()) if n == victim)
    await nemesis.heal(ctx)
    assert cluster.actions[-1] == ("heal_network", None)


async def test_split_cuts_a_minority_off_both_ways() -> None:
    cluster = FakeCluster(nodes=5)
    fault = await Split().inject(context(cluster), 3.0)
    minority = set(fault.nodes)
    majority = {1, 2, 3, 4, 5} - minority
    assert 1 <= len(minority) <= 2
    cuts = {(a, b) for a in minority for b in majority} | {(b, a) for a in minority for b in majority}
    assert cluster.actions == [("partition", frozenset(cuts))]
    assert fault.description == f"split {sorted(minority)} | {sorted(majority)} for 3.0 s"
    assert fault.affected == tuple(tp for tp, n in sorted(LEADERS.items()) if n in minority)


async def test_ring_of_three_is_a_bridge() -> None:
    cluster = FakeCluster(nodes=3)
    fault = await Ring().inject(context(cluster), 3.0)
    a, b = fault.nodes
    (bridge,) = {1, 2, 3} - {a, b}
    assert cluster.actions == [("partition", frozenset({(a, b), (b, a)}))]
    assert fault.description == f"bridge: {a} and {b} cut from each other, {bridge} reaches both, for 3.0 s"


async def test_ring_of_five_leaves_each_node_its_two_neighbours() -> None:
    cluster = FakeCluster(nodes=5)
    fault = await Ring().inject(context(cluster), 3.0)
    assert fault.nodes == (1, 2, 3, 4, 5)
    ((kind, cuts),) = cluster.actions
    assert kind == "partition"
    assert isinstance(cuts, frozenset)
    assert len(cuts) == 10  # each node loses the two that are not its neighbours
    order = [int(n) for n in fault.description.split(":")[0].removeprefix("ring ").split(" - ")]
    assert order[0] == order[-1] and sorted(order[:-1]) == [1, 2, 3, 4, 5]
    neighbours = {frozenset(pair) for pair in itertools.pairwise(order)}
    assert all(frozenset(cut) not in neighbours for cut in cuts)
    assert fault.description.endswith(": each node reaches its neighbours only, for 3.0 s")


async def test_one_way_blocks_one_direction_of_a_leader() -> None:
    cluster = FakeCluster()
    fault = await OneWay().inject(context(cluster), 3.0)
    victim = fault.nodes[0]
    others = sorted({1, 2, 3} - {victim})
    ((_, cuts),) = cluster.actions
    if cuts == {(victim, o) for o in others}:
        assert fault.description == f"one-way: node {victim} cannot send to {others} for 3.0 s"
    else:
        assert cuts == {(o, victim) for o in others}
        assert fault.description == f"one-way: {others} cannot send to node {victim} for 3.0 s"


async def test_link_wide_faults_degrade_every_link_and_affect_every_partition() -> None:
    everything = tuple(sorted(LEADERS))
    for nemesis in (Slow(), Lossy()):
        cluster = FakeCluster()
        fault = await nemesis.inject(context(cluster), 4.0)
        ((kind, mode),) = cluster.actions
        assert kind == "degrade" and isinstance(mode, LinkMode)
        assert fault.description == f"every link: {mode.describe()} for 4.0 s"
        assert (fault.nodes, fault.affected) == ((1, 2, 3), everything)
    cluster = FakeCluster()
    fault = await ReplyReset().inject(context(cluster), 2.0)
    ((kind, mode),) = cluster.actions
    assert kind == "degrade_clients" and isinstance(mode, LinkMode) and 0.1 <= mode.reply_reset <= 0.3
    assert fault.description == f"client links: {mode.describe()} for 2.0 s"
    assert (fault.nodes, fault.affected) == ((), everything)
