"""cluster/transport/raft_transport.py and cluster/transport/peer_link.py against real gRPC servers.

Every test runs grpc.aio servers on 127.0.0.1 (port 0, then the bound port)
inside the test's event loop, with short ping and timeout settings so that
down/up transitions take a fraction of a second.
"""

from __future__ import annotations

import asyncio
import random
import socket
import time
from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from cluster.transport.peer_link import (
    METADATA_CLUSTER,
    METADATA_FROM,
    METADATA_TO,
    STREAM_METHOD,
    PeerLink,
    backoff_delay,
)
from cluster.transport.raft_transport import (
    InboundMessage,
    RaftTransport,
    TransportConfig,
    server_options,
)
from cluster.transport.raft_wire import decode_batch, encode_batch, encode_group_message
from cluster.transport.transport_config import PeerCounters
from raft.types import Entry, Message, MessageType
from raftlog.internal.node_proof import PROOF_METADATA_KEY, make_proof
from raftlog.internal.v1 import transport_pb2, transport_pb2_grpc

FAST = TransportConfig(
    cluster_id="test",
    ping_interval=0.05,
    peer_timeout=0.3,
    reconnect_backoff_initial=0.02,
    reconnect_backoff_max=0.2,
)


def heartbeat(to: int, sender: int, commit: int) -> Message:
    return Message(MessageType.HEARTBEAT, to=to, sender=sender, term=1, commit=commit)


async def wait_for(condition: Callable[[], bool], timeout: float = 3.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.005)


class TestNode:
    """One node: a gRPC server on loopback and a transport served by it."""

    __test__ = False  # not a test class

    def __init__(self, node_id: int, config: TransportConfig = FAST, port: int = 0) -> None:
        self.node_id = node_id
        self.config = config
        self.server = grpc.aio.server(options=server_options(config))
        self.port = self.server.add_insecure_port(f"127.0.0.1:{port}")
        assert self.port, f"cannot bind 127.0.0.1:{port}"
        self.address = f"127.0.0.1:{self.port}"
        self.deliveries: list[tuple[int, list[InboundMessage]]] = []
        self.states: list[tuple[int, bool]] = []
        self.transport: RaftTransport | None = None
        self._stopped = False

    def attach(self, peers: dict[int, str]) -> RaftTransport:
        self.transport = RaftTransport(
            self.node_id,
            peers,
            lambda from_node, batch: self.deliveries.append((from_node, list(batch))),
            on_peer_state=lambda node, alive: self.states.append((node, alive)),
            config=self.config,
        )
        self.transport.add_to_server(self.server)
        return self.transport

    @property
    def t(self) -> RaftTransport:
        assert self.transport is not None
        return self.transport

    def received(self) -> list[InboundMessage]:
        return [m for _, batch in self.deliveries for m in batch]

    async def start(self) -> None:
        await self.server.start()
        await self.t.start()

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.transport is not None:
            await self.transport.close()
        await self.server.stop(None)


async def cluster(*ids: int, config: TransportConfig = FAST) -> dict[int, TestNode]:
    nodes = {i: TestNode(i, config) for i in ids}
    for node in nodes.values():
        node.attach({i: n.address for i, n in nodes.items() if i != node.node_id})
    for node in nodes.values():
        await node.start()
    return nodes


@pytest.fixture
async def pair() -> AsyncIterator[dict[int, TestNode]]:
    nodes = await cluster(1, 2)
    yield nodes
    for node in nodes.values():
        await node.stop()


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


async def connected(a: TestNode, b: TestNode) -> None:
    await wait_for(lambda: a.t.stats().peers[b.node_id].connected, what=f"{a.node_id}->{b.node_id} connected")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# --- ordering, coalescing, payloads ---------------------------------------------------------------


async def test_messages_of_many_groups_arrive_in_order_in_one_batch(pair: dict[int, TestNode]) -> None:
    a, b = pair[1], pair[2]
    await connected(a, b)
    sent = [(group, i) for i in range(10) for group in range(20)]  # 200 messages, groups interleaved
    for group, i in sent:
        a.t.send(2, group, heartbeat(2, 1, i), quiesce=(i == 9))
    await wait_for(lambda: len(b.received()) == len(sent), what="200 messages")
    assert [(m.group, m.message.commit) for m in b.received()] == sent
    assert [m.quiesce for m in b.received()] == [i == 9 for _, i in sent]
    assert all(from_node == 1 for from_node, _ in b.deliveries)
    # Queued in one event-loop iteration: one batch, one deliver() call.
    assert len(b.deliveries) == 1
    stats = a.t.stats()
    assert (stats.batches_sent, stats.messages_sent) == (1, 200)
    assert b.t.stats().peers[1].batches_received == 1


async def test_a_batch_holds_at_most_max_batch_messages(pair: dict[int, TestNode]) -> None:
    a, b = pair[1], pair[2]
    await connected(a, b)
    for i in range(2500):
        a.t.send(2, i % 7, heartbeat(2, 1, i))
    await wait_for(lambda: len(b.received()) == 2500, what="2500 messages")
    assert [len(batch) for _, batch in b.deliveries] == [1024, 1024, 452]
    assert [m.message.commit for m in b.received()] == list(range(2500))


async def test_messages_queued_while_a_write_is_in_progress_share_the_next_batch(
    pair: dict[int, TestNode],
) -> None:
    a, b = pair[1], pair[2]
    await connected(a, b)
    for round_ in range(5):
        for group in range(50):
            a.t.send(2, group, heartbeat(2, 1, round_))
        await asyncio.sleep(0)  # the writer may take this round before the next
    await wait_for(lambda: len(b.received()) == 250, what="250 messages")
    assert [m.message.commit for m in b.received()] == [r for r in range(5) for _ in range(50)]
    assert a.t.stats().batches_sent <= 5


async def test_a_large_append_arrives_intact(pair: dict[int, TestNode]) -> None:
    a, b = pair[1], pair[2]
    await connected(a, b)
    rng = random.Random(7)
    appends = [
        Message(
            MessageType.APPEND,
            to=2,
            sender=1,
            term=2,
            index=10 + 8 * k,
            log_term=2,
            commit=9,
            entries=tuple(Entry(2, 11 + 8 * k + i, data=rng.randbytes(64 * 1024)) for i in range(8)),
        )
        for k in range(3)
    ]  # 3 messages of 512 KiB
    for message in appends:
        a.t.send(2, 42, message)
    await wait_for(lambda: len(b.received()) == 3, what="3 appends")
    assert [m.message for m in b.received()] == appends
    assert b.t.stats().bytes_received >= 3 * 8 * 64 * 1024


async def test_an_oversized_message_is_dropped_not_sent() -> None:
    config = TransportConfig(
        cluster_id="test",
        ping_interval=0.05,
        peer_timeout=0.3,
        max_message_bytes=100_000,
        max_batch_bytes=50_000,
    )
    nodes = await cluster(1, 2, config=config)
    try:
        a, b = nodes[1], nodes[2]
        await connected(a, b)
        too_big = Message(MessageType.APPEND, to=2, sender=1, entries=(Entry(1, 1, data=bytes(100_000)),))
        a.t.send(2, 1, too_big)
        a.t.send(2, 1, heartbeat(2, 1, 5))
        await wait_for(lambda: len(b.received()) == 1, what="the heartbeat")
        assert b.received()[0].message.commit == 5
        assert a.t.stats().dropped_messages == 1
    finally:
        for node in nodes.values():
            await node.stop()


def test_send_to_self_raises_and_to_a_stranger_is_counted() -> None:
    transport = RaftTransport(1, {2: "127.0.0.1:1"}, lambda _n, _b: None, config=FAST)
    with pytest.raises(ValueError, match="itself"):
        transport.send(1, 0, heartbeat(1, 1, 0))
    transport.send(9, 0, heartbeat(9, 1, 0))
    assert transport.stats().dropped_messages == 1


# --- liveness and reconnects ---------------------------------------------------------------------


async def test_idle_peers_stay_up_on_pings(pair: dict[int, TestNode]) -> None:
    a, b = pair[1], pair[2]
    await wait_for(lambda: a.t.peer_alive(2) and b.t.peer_alive(1), what="both up")
    await asyncio.sleep(4 * FAST.peer_timeout)
    assert a.states == [(2, True)]
    assert b.states == [(1, True)]
    assert a.t.stats().pings_sent >= 10
    assert a.t.stats().batches_sent == 0


async def test_peer_down_and_up_is_reported_and_traffic_resumes(pair: dict[int, TestNode]) -> None:
    a, b = pair[1], pair[2]
    await connected(a, b)
    assert a.t.peer_alive(2)
    port = b.port
    await wait_for(lambda: a.t.stats().peers[2].inbound_open, what="node 2's stream to node 1")
    await b.stop()
    await wait_for(lambda: not a.t.stats().peers[2].inbound_open, what="node 2's stream gone")
    await wait_for(lambda: not a.t.peer_alive(2), what="node 2 reported down")
    assert a.states == [(2, True), (2, False)]
    a.t.send(2, 3, heartbeat(2, 1, 77))  # queued while node 2 is down
    assert a.t.stats().peers[2].queued_messages == 1

    restarted = TestNode(2, port=port)
    restarted.attach({1: a.address})
    pair[2] = restarted  # the fixture stops it
    await restarted.start()
    await wait_for(lambda: a.t.peer_alive(2), what="node 2 reported up again")
    assert a.states == [(2, True), (2, False), (2, True)]
    await wait_for(lambda: a.t.stats().peers[2].inbound_open, what="the new stream from node 2")
    await wait_for(lambda: len(restarted.received()) == 1, what="the message queued while down")
    a.t.send(2, 3, heartbeat(2, 1, 78))
    await wait_for(lambda: len(restarted.received()) == 2, what="a message after the reconnect")
    assert [m.message.commit for m in restarted.received()] == [77, 78]
    stats = a.t.stats().peers[2]
    assert stats.reconnects == 1
    assert stats.stream_failures >= 1


async def test_a_broken_stream_reports_the_peer_down_before_the_timeout() -> None:
    # A peer timeout far longer than the test: only the broken stream can
    # report node 2 down in time (kill -9 resets its connections at once).
    slow_timeout = TransportConfig(
        cluster_id="test", ping_interval=0.05, peer_timeout=30.0, reconnect_backoff_initial=0.02
    )
    nodes = await cluster(1, 2, config=slow_timeout)
    a, b = nodes[1], nodes[2]
    try:
        await connected(a, b)
        await wait_for(lambda: a.t.peer_alive(2), what="node 2 up")
        await b.server.stop(None)  # connections reset; node 2's transport never says goodbye
        await wait_for(lambda: not a.t.peer_alive(2), timeout=3.0, what="node 2 reported down")
        assert a.states[-1] == (2, False)
    finally:
        for node in nodes.values():
            await node.stop()


async def test_a_down_peer_queue_is_bounded_and_keeps_the_newest() -> None:
    config = TransportConfig(
        cluster_id="test",
        ping_interval=0.05,
        peer_timeout=0.3,
        reconnect_backoff_initial=0.02,
        reconnect_backoff_max=0.1,
        max_queued_messages_while_down=10,
    )
    port = free_port()
    a = TestNode(1, config)
    a.attach({2: f"127.0.0.1:{port}"})
    await a.start()
    b: TestNode | None = None
    try:
        for i in range(25):  # appends: the bulk lane's while-down limits
            a.t.send(2, 1, Message(MessageType.APPEND, to=2, sender=1, term=1, commit=i))
        stats = a.t.stats()
        assert (stats.queued_messages, stats.dropped_messages) == (10, 15)
        b = TestNode(2, config, port=port)
        b.attach({1: a.address})
        await b.start()
        await wait_for(lambda: len(b.received()) == 10, what="the 10 newest messages")
        assert [m.message.commit for m in b.received()] == list(range(15, 25))
    finally:
        await a.stop()
        if b is not None:
            await b.stop()


def test_backoff_starts_fast_grows_and_is_capped_with_jitter() -> None:
    rng = random.Random(1)
    config = TransportConfig()
    first = [backoff_delay(0, config, rng) for _ in range(200)]
    assert min(first) >= 0.025 and max(first) <= 0.05
    assert max(first) - min(first) > 0.01  # jittered
    assert all(0.05 <= backoff_delay(1, config, rng) <= 0.1 for _ in range(50))
    late = [backoff_delay(n, config, rng) for n in range(5, 100)]
    assert max(late) <= 1.0 and min(late) >= 0.4


# --- backpressure ----------------------------------------------------------------------------------


async def test_a_peer_that_stops_reading_causes_counted_drops_not_growth() -> None:
    config = TransportConfig(
        cluster_id="test",
        ping_interval=1.0,
        peer_timeout=10.0,  # the stalled stream must not be reset during the test
        max_batch_bytes=128 * 1024,
        max_inflight_bytes=256 * 1024,
        max_queued_bytes=1024 * 1024,
        max_queued_bytes_while_down=256 * 1024,
    )
    release = asyncio.Event()
    indexes: list[int] = []

    async def stall(requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        """Acks the hello (so the sender is connected), then reads nothing
        until released; then reads and acks like a real receiver."""
        await anext(requests)
        await context.write(transport_pb2.TransportAck(seq=1))
        await release.wait()
        async for data in requests:
            batch = decode_batch(data)
            indexes.extend(e.index for m in batch.messages for e in m.message.entries)
            await context.write(transport_pb2.TransportAck(seq=batch.seq))

    server = grpc.aio.server(options=server_options(config))
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "raftlog.internal.v1.RaftTransportService",
                {
                    "Stream": grpc.stream_stream_rpc_method_handler(
                        stall, response_serializer=transport_pb2.TransportAck.SerializeToString
                    )
                },
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    a = TestNode(1, config)
    a.attach({2: f"127.0.0.1:{port}"})
    await a.start()
    entry = bytes(64 * 1024)

    def burst(first: int, count: int) -> None:
        started = time.monotonic()
        for index in range(first, first + count):
            a.t.send(
                2, 1, Message(MessageType.APPEND, to=2, sender=1, entries=(Entry(1, index, data=entry),))
            )
        assert time.monotonic() - started < 0.5  # send() never blocks

    try:
        await wait_for(lambda: a.t.stats().peers[2].connected, what="connected to the stalling server")
        # One synchronous burst: the queue takes what fits, the rest is dropped.
        burst(1, 200)
        peer = a.t.stats().peers[2]
        fits = peer.queued_messages
        assert 4 < fits < 200
        assert peer.queued_bytes <= config.max_queued_bytes < peer.queued_bytes + len(entry)
        assert peer.dropped_messages == 200 - fits
        # The writer fills the in-flight window, then stops: nothing is acked.
        await wait_for(
            lambda: a.t.stats().peers[2].inflight_bytes >= config.max_inflight_bytes, what="full window"
        )
        await asyncio.sleep(0.05)
        peer = a.t.stats().peers[2]
        window = peer.messages_sent
        assert 1 <= window < fits
        assert peer.inflight_bytes <= config.max_inflight_bytes + config.max_batch_bytes
        assert peer.queued_messages == fits - window
        # A second burst refills the queue to its limit; the rest is dropped.
        burst(1001, 100)
        peer = a.t.stats().peers[2]
        assert peer.queued_messages == fits
        assert peer.dropped_messages == 200 - fits + 100 - window
        assert peer.messages_sent == window
        # Released, the peer gets the head of each burst: the NEW messages were dropped.
        release.set()
        expected = list(range(1, fits + 1)) + list(range(1001, 1001 + window))
        await wait_for(
            lambda: len(indexes) == len(expected), what=f"{len(expected)} appends after the release"
        )
        assert indexes == expected
    finally:
        await a.stop()
        await server.stop(None)


async def test_a_message_to_an_idle_peer_leaves_at_once() -> None:
    config = TransportConfig(cluster_id="test", ping_interval=1.0, peer_timeout=3.0)
    nodes = await cluster(1, 2, config=config)
    try:
        a, b = nodes[1], nodes[2]
        await connected(a, b)
        await asyncio.sleep(0.05)  # the writer is idle, waiting for the next ping time
        started = time.monotonic()
        a.t.send(2, 1, heartbeat(2, 1, 1))
        await wait_for(lambda: len(b.received()) == 1, what="the message")
        assert time.monotonic() - started < 0.2  # not held until the next ping
    finally:
        for node in nodes.values():
            await node.stop()


# --- admission ---------------------------------------------------------------------------------


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


# --- membership and shutdown -------------------------------------------------------------------------


async def test_removing_a_peer_reports_it_down_and_drops_its_traffic(pair: dict[int, TestNode]) -> None:
    a, b = pair[1], pair[2]
    await wait_for(lambda: a.t.peer_alive(2) and b.t.peer_alive(1), what="both up")
    a.t.set_peers({})
    assert a.states == [(2, True), (2, False)]
    assert not a.t.peer_alive(2)
    a.t.send(2, 1, heartbeat(2, 1, 1))
    assert a.t.stats().dropped_messages == 1
    # Node 2's stream into node 1 is ended and its new ones are refused.
    await wait_for(lambda: a.t.stats().rejected_streams >= 1, what="node 2 refused")
    a.t.set_peers({2: b.address})
    await wait_for(lambda: a.t.peer_alive(2), what="node 2 back")
    a.t.send(2, 1, heartbeat(2, 1, 2))
    await wait_for(lambda: len(b.received()) == 1, what="traffic after re-adding")


def tasks_of(node_id: int) -> list[str]:
    """Names of the live tasks node ``node_id``'s transport created."""
    marks = (f"-{node_id}->", f"-{node_id}<-", f"raft-monitor-{node_id}")
    return sorted(t.get_name() for t in asyncio.all_tasks() if any(m in t.get_name() for m in marks))


async def test_close_leaves_no_tasks_behind() -> None:
    nodes = await cluster(1, 2, 3)
    unreachable = free_port()
    nodes[1].t.set_peers({2: nodes[2].address, 3: nodes[3].address, 4: f"127.0.0.1:{unreachable}"})
    await wait_for(
        lambda: all(n.t.peer_alive(p) for n in nodes.values() for p in n.t.stats().peers if p != 4)
    )
    for group in range(10):
        for to in (2, 3, 4):
            nodes[1].t.send(to, group, heartbeat(to, 1, group))
    await wait_for(lambda: len(nodes[2].received()) == 10)
    names = tasks_of(1)
    for kind in ("link", "stream", "writer", "acks"):
        assert f"raft-{kind}-1->2" in names and f"raft-{kind}-1->3" in names
    assert {"raft-link-1->4", "raft-monitor-1", "raft-ack-writer-1<-2", "raft-ack-writer-1<-3"} <= set(names)
    started = time.monotonic()
    await nodes[1].t.close()
    assert time.monotonic() - started < 1.0
    assert tasks_of(1) == []
    for node in (nodes[2], nodes[3]):
        await node.t.close()
    assert [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("raft-")] == []
    delivered = len(nodes[2].received())
    nodes[1].t.send(2, 0, heartbeat(2, 1, 99))  # after close: dropped, never delivered
    for node in nodes.values():
        await node.stop()
    await asyncio.sleep(0.05)
    assert len(nodes[2].received()) == delivered
    assert asyncio.all_tasks() == {asyncio.current_task()}


def test_config_validation_names_the_setting() -> None:
    with pytest.raises(ValueError, match="peer_timeout"):
        TransportConfig(ping_interval=1.0, peer_timeout=1.5).validate()
    with pytest.raises(ValueError, match="cluster_id"):
        TransportConfig(cluster_id="").validate()
    with pytest.raises(ValueError, match="max_batch_bytes"):
        TransportConfig(max_batch_bytes=2, max_message_bytes=1).validate()
    TransportConfig().validate()
