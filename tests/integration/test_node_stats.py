"""``AdminService.GetNodeStats`` on a real 3-node cluster (node processes on
loopback): what an operator used to need the cluster secret and NodeAdmin
for, with an operator key on the public API (issue 14).

The tests run in file order on one cluster; the last two pause and kill
node 3, so nothing after them needs it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import grpc
import pytest

from client import AuthorizationError, NotFoundError
from client.admin import Admin
from client.auth import authorized_channel
from cluster.controller_replica import CONTROLLER_GROUP
from cluster.frontend.node_stats import ASK_TIMEOUT_S
from cluster.transport.peer_link import METADATA_CLUSTER, METADATA_FROM, METADATA_TO, STREAM_METHOD
from cluster.transport.raft_wire import encode_batch, encode_group_message
from harness.local_cluster import LocalCluster, TopicSpec
from raft.types import Message, MessageType
from raftlog.internal.v1 import node_admin_pb2, node_admin_pb2_grpc, transport_pb2
from raftlog.v1 import admin_pb2, admin_pb2_grpc

pytestmark = pytest.mark.timeout(180)

HUGE = 10**9


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("node-stats"), topics=[TopicSpec("t", partitions=3)])
    c.start_all()
    yield c
    c.close()


def _admin(cluster: LocalCluster, node: int = 1, key: str | None = None) -> Admin:
    return Admin([cluster.addresses[node]], api_key=key or cluster.api_key, timeout_s=20)


async def _node_admin(
    cluster: LocalCluster, node: int, request: node_admin_pb2.StatsRequest | None = None
) -> node_admin_pb2.NodeStats:
    """What ``node``'s NodeAdmin says, asked with the harness's proof."""
    async with grpc.aio.insecure_channel(cluster.addresses[node]) as channel:
        stats: node_admin_pb2.NodeStats = await node_admin_pb2_grpc.NodeAdminStub(channel).Stats(
            request or node_admin_pb2.StatsRequest(summary_only=True),
            timeout=5,
            metadata=cluster.node_admin_metadata(),
        )
    return stats


async def test_an_operator_key_gets_every_nodes_figures(cluster: LocalCluster) -> None:
    async with _admin(cluster, node=2) as admin:
        stats = await admin.get_node_stats()
        assert [s.node_id for s in stats] == [1, 2, 3]
        assert [s.address for s in stats] == [cluster.addresses[n] for n in (1, 2, 3)]
        for s in stats:
            assert s.reachable and not s.unreachable_reason, s
            # 3 partitions of "t", 3 of the groups' offsets topic and 1 of the audit topic, each on every node.
            assert s.replicas == 7, s
            # Awake counts the metadata controller's replica too.
            assert s.leaders <= s.replicas and s.awake_replicas <= s.replicas + 1
            assert s.rss_bytes > 10_000_000 and s.cpu_seconds > 0 and s.uptime_seconds > 0
            assert s.cpu_share == pytest.approx(s.cpu_seconds / s.uptime_seconds)
            assert s.dropped_peer_messages == 0
        # Another node's figures are what that node's NodeAdmin says.
        direct = await _node_admin(cluster, 3)
        assert (stats[2].replicas, stats[2].node_id) == (direct.replicas, direct.node_id)
        assert stats[2].rss_bytes == pytest.approx(direct.rss_bytes, rel=0.5)

        # Named nodes only; a node that is not registered is NOT_FOUND.
        assert [s.node_id for s in await admin.get_node_stats([3, 1])] == [1, 3]
        with pytest.raises(NotFoundError) as unknown:
            await admin.get_node_stats([2, 42])
        assert unknown.value.reason == "UNKNOWN_NODE" and "42" in unknown.value.message

    # Paginated like every list call; a token belongs to its selection.
    async with authorized_channel(cluster.addresses[1], cluster.api_key) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        seen, token, pages = [], "", 0
        while True:
            page = await stub.GetNodeStats(
                admin_pb2.GetNodeStatsRequest(page_size=1, page_token=token), timeout=10
            )
            seen += [s.node_id for s in page.nodes]
            pages += 1
            token = page.next_page_token
            if not token:
                break
        assert (seen, pages) == ([1, 2, 3], 3)
        first = await stub.GetNodeStats(admin_pb2.GetNodeStatsRequest(page_size=1), timeout=10)
        with pytest.raises(grpc.aio.AioRpcError) as other_listing:
            await stub.GetNodeStats(
                admin_pb2.GetNodeStatsRequest(node_ids=[2, 3], page_token=first.next_page_token), timeout=10
            )
        assert other_listing.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_a_tenant_key_is_refused(cluster: LocalCluster) -> None:
    async with _admin(cluster) as operator:
        tenant_key = (await operator.create_tenant("acme")).api_key.clear_text
    async with _admin(cluster, key=tenant_key) as tenant:
        with pytest.raises(AuthorizationError) as refused:
            await tenant.get_node_stats()
    assert refused.value.reason == "OPERATOR_KEY_REQUIRED"
    assert refused.value.code == grpc.StatusCode.PERMISSION_DENIED


async def _send_as_peer(cluster: LocalCluster, sender: int, receiver: int, message: Message) -> None:
    """Deliver ``message`` for the controller group to ``receiver`` over a
    Raft stream that ``sender`` opens, as a node holding the secret would."""
    cluster_id = next(
        line.split('"')[1]
        for line in cluster.config_path.read_text().splitlines()
        if line.startswith("cluster_id")
    )
    metadata = (
        (METADATA_CLUSTER, cluster_id),
        (METADATA_FROM, str(sender)),
        (METADATA_TO, str(receiver)),
        *cluster.internal_metadata(STREAM_METHOD, sender),
    )
    batch = encode_batch(1, [encode_group_message(CONTROLLER_GROUP, message)])
    async with grpc.aio.insecure_channel(cluster.addresses[receiver]) as channel:
        call = channel.stream_stream(STREAM_METHOD, None, transport_pb2.TransportAck.FromString)(
            metadata=metadata
        )
        try:
            async with asyncio.timeout(5):
                await call.write(batch)
                await call.read()  # the batch was taken
        finally:
            call.cancel()


async def test_a_peer_message_the_raft_core_drops_is_counted(cluster: LocalCluster) -> None:
    """An append acknowledged past the controller leader's log (no correct
    follower can send it) is dropped by the leader's Raft core, and the
    count reaches the operator through GetNodeStats."""
    async with _admin(cluster) as admin:
        leader = int((await admin.cluster_status()).controller_leader)
        follower = next(n for n in cluster.node_ids if n != leader)
        own = await _node_admin(cluster, leader, node_admin_pb2.StatsRequest(groups=[CONTROLLER_GROUP]))
        (controller,) = own.partitions
        ack = Message(
            MessageType.APPEND_RESPONSE, to=leader, sender=follower, term=controller.term, index=HUGE
        )
        await _send_as_peer(cluster, follower, leader, ack)
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            stats = {s.node_id: s for s in await admin.get_node_stats()}
            if stats[leader].dropped_peer_messages >= 1:
                break
            assert asyncio.get_running_loop().time() < deadline, stats[leader]
            await asyncio.sleep(0.2)
        assert [stats[n].dropped_peer_messages for n in cluster.node_ids if n != leader] == [0, 0]
        assert int((await admin.cluster_status()).controller_leader) == leader
    assert cluster.exited() == {}


async def _timed_stats(cluster: LocalCluster) -> tuple[list[admin_pb2.NodeStats], float]:
    loop = asyncio.get_running_loop()
    async with _admin(cluster) as admin:
        began = loop.time()
        stats = await admin.get_node_stats()
        return stats, loop.time() - began


async def test_a_paused_node_is_unreachable_and_the_call_still_answers(cluster: LocalCluster) -> None:
    cluster.pause(3)
    try:
        stats, took = await _timed_stats(cluster)
    finally:
        cluster.resume(3)
    assert took < ASK_TIMEOUT_S + 2.0, took
    assert [(s.node_id, s.reachable) for s in stats] == [(1, True), (2, True), (3, False)]
    # The ask's deadline, or keepalive noticing the silent connection first
    # (an unanswered ping fails the call UNAVAILABLE in about two seconds).
    assert stats[2].unreachable_reason in ("DEADLINE_EXCEEDED", "UNAVAILABLE")
    assert stats[2].address == cluster.addresses[3] and stats[2].replicas == 0
    assert stats[0].replicas > 0 and stats[1].rss_bytes > 0


async def test_a_stopped_node_is_unreachable_and_the_call_still_answers(cluster: LocalCluster) -> None:
    cluster.kill(3)
    stats, took = await _timed_stats(cluster)
    assert took < ASK_TIMEOUT_S + 2.0, took
    assert [(s.node_id, s.reachable) for s in stats] == [(1, True), (2, True), (3, False)]
    assert stats[2].unreachable_reason in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
