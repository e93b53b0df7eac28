"""The internal door (cluster/internal/internal_door.py) in front of a real
Raft transport on a grpc.aio server: nodes with the cluster secret talk,
anyone else is refused before the transport sees the stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from cluster.internal.internal_door import REFUSAL, InternalDoor, proof_rule
from cluster.internal.node_auth import NodeCredentials
from cluster.transport.peer_link import METADATA_CLUSTER, METADATA_FROM, METADATA_TO, STREAM_METHOD
from cluster.transport.raft_transport import InboundMessage, RaftTransport, TransportConfig, server_options
from cluster.transport.raft_wire import encode_batch, encode_group_message
from raft.types import Message, MessageType
from raftlog.internal.node_proof import make_proof
from raftlog.internal.v1 import transport_pb2

SECRET = b"k" * 32
CONFIG = TransportConfig(
    cluster_id="door",
    ping_interval=0.05,
    peer_timeout=0.3,
    reconnect_backoff_initial=0.02,
    reconnect_backoff_max=0.2,
)


async def wait_for(condition: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


class DoorNode:
    """A node's server with the internal door, and its transport."""

    __test__ = False

    def __init__(self, node_id: int, secret: bytes) -> None:
        self.node_id = node_id
        self.credentials = NodeCredentials(secret, node_id)
        self.door = InternalDoor(proof_rule(self.credentials.checker()))
        self.server = grpc.aio.server(options=server_options(CONFIG), interceptors=[self.door])
        self.address = f"127.0.0.1:{self.server.add_insecure_port('127.0.0.1:0')}"
        self.deliveries: list[tuple[int, list[InboundMessage]]] = []
        self.transport: RaftTransport | None = None
        health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), self.server)

    @property
    def t(self) -> RaftTransport:
        assert self.transport is not None
        return self.transport

    def attach(self, peers: dict[int, str]) -> None:
        self.transport = RaftTransport(
            self.node_id,
            peers,
            lambda sender, batch: self.deliveries.append((sender, list(batch))),
            config=CONFIG,
            credentials=self.credentials,
        )
        self.t.add_to_server(self.server)

    async def start(self) -> None:
        await self.server.start()
        await self.t.start()

    async def stop(self) -> None:
        await self.t.close()
        await self.server.stop(None)


def heartbeat(to: int, sender: int) -> Message:
    return Message(MessageType.HEARTBEAT, to=to, sender=sender, term=1, commit=1)


@pytest.fixture
async def node1() -> AsyncIterator[DoorNode]:
    """Node 1 of cluster "door", with a peer 2 that never answers."""
    node = DoorNode(1, SECRET)
    node.attach({2: "127.0.0.1:1"})
    await node.start()
    yield node
    await node.stop()


async def test_nodes_with_the_secret_talk_and_one_without_is_refused_at_the_door() -> None:
    one, two, rogue = DoorNode(1, SECRET), DoorNode(2, SECRET), DoorNode(3, b"r" * 32)
    one.attach({2: two.address, 3: rogue.address})
    two.attach({1: one.address})
    rogue.attach({1: one.address})  # the right cluster id and a peer's id, not the secret
    for node in (one, two, rogue):
        await node.start()
    try:
        two.t.send(1, 7, heartbeat(1, 2))
        rogue.t.send(1, 7, heartbeat(1, 3))
        await wait_for(lambda: bool(one.deliveries) and one.door.refused_calls >= 1)
        await asyncio.sleep(0.2)
        assert {sender for sender, _ in one.deliveries} == {2}
        assert not one.t.peer_alive(3)
        assert rogue.t.stats().peers[1].queued_messages == 1  # its refused stream consumed nothing
        # Refused by the door, before the transport saw the stream.
        assert one.t.stats().rejected_streams == 0
    finally:
        for node in (one, two, rogue):
            await node.stop()


@pytest.mark.parametrize(
    "proof",
    [
        None,
        "garbage",
        make_proof(b"x" * 32, 2, STREAM_METHOD),  # another secret
        make_proof(SECRET, 2, "/raftlog.internal.v1.NodeAdmin/Stats"),  # another method
        make_proof(SECRET, 2, STREAM_METHOD, unix_ms=int(time.time() * 1000) - 3_600_000),  # stale
    ],
)
async def test_a_forged_stream_delivers_nothing(node1: DoorNode, proof: str | None) -> None:
    metadata = [(METADATA_CLUSTER, "door"), (METADATA_FROM, "2"), (METADATA_TO, "1")]
    if proof is not None:
        metadata.append(("raftlog-node-proof", proof))
    async with grpc.aio.insecure_channel(node1.address) as channel:
        call = channel.stream_stream(STREAM_METHOD, None, transport_pb2.TransportAck.FromString)(
            metadata=tuple(metadata)
        )
        with pytest.raises(grpc.aio.AioRpcError) as error:
            # Refused at once, before anything is read; without the door the
            # batch would be delivered and acknowledged.
            for _ in range(10):
                if call.done():
                    break
                await asyncio.sleep(0.05)
            async with asyncio.timeout(3):
                if not call.done():
                    await call.write(encode_batch(1, [encode_group_message(5, heartbeat(1, 2))]))
                await call.read()
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.value.details() == REFUSAL
    await asyncio.sleep(0.1)
    assert node1.deliveries == [] and not node1.t.peer_alive(2)
    assert node1.door.refused_calls == 1


async def test_a_replayed_stream_proof_is_refused(node1: DoorNode) -> None:
    metadata = (
        (METADATA_CLUSTER, "door"),
        (METADATA_FROM, "2"),
        (METADATA_TO, "1"),
        ("raftlog-node-proof", make_proof(SECRET, 2, STREAM_METHOD)),
    )
    async with grpc.aio.insecure_channel(node1.address) as channel:
        open_stream = channel.stream_stream(STREAM_METHOD, None, transport_pb2.TransportAck.FromString)
        first = open_stream(metadata=metadata)
        await first.write(encode_batch(1, [encode_group_message(5, heartbeat(1, 2))]))
        assert (await first.read()).seq == 1
        first.cancel()
        again = open_stream(metadata=metadata)
        with pytest.raises(grpc.aio.AioRpcError) as error:
            async with asyncio.timeout(3):
                await again.read()
    assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert len(node1.deliveries) == 1


async def test_other_services_pass_and_unknown_internal_methods_are_refused_alike(node1: DoorNode) -> None:
    async with grpc.aio.insecure_channel(node1.address) as channel:
        answer = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING
        unknown = "/raftlog.internal.v1.NodeAdmin/NoSuchMethod"
        call = channel.unary_unary(unknown, None, None)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await call(b"", timeout=3)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as missing:
            await call(b"", timeout=3, metadata=node1.credentials.metadata(unknown))
        assert missing.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_a_call_with_two_proofs_is_refused() -> None:
    # The door checks one proof, the transport reads the node a proof names
    # (inbound_stream.admit): with two, a valid proof by node 2 could carry
    # an unchecked one naming node 3, and the stream would speak as node 3.
    admit = proof_rule(NodeCredentials(SECRET, 1).checker())
    valid = make_proof(SECRET, 2, STREAM_METHOD)
    unchecked = f"3.{int(time.time() * 1000)}.{'0' * 32}.{'0' * 64}"
    assert not admit(STREAM_METHOD, (("raftlog-node-proof", valid), ("raftlog-node-proof", unchecked)))
    assert admit(STREAM_METHOD, (("raftlog-node-proof", make_proof(SECRET, 2, STREAM_METHOD)),))
