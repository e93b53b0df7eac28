"""``NodeStatsGatherer`` (cluster/frontend/node_stats.py) against in-process
gRPC servers: every node is asked at once with this node's proof, a node
that hangs, is down or answers as another node is listed as unreachable,
and the whole gather takes about one ask timeout, not one per silent node."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from cluster.frontend.node_stats import NodeStatsGatherer
from harness.local_cluster import free_ports
from raftlog.internal.node_proof import NODE_ADMIN_STATS, PROOF_METADATA_KEY
from raftlog.internal.v1 import node_admin_pb2, node_admin_pb2_grpc

pytestmark = pytest.mark.timeout(30)

ASK_TIMEOUT_S = 0.8


class FakeNodeAdmin(node_admin_pb2_grpc.NodeAdminServicer):
    """Answers as ``node_id`` after ``delay_s``, and remembers the proofs
    and requests it was sent."""

    def __init__(self, node_id: int, delay_s: float = 0.0) -> None:
        self.node_id = node_id
        self.delay_s = delay_s
        self.proofs: list[str] = []
        self.requests: list[node_admin_pb2.StatsRequest] = []

    async def Stats(self, request: Any, context: grpc.aio.ServicerContext) -> node_admin_pb2.NodeStats:
        metadata = dict(context.invocation_metadata() or ())
        self.proofs.append(str(metadata.get(PROOF_METADATA_KEY)))
        self.requests.append(request)
        await asyncio.sleep(self.delay_s)
        return node_admin_pb2.NodeStats(
            node_id=self.node_id,
            cpu_seconds=3.0,
            uptime_seconds=12.0,
            rss_bytes=123_456_789,
            replicas=7,
            awake_replicas=2,
            leaders=3,
            election_timeouts=4,
            dropped_peer_messages=5,
            partitions=[node_admin_pb2.ReplicaStats(group=9)],
        )


@pytest.fixture
async def servers() -> AsyncIterator[dict[int, tuple[str, FakeNodeAdmin]]]:
    """Node 2 answers, nodes 3, 6 and 7 hang, node 5 answers as node 9;
    nothing listens at node 4's address."""
    fakes = {
        2: FakeNodeAdmin(2),
        3: FakeNodeAdmin(3, delay_s=20),
        5: FakeNodeAdmin(9),
        6: FakeNodeAdmin(6, delay_s=20),
        7: FakeNodeAdmin(7, delay_s=20),
    }
    ports = dict(zip((2, 3, 4, 5, 6, 7), free_ports(6), strict=True))
    started = []
    for node, fake in fakes.items():
        server = grpc.aio.server()
        node_admin_pb2_grpc.add_NodeAdminServicer_to_server(fake, server)
        assert server.add_insecure_port(f"127.0.0.1:{ports[node]}")
        await server.start()
        started.append(server)
    yield {node: (f"127.0.0.1:{port}", fakes.get(node, FakeNodeAdmin(node))) for node, port in ports.items()}
    for server in started:
        await server.stop(grace=None)


def _local() -> node_admin_pb2.NodeStats:
    return node_admin_pb2.NodeStats(node_id=1, cpu_seconds=1.0, uptime_seconds=4.0, rss_bytes=1, replicas=1)


async def test_every_node_is_asked_at_once_and_silent_ones_are_unreachable(
    servers: dict[int, tuple[str, FakeNodeAdmin]],
) -> None:
    proofs = iter(range(100))
    gatherer = NodeStatsGatherer(
        1,
        _local,
        lambda method: ((PROOF_METADATA_KEY, f"{method}#{next(proofs)}"),),
        ask_timeout_s=ASK_TIMEOUT_S,
    )
    nodes = [(1, "127.0.0.1:1"), *((node, address) for node, (address, _) in sorted(servers.items()))]
    loop = asyncio.get_running_loop()
    try:
        began = loop.time()
        stats = await gatherer.gather(nodes)
        took = loop.time() - began
    finally:
        await gatherer.close()

    # Concurrent: about one ask timeout, not one per silent node (three).
    assert took < 2 * ASK_TIMEOUT_S, took
    assert [s.node_id for s in stats] == [1, 2, 3, 4, 5, 6, 7]
    assert [s.address for s in stats] == [address for _, address in nodes]
    assert [s.reachable for s in stats] == [True, True, False, False, False, False, False]
    assert [s.unreachable_reason for s in stats] == [
        "",
        "",
        "DEADLINE_EXCEEDED",
        "UNAVAILABLE",
        "ANSWERED_AS_NODE_9",
        "DEADLINE_EXCEEDED",
        "DEADLINE_EXCEEDED",
    ]
    # This node's own figures come in-process (its address is never dialled).
    assert (stats[0].replicas, stats[0].cpu_share) == (1, 0.25)
    answered = stats[1]
    assert (
        answered.replicas,
        answered.leaders,
        answered.awake_replicas,
        answered.cpu_seconds,
        answered.uptime_seconds,
        answered.cpu_share,
        answered.rss_bytes,
        answered.election_timeouts,
        answered.dropped_peer_messages,
    ) == (7, 3, 2, 3.0, 12.0, 0.25, 123_456_789, 4, 5)
    # Unreachable nodes carry no figures of their own.
    assert stats[4].replicas == 0 and stats[4].rss_bytes == 0
    # Each ask: the summary only, with a fresh proof for NodeAdmin.Stats.
    asked = [fake for _, fake in servers.values() if fake.proofs]
    assert len(asked) == 5
    seen = [proof for fake in asked for proof in fake.proofs]
    assert all(p.startswith(f"{NODE_ADMIN_STATS}#") for p in seen) and len(set(seen)) == 5
    assert all(r.summary_only for fake in asked for r in fake.requests)


async def test_the_callers_deadline_shortens_the_asks(
    servers: dict[int, tuple[str, FakeNodeAdmin]],
) -> None:
    gatherer = NodeStatsGatherer(1, _local, lambda method: (), ask_timeout_s=10.0)
    address, _ = servers[3]  # hangs
    loop = asyncio.get_running_loop()
    try:
        began = loop.time()
        (stats,) = await gatherer.gather([(3, address)], time_remaining_s=0.6)
        took = loop.time() - began
    finally:
        await gatherer.close()
    assert (stats.reachable, stats.unreachable_reason) == (False, "DEADLINE_EXCEEDED")
    assert took < 1.0, took


async def test_a_dial_override_is_used_and_the_registered_address_reported(
    servers: dict[int, tuple[str, FakeNodeAdmin]],
) -> None:
    address, fake = servers[2]
    gatherer = NodeStatsGatherer(1, _local, lambda method: (), dial={2: address}, ask_timeout_s=2.0)
    try:
        (stats,) = await gatherer.gather([(2, "registered.example:7001")])
    finally:
        await gatherer.close()
    assert (stats.reachable, stats.address, stats.replicas) == (True, "registered.example:7001", 7)
    assert len(fake.proofs) == 1
