"""Reaching a ``LocalCluster`` under test from the benchmarks.

- ``credentials(cluster)``: the keyword arguments that say who the benchmark
  is (``api_key=...``, and ``tls_ca=...`` on a TLS cluster) for
  ``Producer``, ``Consumer``, ``Admin`` and ``ChannelPool``.
  It is the ONLY place that decides them: every client the benchmarks make
  presents the cluster's operator key (``LocalCluster.api_key``, the key
  its nodes are bootstrapped with).
- ``running_cluster``: start a cluster's nodes, yield it, SIGKILL the nodes
  afterwards (benchmark data is thrown away, so there is nothing to stop
  cleanly, and a clean stop of 1,000 replicas takes seconds).
- ``NodeAdmin``: the nodes' ``Stats`` (CPU, RSS, replicas, sync counters,
  elections) and who the nodes say leads a partition.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import grpc

from client.metadata import ChannelPool
from harness.local_cluster import LocalCluster, TopicSpec
from raftlog.internal.v1 import node_admin_pb2, node_admin_pb2_grpc
from raftlog.v1 import metadata_pb2


def credentials(cluster: LocalCluster) -> dict[str, Any]:
    """``{"api_key": the cluster's operator key}`` (spread into ``Producer``,
    ``Consumer`` and ``ChannelPool``), and ``tls_ca`` (the CA file, as a
    string) when the cluster runs TLS."""
    found: dict[str, Any] = {"api_key": cluster.api_key}
    if cluster.tls_ca is not None:
        found["tls_ca"] = str(cluster.tls_ca)
    return found


def bootstrap(cluster: LocalCluster) -> list[str]:
    return [cluster.addresses[n] for n in cluster.node_ids]


@asynccontextmanager
async def running_cluster(
    root: Path, topics: Sequence[TopicSpec], *, start_timeout_s: float = 60.0, **options: Any
) -> AsyncIterator[LocalCluster]:
    """A started 3-node cluster (RF 3: every topic on every node) under
    ``root``, every node serving within ``start_timeout_s``; its nodes are
    killed on exit. ``options`` go to ``LocalCluster``."""
    cluster = LocalCluster(root, topics=topics, **options)
    try:
        await asyncio.to_thread(cluster.start_all, start_timeout_s)
        yield cluster
    finally:
        await asyncio.to_thread(cluster.close)


class NodeAdmin:
    """``NodeAdmin.Stats`` of every node of a cluster."""

    def __init__(self, cluster: LocalCluster) -> None:
        self._pool = ChannelPool(**credentials(cluster))
        self._cluster = cluster  # makes the node proof NodeAdmin needs for each call
        self.addresses = dict(cluster.addresses)
        # With TLS a node serves NodeAdmin only on its internal mTLS
        # listener, to a caller presenting a node certificate.
        self._internal: dict[int, grpc.aio.Channel] = {}
        if cluster.tls_ca is not None:
            credentials_of_node = cluster.node_credentials()
            self._internal = {
                n: grpc.aio.secure_channel(cluster.internal_address(n), credentials_of_node)
                for n in cluster.addresses
            }

    def _stub(self, node: int) -> node_admin_pb2_grpc.NodeAdminStub:
        channel = self._internal.get(node) or self._pool.channel(self.addresses[node])
        return node_admin_pb2_grpc.NodeAdminStub(channel)

    async def close(self) -> None:
        for channel in self._internal.values():
            await channel.close()
        await self._pool.close()

    async def stats(
        self, nodes: Sequence[int] | None = None, *, summary_only: bool = True
    ) -> dict[int, node_admin_pb2.NodeStats]:
        """Stats of ``nodes`` (default: all)."""
        wanted = list(self.addresses) if nodes is None else list(nodes)
        request = node_admin_pb2.StatsRequest(summary_only=summary_only)
        answers = await asyncio.gather(
            *(
                self._stub(n).Stats(request, timeout=10, metadata=self._cluster.node_admin_metadata())
                for n in wanted
            )
        )
        return dict(zip(wanted, answers, strict=True))

    async def election_timeouts(self) -> int:
        """Elections started on all nodes because a leader went silent."""
        return sum(s.election_timeouts for s in (await self.stats()).values())

    async def partition_leader(self, topic: str, partition: int, nodes: Sequence[int]) -> int | None:
        """The node that every one of ``nodes`` names as the leader of
        ``topic``/``partition`` (``GetMetadata``); None while one does not
        answer, knows none, or they disagree."""
        request = metadata_pb2.GetMetadataRequest(topics=[topic])

        async def ask(node: int) -> int:
            try:
                response = await self._pool.metadata(self.addresses[node]).GetMetadata(request, timeout=5)
            except grpc.aio.AioRpcError:
                return 0
            for t in response.topics:
                for p in t.partitions:
                    if t.name == topic and p.partition == partition:
                        return int(p.leader)
            return 0

        named = set(await asyncio.gather(*(ask(n) for n in nodes)))
        return named.pop() if len(named) == 1 and 0 not in named else None

    async def wait_for_leaders(self, groups: int, *, timeout: float = 60.0) -> None:
        """Until ``groups`` Raft groups have a leader (counted from the
        summaries: per-replica lists of 1,000-replica nodes are costly)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                led = sum(s.leaders for s in (await self.stats()).values())
            except Exception:  # a node starting up; ask again
                led = -1
            if led >= groups:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{led} of {groups} groups have a leader after {timeout:g} s")
            await asyncio.sleep(0.2)


def cpu_pct(
    before: dict[int, node_admin_pb2.NodeStats], after: dict[int, node_admin_pb2.NodeStats], seconds: float
) -> dict[int, float]:
    """Each node's CPU over an interval, in % of one core."""
    return {n: round((after[n].cpu_seconds - before[n].cpu_seconds) / seconds * 100, 1) for n in after}
