"""Stream admission and handling in cluster/transport/raft_transport.py and
cluster/transport/peer_link.py against real gRPC servers: nodes of other
clusters, other nodes and non-peers are refused with a clear status that
names neither cluster nor node; undecodable messages are counted and the
stream goes on; a newer stream from a node supersedes the older; a stream
without acks is abandoned and redialed; a link closes its stream and
channel before returning.

Every test runs grpc.aio servers on 127.0.0.1 (port 0, then the bound port)
inside the test's event loop, with short ping and timeout settings so that
down/up transitions take a fraction of a second.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from cluster.transport.peer_link import METADATA_CLUSTER, METADATA_FROM, METADATA_TO, STREAM_METHOD, PeerLink
from cluster.transport.raft_transport import TransportConfig
from cluster.transport.raft_wire import encode_batch, encode_group_message
from cluster.transport.transport_config import PeerCounters
from raftlog.internal.node_proof import PROOF_METADATA_KEY, make_proof
from raftlog.internal.v1 import transport_pb2, transport_pb2_grpc
from tests.cluster.transport_nodes import FAST, TestNode, heartbeat, tasks_of, wait_for


@pytest.fixture
async def lone_node() -> AsyncIterator[TestNode]:
    """Node 1 with a peer 2 that never answers: tests play node 2 by hand
    through raw streams."""
    node = TestNode(1)
    node.attach({2: "127.0.0.1:1"})
    await node.start()
    yield node
    await node.stop()


AS_NODE_2 = ((METADATA_CLUSTER, "test"), (METADATA_FROM, "2"), (METADATA_TO, "1"))


def raw_stream(channel: grpc.aio.Channel) -> grpc.aio.StreamStreamMultiCallable:
    """Opens transport streams carrying hand-made batches."""
    return channel.stream_stream(STREAM_METHOD, None, transport_pb2.TransportAck.FromString)


async def test_nodes_of_different_clusters_refuse_each_other() -> None:
    a = TestNode(1, TransportConfig(cluster_id="alpha", ping_interval=0.05, peer_timeout=0.3))
    b = TestNode(2, TransportConfig(cluster_id="beta", ping_interval=0.05, peer_timeout=0.3))
    a.attach({2: b.address})
    b.attach({1: a.address})
    await a.start()
    await b.start()
    try:
        a.t.send(2, 1, heartbeat(2, 1, 1))
        await wait_for(lambda: a.t.stats().rejected_streams >= 1 and b.t.stats().rejected_streams >= 1)
        await asyncio.sleep(0.2)
        assert not a.t.peer_alive(2) and not b.t.peer_alive(1)
        assert a.states == [] and b.states == []
        assert b.deliveries == [] and a.deliveries == []
        assert a.t.stats().peers[2].queued_messages == 1  # the refused stream consumed nothing
    finally:
        await a.stop()
        await b.stop()


@pytest.mark.parametrize(
    ("metadata", "code", "details"),
    [
        (
            {METADATA_CLUSTER: "other", METADATA_FROM: "2", METADATA_TO: "1"},
            "FAILED_PRECONDITION",
            "not a stream for this cluster",
        ),
        (
            {METADATA_CLUSTER: "test", METADATA_FROM: "2", METADATA_TO: "5"},
            "FAILED_PRECONDITION",
            "not a stream for this node",
        ),
        (
            {
                METADATA_CLUSTER: "test",
                METADATA_FROM: "2",
                METADATA_TO: "1",
                PROOF_METADATA_KEY: make_proof(b"s" * 32, 3, STREAM_METHOD),
            },
            "PERMISSION_DENIED",
            "names another node",
        ),
        ({METADATA_CLUSTER: "test", METADATA_FROM: "9", METADATA_TO: "1"}, "PERMISSION_DENIED", "not a peer"),
        (
            {METADATA_CLUSTER: "test", METADATA_FROM: "x", METADATA_TO: "1"},
            "INVALID_ARGUMENT",
            "positive integers",
        ),
        ({METADATA_CLUSTER: "test", METADATA_TO: "1"}, "INVALID_ARGUMENT", "needs metadata"),
    ],
)
async def test_streams_are_refused_with_a_clear_status(
    lone_node: TestNode, metadata: dict[str, str], code: str, details: str
) -> None:
    async with grpc.aio.insecure_channel(lone_node.address) as channel:
        call = transport_pb2_grpc.RaftTransportServiceStub(channel).Stream(metadata=tuple(metadata.items()))
        with pytest.raises(grpc.aio.AioRpcError) as error:
            async with asyncio.timeout(3):
                await call.read()
    assert error.value.code().name == code
    assert details in (error.value.details() or "")
    # A refusal tells nothing about the node: not its cluster id, not its node id.
    assert "test" not in (error.value.details() or "") and "1" not in (error.value.details() or "")
    assert lone_node.t.stats().rejected_streams == 1


async def test_undecodable_messages_are_counted_and_the_stream_goes_on(lone_node: TestNode) -> None:

    async with grpc.aio.insecure_channel(lone_node.address) as channel:
        call = raw_stream(channel)(metadata=AS_NODE_2)
        good = encode_group_message(4, heartbeat(1, 2, 10))
        bad = encode_group_message(4, heartbeat(1, 2, 11)).replace(b"\x08\x07", b"\x08\x63", 1)  # type 99
        await call.write(encode_batch(1, [good, bad, good]))
        assert (await call.read()).seq == 1
        await call.write(b"\x0a\xff\xff\xff\xff\x0f")  # not a RaftBatch at all: dropped, not acked
        await call.write(encode_batch(3, [good]))
        assert (await call.read()).seq == 3
        call.cancel()
    assert [m.message.commit for m in lone_node.received()] == [10, 10, 10]
    assert [len(batch) for _, batch in lone_node.deliveries] == [2, 1]
    assert lone_node.t.stats().decode_errors == 2
    assert lone_node.t.peer_alive(2)


async def test_a_newer_stream_from_the_same_node_supersedes_the_older(lone_node: TestNode) -> None:

    async with grpc.aio.insecure_channel(lone_node.address) as channel:
        open_stream = raw_stream(channel)
        old = open_stream(metadata=AS_NODE_2)
        await old.write(encode_batch(1, [encode_group_message(1, heartbeat(1, 2, 1))]))
        assert (await old.read()).seq == 1
        new = open_stream(metadata=AS_NODE_2)
        await new.write(encode_batch(1, [encode_group_message(1, heartbeat(1, 2, 2))]))
        assert (await new.read()).seq == 1
        # The old stream's next batch is not delivered; the stream ends.
        await old.write(encode_batch(2, [encode_group_message(1, heartbeat(1, 2, 3))]))
        with pytest.raises(grpc.aio.AioRpcError) as error:
            async with asyncio.timeout(3):
                await old.read()
        assert error.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "superseded" in (error.value.details() or "")
        await new.write(encode_batch(2, [encode_group_message(1, heartbeat(1, 2, 4))]))
        assert (await new.read()).seq == 2
        new.cancel()
    assert [m.message.commit for m in lone_node.received()] == [1, 2, 4]


async def test_a_stream_without_acks_is_abandoned_and_redialed() -> None:
    """A peer that accepts the stream but never answers (a half-open
    connection looks the same) is given up after peer_timeout."""
    opened = 0

    async def black_hole(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        nonlocal opened
        opened += 1
        async for _ in requests:
            pass

    server = grpc.aio.server()
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "raftlog.internal.v1.RaftTransportService",
                {"Stream": grpc.stream_stream_rpc_method_handler(black_hole)},
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    a = TestNode(1)
    a.attach({2: f"127.0.0.1:{port}"})
    await a.start()
    try:
        await wait_for(lambda: opened >= 1, what="the first stream")
        assert a.t.stats().peers[2].stream_failures == 0
        await wait_for(lambda: opened >= 3, timeout=3 * FAST.peer_timeout + 1, what="two redials")
        peer = a.t.stats().peers[2]
        assert peer.stream_failures >= 2
        assert not peer.connected and not peer.alive
    finally:
        await a.stop()
        await server.stop(None)


async def test_a_link_closes_its_stream_and_channel_before_returning() -> None:
    node = TestNode(2)
    node.attach({3: "127.0.0.1:1"})
    await node.start()
    link = PeerLink(3, 2, node.address, FAST, PeerCounters(), heard=lambda: None)
    try:
        link.start()
        await wait_for(lambda: link.connected, what="the link connected")
        assert tasks_of(3) == ["raft-acks-3->2", "raft-link-3->2", "raft-stream-3->2", "raft-writer-3->2"]
        await link.close()
        assert tasks_of(3) == []
        await link.close()  # idempotent
    finally:
        await node.stop()
