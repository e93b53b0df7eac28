"""Backpressure in cluster/transport/peer_link.py against real gRPC servers: a
peer that stops reading causes counted drops of the newest messages, never
unbounded growth or a blocking send(); a message to an idle peer leaves at
once rather than at the next ping.

Every test runs grpc.aio servers on 127.0.0.1 (port 0, then the bound port)
inside the test's event loop, with short ping and timeout settings so that
down/up transitions take a fraction of a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc

from cluster.transport.raft_transport import TransportConfig, server_options
from cluster.transport.raft_wire import decode_batch
from raft.types import Entry, Message, MessageType
from raftlog.internal.v1 import transport_pb2
from tests.cluster.transport_nodes import TestNode, cluster, connected, heartbeat, wait_for


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
