"""The control lane of cluster/transport/peer_link.py (issue 20).

Node 1's ``RaftTransport`` sends to a hand-written receiver (a gRPC server
playing node 2) that records every batch and acknowledges only when told
to, so a test decides when the bulk in-flight window is full.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import grpc
import pytest

from cluster.transport.raft_transport import BULK_TYPES, RaftTransport, TransportConfig, server_options
from cluster.transport.raft_wire import InboundMessage, decode_batch
from raft.types import Entry, Message, MessageType
from raftlog.internal.v1 import transport_pb2

MiB = 1 << 20
ENTRY = bytes(MiB - 256)  # one append of about 1 MiB (Raft's max_size_per_msg)

CONFIG = TransportConfig(
    cluster_id="test",
    ping_interval=1.0,
    peer_timeout=30.0,  # an unacknowledged window must not end the stream during a test
    max_batch_bytes=2 * MiB,
    max_inflight_bytes=2 * MiB,
    max_queued_bytes=12 * MiB,
)


def heartbeat(commit: int) -> Message:
    return Message(MessageType.HEARTBEAT, to=2, sender=1, term=1, commit=commit)


def append(index: int, data: bytes = ENTRY) -> Message:
    return Message(
        MessageType.APPEND, to=2, sender=1, term=1, index=index - 1, entries=(Entry(1, index, data=data),)
    )


async def wait_for(condition: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


@dataclass
class Receiver:
    """Records each batch's messages; acks the hello at once and the rest
    only while ``acking`` is set."""

    batches: list[list[InboundMessage]] = field(default_factory=list)
    acking: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self, requests: AsyncIterator[bytes], context: grpc.aio.ServicerContext) -> None:
        await anext(requests)
        await context.write(transport_pb2.TransportAck(seq=1))
        async for data in requests:
            batch = decode_batch(data)
            if batch.messages:
                self.batches.append(batch.messages)
            if self.acking.is_set():
                await context.write(transport_pb2.TransportAck(seq=batch.seq))

    def received(self) -> list[InboundMessage]:
        return [m for batch in self.batches for m in batch]


@pytest.fixture
async def link() -> AsyncIterator[tuple[RaftTransport, Receiver]]:
    receiver = Receiver()
    server = grpc.aio.server(options=server_options(CONFIG))
    handler = grpc.stream_stream_rpc_method_handler(
        receiver.serve, response_serializer=transport_pb2.TransportAck.SerializeToString
    )
    server.add_generic_rpc_handlers(
        (
            grpc.method_handlers_generic_handler(
                "raftlog.internal.v1.RaftTransportService", {"Stream": handler}
            ),
        )
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    transport = RaftTransport(1, {2: f"127.0.0.1:{port}"}, lambda _n, _b: None, config=CONFIG)
    await transport.start()
    await wait_for(lambda: transport.stats().peers[2].connected, "connected")
    try:
        yield transport, receiver
    finally:
        await transport.close()
        await server.stop(None)


def test_only_appends_and_snapshots_are_bulk() -> None:
    assert {MessageType.APPEND, MessageType.SNAPSHOT} == BULK_TYPES


async def test_a_heartbeat_queued_after_10_mib_of_appends_leaves_in_the_next_batch(
    link: tuple[RaftTransport, Receiver],
) -> None:
    transport, receiver = link
    for index in range(1, 11):
        transport.send(2, 1, append(index))
    transport.send(2, 1, heartbeat(7))
    await wait_for(lambda: bool(receiver.batches), "a batch")
    first = receiver.batches[0]
    assert first[0].message.type == MessageType.HEARTBEAT and first[0].message.commit == 7


async def test_control_is_not_held_by_a_full_bulk_window(link: tuple[RaftTransport, Receiver]) -> None:
    transport, receiver = link
    for index in range(1, 11):
        transport.send(2, 1, append(index))
    # Nothing is acknowledged: the writer stops once the bulk window is full.
    await wait_for(
        lambda: transport.stats().peers[2].inflight_bytes >= CONFIG.max_inflight_bytes, "full window"
    )
    await asyncio.sleep(0.05)
    appends_sent = len(receiver.received())
    assert appends_sent < 10
    transport.send(2, 1, heartbeat(1))
    await wait_for(lambda: receiver.received()[-1].message.type == MessageType.HEARTBEAT, "the heartbeat")
    # ... and it went alone: the bulk behind the window stayed queued.
    assert [m.message.type for m in receiver.batches[-1]] == [MessageType.HEARTBEAT]
    assert transport.stats().peers[2].inflight_bytes < CONFIG.max_inflight_bytes + CONFIG.max_batch_bytes
    # Acknowledged, the rest of the bulk follows, in order.
    receiver.acking.set()
    transport.send(2, 1, heartbeat(2))  # a batch whose ack reopens the window
    await wait_for(
        lambda: sum(m.message.type == MessageType.APPEND for m in receiver.received()) == 10, "10 appends"
    )
    appends = [
        m.message.entries[0].index for m in receiver.received() if m.message.type == MessageType.APPEND
    ]
    assert appends == list(range(1, 11))


async def test_a_full_bulk_queue_never_drops_control(link: tuple[RaftTransport, Receiver]) -> None:
    transport, receiver = link
    for index in range(1, 31):  # 30 MiB: the window and the 12 MiB queue overflow
        transport.send(2, 1, append(index))
    dropped = transport.stats().dropped_messages
    assert dropped > 0
    for commit in range(100):
        transport.send(2, 1, heartbeat(commit))
    assert transport.stats().dropped_messages == dropped
    await wait_for(
        lambda: sum(m.message.type == MessageType.HEARTBEAT for m in receiver.received()) == 100,
        "100 heartbeats",
    )
    assert [m.message.commit for m in receiver.received() if m.message.type == MessageType.HEARTBEAT] == list(
        range(100)
    )


async def test_each_lane_keeps_its_order(link: tuple[RaftTransport, Receiver]) -> None:
    transport, receiver = link
    receiver.acking.set()
    small = bytes(10 * 1024)  # 2 MB in all: below the bulk queue limit
    for i in range(1, 201):  # interleaved, over several event-loop iterations and batches
        transport.send(2, i % 5, append(i, small))
        transport.send(2, i % 5, heartbeat(i))
        if i % 20 == 0:
            await asyncio.sleep(0)
    await wait_for(lambda: len(receiver.received()) == 400, "400 messages")
    got = receiver.received()
    assert [m.message.entries[0].index for m in got if m.message.type == MessageType.APPEND] == list(
        range(1, 201)
    )
    assert [m.message.commit for m in got if m.message.type == MessageType.HEARTBEAT] == list(range(1, 201))
    assert all(m.group == m.message.commit % 5 for m in got if m.message.type == MessageType.HEARTBEAT)


async def test_control_overflow_drops_the_oldest() -> None:
    config = TransportConfig(cluster_id="test", max_control_queued_messages=10)
    transport = RaftTransport(1, {2: "127.0.0.1:1"}, lambda _n, _b: None, config=config)  # never started
    for commit in range(25):
        transport.send(2, 1, heartbeat(commit))
    stats = transport.stats()
    assert (stats.queued_messages, stats.dropped_messages) == (10, 15)
    link = transport._peers[2].link
    kept = [body for body in link._control]
    assert len(kept) == 10 and kept[0] != kept[-1]
