"""The cluster under test: real node processes (``harness.local_cluster``)
wired through fault-injecting proxies (chaos/proxy.py), plus an observer.

Topology, for nodes 1..n:

- node i reaches peer j through link ``n{i}->n{j}`` (``--dial j=PROXY`` on
  node i's command line);
- a client placed next to node i (its *location*) reaches node j through
  link ``c{i}->n{j}`` (the SDK's ``address_map`` maps j's advertised address
  to that proxy), and node i itself directly (``c{i}->n{i}`` also exists
  but no fault touches it);
- the observer (``stats``, ``leaders``, ``converged``: NodeAdmin calls;
  ``controller_leader``, ``refresh_assignments``: the admin API) and the
  offline log reader bypass the proxies: they watch the experiment, they
  are not part of it.

Tenants and topics are created through the admin API once the nodes are up
(none in the cluster file), each topic with a replication factor of
min(3, nodes), so a 5-node cluster has spare nodes to move replicas to.
Clients of a tenant use its own API key (``key_for``; the operator key for
``default``). Raft group ids and replica sets come from the
controller (``refresh_assignments``), never from the file: the controller
may also move replicas (a node silent for ``node_dead_after_ms`` is
declared dead), so the drill asks again at the end.

A network partition is a set of *cuts*: ``(i, j)`` means node i can no
longer send to node j. It blocks link ``n{i}->n{j}`` (the connection i
dials to j: i's Raft messages to j) and ``c{i}->n{j}`` (clients next to i
cannot reach j). A symmetric partition cuts both directions. Link-wide
degradation (delay, loss) applies to every node link and every client link
between different locations, under any cuts. Client-link faults
(``degrade_clients``) apply to every client link, a client's own node's
included, in place of the degradation.

Invariant: ``partition``, ``degrade`` and ``degrade_clients`` each replace
their part of the network state, and every link's mode is then recomputed
and applied in one step of the proxy loop; ``heal_network`` resets all
three.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from chaos.history import TP
from chaos.proxy import BLACKHOLE, PASS, LinkMode, ProxyFleet
from client.admin import Admin
from client.errors import RaftlogError
from harness.local_cluster import LocalCluster
from raftlog.internal.v1 import node_admin_pb2, node_admin_pb2_grpc

__all__ = [
    "COMPACTED_DELETE_RETENTION_MS",
    "COMPACTED_LAG_MS",
    "DEFAULT_TENANT",
    "ChaosCluster",
    "TopicTarget",
]

DEFAULT_TENANT = "default"
"""The tenant the cluster file's topics belong to."""

COMPACTED_LAG_MS = 0
"""A compacted topic's ``min_compaction_lag_ms`` in a drill: a record may
be cleaned as soon as a later one of its key is below the cleaning point,
so compaction really runs during the faults."""
COMPACTED_DELETE_RETENTION_MS = 3000
"""...and its ``delete_retention_ms``: tombstones may go a few seconds
after they were written, so keys also disappear during a drill."""


@dataclass(frozen=True, slots=True)
class TopicTarget:
    """A topic the workload writes, and the tenant it belongs to."""

    tenant: str
    topic: str
    partitions: int
    compacted: bool = False
    """A compacted topic (cleanup_policy "compact"): the workload writes
    keyed updates and tombstones to it (chaos/keyed.py)."""


class ChaosCluster:
    """See the module docstring. Process control methods are async (they
    run the blocking ``LocalCluster`` calls in a thread) and must be called
    from the drill's event loop."""

    def __init__(
        self,
        root: Path,
        *,
        nodes: int,
        topics: Sequence[TopicTarget],
        seed: int,
        unsafe_ack_before_commit: bool = False,
        unsafe_compaction_drops_latest: bool = False,
        tick_ms: int = 50,
        election_ticks: int = 6,
        leader_balance_ms: int = 1000,
    ) -> None:
        self.topics = list(topics)
        names = [t.topic for t in topics]
        if len(set(names)) != len(names):
            raise ValueError(f"topic names must be unique across tenants: {names}")
        node_args = ["--unsafe-ack-before-commit"] if unsafe_ack_before_commit else []
        if unsafe_compaction_drops_latest:  # TEST ONLY: the compacted check's negative control
            node_args.append("--unsafe-compaction-drops-latest")
        self.local = LocalCluster(
            root,
            nodes,
            topics=(),
            tick_ms=tick_ms,
            election_ticks=election_ticks,
            leader_balance_ms=leader_balance_ms,
            node_args=node_args,
        )
        self.election_timeout_s = tick_ms * election_ticks / 1000
        self.node_ids = list(self.local.node_ids)
        self.addresses = dict(self.local.addresses)
        self.groups: dict[TP, int] = {}  # from the controller: refresh_assignments
        self.replicas: dict[TP, tuple[int, ...]] = {}
        self.tenant_keys: dict[str, str] = {}
        self.decommissioned: set[int] = set()
        self.fleet = ProxyFleet(seed)
        for i in self.node_ids:
            dial = []
            for j in self.node_ids:
                if i != j:
                    port = self.fleet.add_link(f"n{i}->n{j}", self.addresses[j])
                    dial += ["--dial", f"{j}=127.0.0.1:{port}"]
            self.local.node_extra_args[i] = dial
        for i in self.node_ids:
            for j in self.node_ids:
                self.fleet.add_link(f"c{i}->n{j}", self.addresses[j])
        self.cuts: frozenset[tuple[int, int]] = frozenset()
        self.degradation = PASS
        self.client_faults = PASS
        self.paused: set[int] = set()
        self._channels: dict[int, grpc.aio.Channel] = {}

    # --- what clients use ----------------------------------------------------------

    @property
    def api_key(self) -> str:
        """The operator key (acts in tenant ``default`` without a header)."""
        return self.local.api_key

    def key_for(self, tenant: str) -> str:
        """The API key a client of ``tenant`` uses: the tenant's own (the
        operator key for ``default``)."""
        return self.tenant_keys.get(tenant, self.api_key)

    @property
    def bootstrap(self) -> list[str]:
        return [self.addresses[n] for n in self.node_ids]

    def address_map(self, location: int) -> dict[str, str]:
        """For a client next to node ``location``: each node's advertised
        address → the proxy of link ``c{location}->n{j}``."""
        return {self.addresses[j]: self.fleet.address(f"c{location}->n{j}") for j in self.node_ids}

    @property
    def running(self) -> list[int]:
        return sorted(self.local.processes)

    @property
    def stopped(self) -> list[int]:
        return [n for n in self.node_ids if n not in self.local.processes]

    # --- processes ------------------------------------------------------------------

    async def start_all(self) -> None:
        await asyncio.to_thread(self.local.start_all)

    async def start(self, node: int) -> None:
        if node not in self.local.processes:
            await asyncio.to_thread(self.local.start, node)

    async def kill(self, node: int) -> None:
        self.paused.discard(node)
        await asyncio.to_thread(self.local.kill, node)

    async def stop(self, node: int) -> int:
        self.paused.discard(node)
        return await asyncio.to_thread(self.local.stop, node)

    def pause(self, node: int) -> None:
        self.local.pause(node)
        self.paused.add(node)

    def resume(self, node: int) -> None:
        if node in self.local.processes:
            self.local.resume(node)
        self.paused.discard(node)

    def exited(self) -> dict[int, int]:
        """Nodes whose process ended without the drill asking."""
        return self.local.exited()

    # --- network --------------------------------------------------------------------

    def _apply(self) -> None:
        modes: dict[str, LinkMode] = {}
        for i in self.node_ids:
            for j in self.node_ids:
                cut = (i, j) in self.cuts
                if i != j:
                    modes[f"n{i}->n{j}"] = BLACKHOLE if cut else self.degradation
                if cut:
                    modes[f"c{i}->n{j}"] = BLACKHOLE
                elif self.client_faults != PASS:
                    modes[f"c{i}->n{j}"] = self.client_faults
                else:
                    modes[f"c{i}->n{j}"] = self.degradation if i != j else PASS
        self.fleet.set_modes(modes)

    def partition(self, cuts: Iterable[tuple[int, int]]) -> None:
        """Replace the current cuts (``(i, j)``: i cannot send to j)."""
        cuts = frozenset(cuts)
        bad = [c for c in cuts if c[0] == c[1] or not set(c) <= set(self.node_ids)]
        if bad:
            raise ValueError(f"bad cuts {bad}")
        self.cuts = cuts
        self._apply()

    def degrade(self, mode: LinkMode) -> None:
        self.degradation = mode
        self._apply()

    def degrade_clients(self, mode: LinkMode) -> None:
        self.client_faults = mode
        self._apply()

    def heal_network(self) -> None:
        self.cuts = frozenset()
        self.degradation = PASS
        self.client_faults = PASS
        self._apply()

    async def heal_all(self) -> None:
        """Undo every fault: network, paused and stopped nodes."""
        self.heal_network()
        for node in list(self.paused):
            self.resume(node)
        for node in self.stopped:
            await self.start(node)

    # --- tenants, topics and assignments (admin API, no proxies) ----------------------

    async def setup_topics(self, timeout_s: float = 60.0) -> None:
        """Create the tenants and topics, then learn every partition's Raft
        group and replicas."""
        async with Admin(self.bootstrap, api_key=self.api_key, timeout_s=timeout_s) as admin:
            for tenant in sorted({t.tenant for t in self.topics} - {DEFAULT_TENANT}):
                created = await admin.create_tenant(tenant)
                self.tenant_keys[tenant] = created.api_key.clear_text
        for t in self.topics:
            async with Admin(self.bootstrap, timeout_s=timeout_s, api_key=self.key_for(t.tenant)) as admin:
                if t.compacted:
                    await admin.create_topic(
                        t.topic,
                        t.partitions,
                        min(3, len(self.node_ids)),
                        cleanup_policy="compact",
                        min_compaction_lag_ms=COMPACTED_LAG_MS,
                        delete_retention_ms=COMPACTED_DELETE_RETENTION_MS,
                    )
                else:
                    await admin.create_topic(t.topic, t.partitions, min(3, len(self.node_ids)))
        await self.refresh_assignments(timeout_s)

    async def compact(self, target: TopicTarget, *, wait: bool = False, timeout_s: float = 5.0) -> int:
        """Ask every leader of ``target`` (a compacted topic) to compact now;
        how many partitions answered done (with ``wait``; else how many
        answered). Raises ``RaftlogError`` (e.g. a leader unreachable)."""
        async with Admin(self.bootstrap, timeout_s=timeout_s, api_key=self.key_for(target.tenant)) as admin:
            answers = await admin.compact_topic(target.topic, wait=wait)
        return sum(1 for a in answers if a.done or not wait)

    async def refresh_assignments(self, timeout_s: float = 30.0) -> None:
        """Every partition's Raft group and voters, as the controller says."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for t in self.topics:
            async with Admin(self.bootstrap, timeout_s=timeout_s, api_key=self.key_for(t.tenant)) as admin:
                while True:
                    description = await admin.describe_topic(t.topic)
                    found = {a.partition: a for a in description.assignments if a.raft_group and a.replicas}
                    if len(found) == t.partitions or loop.time() > deadline:
                        break
                    await asyncio.sleep(0.2)
            for p, a in found.items():
                self.groups[(t.topic, p)] = int(a.raft_group)
                self.replicas[(t.topic, p)] = tuple(int(n) for n in a.replicas)

    async def controller_leader(self, timeout_s: float = 5.0) -> int | None:
        """The node leading the metadata controller (group 0), as the
        running, unpaused nodes see it (the most common answer)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while loop.time() < deadline:
            votes: dict[int, int] = {}
            for node in [n for n in self.running if n not in self.paused]:
                try:
                    async with Admin([self.addresses[node]], api_key=self.api_key, timeout_s=1.0) as admin:
                        leader = (await admin.cluster_status()).controller_leader
                except RaftlogError:
                    continue
                if leader:
                    votes[int(leader)] = votes.get(int(leader), 0) + 1
            if votes:
                return max(votes, key=lambda n: votes[n])
            await asyncio.sleep(0.2)
        return None

    async def decommission(self, node: int) -> None:
        async with Admin(self.bootstrap, api_key=self.api_key, timeout_s=10.0) as admin:
            await admin.decommission_node(node)
        self.decommissioned.add(node)

    async def replicas_on(self, node: int) -> int | None:
        """Partition replicas the controller assigns to ``node``."""
        async with Admin(self.bootstrap, api_key=self.api_key, timeout_s=5.0) as admin:
            for description in await admin.list_nodes():
                if description.node_id == node:
                    return int(description.replicas)
        return None

    # --- the observer (no proxies) ----------------------------------------------------

    def _admin(self, node: int) -> node_admin_pb2_grpc.NodeAdminStub:
        channel = self._channels.get(node)
        if channel is None:
            channel = self._channels[node] = grpc.aio.insecure_channel(
                self.addresses[node],
                options=[("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 500)],
            )
        return node_admin_pb2_grpc.NodeAdminStub(channel)

    async def stats(self, timeout_s: float = 1.0) -> dict[int, node_admin_pb2.NodeStats]:
        """NodeAdmin stats of every running, unpaused node that answered."""
        nodes = [n for n in self.running if n not in self.paused]

        async def one(node: int) -> node_admin_pb2.NodeStats | None:
            try:
                response: node_admin_pb2.NodeStats = await self._admin(node).Stats(
                    node_admin_pb2.StatsRequest(),
                    timeout=timeout_s,
                    metadata=self.local.node_admin_metadata(),
                )
                return response
            except grpc.aio.AioRpcError:
                return None

        answers = await asyncio.gather(*(one(n) for n in nodes))
        return {n: a for n, a in zip(nodes, answers, strict=True) if a is not None}

    async def leaders(self, patience_s: float = 3.0) -> dict[TP, int]:
        """Partition → the node that says it leads it (highest term wins).
        Asks again, for up to ``patience_s``, while some running unpaused
        node does not answer: a leader elected on a node that was not heard
        from would otherwise be missed, and an older one named instead."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience_s
        while True:
            answers = await self.stats()
            if len(answers) >= len(self.running) - len(self.paused) or loop.time() > deadline:
                break
            await asyncio.sleep(0.1)
        by_group = {g: tp for tp, g in self.groups.items()}
        best: dict[TP, tuple[int, int]] = {}
        for node, stats in answers.items():
            for replica in stats.partitions:
                tp = by_group.get(replica.group)
                if (
                    tp is not None
                    and replica.role == "LEADER"
                    and (tp not in best or replica.term > best[tp][0])
                ):
                    best[tp] = (replica.term, node)
        return {tp: node for tp, (_, node) in best.items()}

    async def wait_for_leaders(self, timeout_s: float = 30.0) -> dict[TP, int]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            leaders = await self.leaders()
            if len(leaders) == len(self.groups) or loop.time() > deadline:
                return leaders
            await asyncio.sleep(0.2)

    async def converged(self) -> dict[TP, int] | None:
        """When every node is up and every replica of every partition has the
        same commit index, applied it and holds nothing beyond it: each
        partition's high watermark. None otherwise."""
        if self.stopped or self.paused:
            return None
        stats = await self.stats()
        if len(stats) != len(self.node_ids):
            return None
        by_group = {g: tp for tp, g in self.groups.items()}
        seen: dict[TP, set[tuple[int, int, int]]] = {tp: set() for tp in self.groups}
        leaders: dict[TP, int] = {}
        high: dict[TP, int] = {}
        for node_stats in stats.values():
            for replica in node_stats.partitions:
                tp = by_group.get(replica.group)
                if tp is None:
                    continue
                seen[tp].add((replica.commit_index, replica.applied_index, replica.last_index))
                high[tp] = max(high.get(tp, 0), replica.high_watermark)
                if replica.role == "LEADER":
                    leaders[tp] = leaders.get(tp, 0) + 1
        for tp, states in seen.items():
            if len(states) != 1 or leaders.get(tp) != 1:
                return None
            ((commit, applied, last),) = states
            if not commit == applied == last:
                return None
        return high

    async def wait_caught_up(self, node: int, timeout_s: float = 20.0) -> bool:
        """Wait until every replica ``node`` hosts has applied what its
        leader had committed when we first saw that leader (under load the
        replicas are never all equal at one instant, so this is the test
        for a restarted node, not ``converged``)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        targets: dict[int, int] = {}
        hosted = {self.groups[tp] for tp, replicas in self.replicas.items() if node in replicas}
        while loop.time() < deadline:
            stats = await self.stats()
            for node_stats in stats.values():
                for replica in node_stats.partitions:
                    if replica.group in hosted and replica.role == "LEADER":
                        targets.setdefault(replica.group, replica.commit_index)
            mine = {r.group: r.applied_index for r in stats[node].partitions} if node in stats else {}
            if len(targets) == len(hosted) and all(mine.get(g, -1) >= c for g, c in targets.items()):
                return True
            await asyncio.sleep(0.25)
        return False

    async def wait_converged(self, timeout_s: float = 30.0) -> dict[TP, int] | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            high = await self.converged()
            if high is not None or loop.time() > deadline:
                return high
            await asyncio.sleep(0.25)

    # --- shutting down ------------------------------------------------------------------

    async def stop_all(self) -> dict[int, int]:
        """Stop every node cleanly (after resuming paused ones)."""
        for node in list(self.paused):
            self.resume(node)
        return await asyncio.to_thread(self.local.stop_all)

    async def close(self) -> None:
        for channel in self._channels.values():
            with contextlib.suppress(Exception):
                await channel.close()
        self._channels.clear()
        await asyncio.to_thread(self.local.close)
        self.fleet.close()

    def data_dirs(self) -> dict[int, Path]:
        return {n: self.local.data_dir(n) for n in self.node_ids}

    def log_tail(self, node: int, lines: int = 20) -> str:
        return self.local.log_tail(node, lines)
