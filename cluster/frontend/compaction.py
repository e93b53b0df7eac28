"""``AdminService.CompactTopic`` and the compaction figures of
``DescribeTopic``: reaching each partition's leader.

A compaction pass is proposed by a partition's leader (``Replica.
compact_now``), so the node that takes the call — any node — must reach the
leader of every partition, which it may not host. It asks each leader node's
internal NodeAdmin (``Compact``; ``Stats`` for the figures) with its own
node proof, one call per leader node for all the partitions that node leads,
concurrently, like ``GetNodeStats`` (node_stats.py). Chosen over forwarding
a public per-partition call because the caller was already authorized here
(the topic is its tenant's and compacted), one internal call per node
covers many partitions, and no new public per-partition method is needed.

Invariants:

- The leaders come from this node's routing (``leader_of``); a node that
  answers ``NOT_LEADER`` with a hint is asked once more at the hint, never
  more, so a call makes at most two rounds of asks.
- Nothing here decides whether a pass may run: the admin service checked
  the caller and the policy; the leader's replica refuses if it does not
  lead. Starting a pass twice is harmless (a pass over a compacted range
  removes nothing more).
- This node's own leaders are asked in-process (``local``), never over the
  network.
- The figures are the leaders' own (each copy compacts the same log in the
  background, so a follower's figures may lag); a leader that does not
  answer within ``ASK_TIMEOUT_S`` leaves its partitions' figures unset.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Final, Protocol

import grpc

from cluster.frontend.forwarding import ChannelCache
from cluster.internal.node_admin import NODE_ADMIN_COMPACT
from cluster.tls.dial import PLAIN, Dialer
from raftlog.internal.node_proof import NODE_ADMIN_STATS
from raftlog.internal.v1 import node_admin_pb2, node_admin_pb2_grpc

__all__ = ["ASK_TIMEOUT_S", "LeaderAsker", "LocalNodeAdmin"]

ASK_TIMEOUT_S: Final = 2.0
"""How long a leader may take to start its passes or report its figures
(beyond any time it was asked to wait)."""

Prove = Callable[[str], tuple[tuple[str, str], ...]]


class LocalNodeAdmin(Protocol):
    """This node's NodeAdmin, called in-process."""

    def compact(
        self, groups: list[int], wait_s: float = 0.0
    ) -> Awaitable[node_admin_pb2.CompactResponse]: ...

    def snapshot(self, request: node_admin_pb2.StatsRequest) -> node_admin_pb2.NodeStats: ...


class LeaderAsker:
    """Asks partition leaders to compact, or for their figures."""

    def __init__(
        self,
        node_id: int,
        local: LocalNodeAdmin,
        prove: Prove,
        address_of: Callable[[int], str],
        dial: Mapping[int, str] | None = None,
        ask_timeout_s: float = ASK_TIMEOUT_S,
        dialer: Dialer = PLAIN,
    ) -> None:
        self._node_id = node_id
        self._local = local
        self._prove = prove
        self._address_of = address_of
        self._dial = dict(dial or {})
        self._ask_timeout_s = ask_timeout_s
        self._channels = ChannelCache(dialer=dialer)  # cluster/tls/dial.py

    def _stub(self, node: int) -> node_admin_pb2_grpc.NodeAdminStub | None:
        target = self._dial.get(node) or self._address_of(node)
        return node_admin_pb2_grpc.NodeAdminStub(self._channels.channel(target)) if target else None

    async def compact(
        self, leaders: Mapping[int, int], wait_s: float = 0.0
    ) -> dict[int, node_admin_pb2.GroupCompaction]:
        """``group -> leader node`` (0: none known) -> each group's answer
        (``error`` set when no pass was started there)."""
        answers = await self._compact_round(leaders, wait_s)
        retry = {
            g: a.leader
            for g, a in answers.items()
            if a.error == "NOT_LEADER" and a.leader and a.leader != leaders.get(g)
        }
        if retry:
            answers.update(await self._compact_round(retry, wait_s))
        return answers

    async def _compact_round(
        self, leaders: Mapping[int, int], wait_s: float
    ) -> dict[int, node_admin_pb2.GroupCompaction]:
        answers = {
            g: node_admin_pb2.GroupCompaction(group=g, error="NO_LEADER")
            for g, leader in leaders.items()
            if not leader
        }
        by_node = _by_node(leaders)
        results = await asyncio.gather(
            *(self._compact_on(node, groups, wait_s) for node, groups in by_node.items())
        )
        for result in results:
            answers.update({a.group: a for a in result})
        return answers

    async def _compact_on(
        self, node: int, groups: list[int], wait_s: float
    ) -> list[node_admin_pb2.GroupCompaction]:
        if node == self._node_id:
            return list((await self._local.compact(groups, wait_s)).groups)
        stub = self._stub(node)
        failed = "NO_ADDRESS"
        if stub is not None:
            try:
                response: node_admin_pb2.CompactResponse = await stub.Compact(
                    node_admin_pb2.CompactRequest(groups=groups, wait=wait_s > 0, wait_seconds=wait_s),
                    timeout=wait_s + self._ask_timeout_s,
                    metadata=self._prove(NODE_ADMIN_COMPACT),
                )
                return list(response.groups)
            except grpc.aio.AioRpcError as error:
                failed = error.code().name
        return [node_admin_pb2.GroupCompaction(group=g, error=failed, leader=node) for g in groups]

    async def figures(self, leaders: Mapping[int, int]) -> dict[int, node_admin_pb2.ReplicaStats]:
        """``group -> leader node`` -> the leader's status of each group it
        reported as its leader (groups missing: unknown)."""
        by_node = _by_node(leaders)
        results = await asyncio.gather(*(self._stats_on(node, groups) for node, groups in by_node.items()))
        return {r.group: r for result in results for r in result if r.role == "LEADER" and r.group in leaders}

    async def _stats_on(self, node: int, groups: list[int]) -> Iterable[node_admin_pb2.ReplicaStats]:
        request = node_admin_pb2.StatsRequest(groups=groups)
        if node == self._node_id:
            return self._local.snapshot(request).partitions
        stub = self._stub(node)
        if stub is None:
            return ()
        try:
            stats: node_admin_pb2.NodeStats = await stub.Stats(
                request, timeout=self._ask_timeout_s, metadata=self._prove(NODE_ADMIN_STATS)
            )
        except grpc.aio.AioRpcError:
            return ()
        return stats.partitions if stats.node_id == node else ()

    async def close(self) -> None:
        await self._channels.close()


def _by_node(leaders: Mapping[int, int]) -> dict[int, list[int]]:
    by_node: dict[int, list[int]] = {}
    for group, leader in sorted(leaders.items()):
        if leader:
            by_node.setdefault(leader, []).append(group)
    return by_node
