"""``LogService.StreamFetch`` against an in-memory replica, over real gRPC.

The service runs on a loopback ``grpc.aio`` server with a ``FakeReplica``
standing in for ``partitions.replica.Replica`` (the two calls the fetch path
uses, ``read`` and ``wait_for_data``, with the real ones' rules: reads only
on the leader, offsets outside ``[log_start, high_watermark]`` are out of
range, waiters woken by every commit). The fake counts reads and waiters, so
the tests can tell a stream that waits on commits from one that polls, and a
server that stops at the flow-control window from one that reads ahead.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import cast

import grpc
import pytest

from client.auth import call_metadata
from cluster.controller import Assignment, Principal
from cluster.frontend.forwarding import Forwarder
from cluster.frontend.front_door import Caller, FrontDoor
from cluster.frontend.grpc_errors import ServiceError, error_info
from cluster.frontend.log_service import CALLER_CHECK_S, LogService
from partitions.replica import ReadResult, Replica
from partitions.replica_errors import NotLeaderError
from partitions.state_machine import OffsetOutOfRange
from raftlog.v1 import log_pb2, log_pb2_grpc
from raftlog.v1.reasons import Reason
from raftlog.v1.record_batch import Record, decode_records, encode_batch

pytestmark = pytest.mark.timeout(60)

KEY = "rlk_test"
GROUP = 7
# Passed on each call: grpc.aio registers a channel interceptor for one call
# kind only, so client.auth's interceptor adds nothing to server streams.
AUTH = call_metadata(KEY, None)


class FakeReplica:
    """One partition led by this node (``leader`` 0 means "us")."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, int, bytes]] = []  # (base, last, batch)
        self.high_watermark = 0
        self.log_start = 0
        self.leader = 0  # 0: this node leads; else the leader's node id
        self.reads = 0
        self.waiters: set[asyncio.Future[None]] = set()

    def append(self, values: list[bytes]) -> None:
        base = self.high_watermark
        batch = encode_batch([Record(value=v) for v in values], base_offset=base)
        self.batches.append((base, base + len(values) - 1, batch))
        self.high_watermark += len(values)
        self.commit()

    def commit(self) -> None:
        """What ``Replica._on_applied`` does: wake every waiter."""
        waiters, self.waiters = self.waiters, set()
        for future in waiters:
            if not future.done():
                future.set_result(None)

    def read(self, offset: int, max_bytes: int) -> ReadResult:
        self.reads += 1
        if self.leader:
            raise NotLeaderError(GROUP, self.leader)
        if not self.log_start <= offset <= self.high_watermark:
            raise OffsetOutOfRange(offset, self.log_start, self.high_watermark)
        out: list[bytes] = []
        size = 0
        for _base, last, batch in self.batches:
            if last < offset:
                continue
            if out and size + len(batch) > max_bytes:
                break
            out.append(batch)
            size += len(batch)
        return ReadResult(out, self.high_watermark, self.log_start)

    async def wait_for_data(self, offset: int, timeout: float) -> bool:
        if self.high_watermark > offset:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.add(future)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            self.waiters.discard(future)
        return self.high_watermark > offset


class FakeAuth:
    """One tenant key: ``KEY`` acts in tenant ``acme``."""

    async def caller(self, context: grpc.aio.ServicerContext) -> Caller:
        for key, value in context.invocation_metadata() or ():
            if key == "authorization" and value == f"Bearer {KEY}":
                return Caller(Principal("k1", "acme"), "acme")
        raise ServiceError(grpc.StatusCode.UNAUTHENTICATED, Reason.INVALID_API_KEY, "no such key")


class Stub:
    """``StreamFetch`` with the caller's key."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = log_pb2_grpc.LogServiceStub(channel)

    def stream_fetch(
        self,
        request: log_pb2.StreamFetchRequest,
        *,
        timeout: float | None = None,
        metadata: tuple[tuple[str, str], ...] = AUTH,
    ) -> grpc.aio.UnaryStreamCall[log_pb2.StreamFetchRequest, log_pb2.FetchResponse]:
        call: grpc.aio.UnaryStreamCall[log_pb2.StreamFetchRequest, log_pb2.FetchResponse]
        call = self._stub.StreamFetch(request, timeout=timeout, metadata=metadata)
        return call


@dataclass
class Served:
    replica: FakeReplica
    stub: Stub


def _locate(tenant: str, topic: str, partition: int) -> Assignment | None:
    if (tenant, topic, partition) != ("acme", "t", 0):
        return None
    return Assignment(GROUP, "acme", "t", 1, 0, (1, 2, 3), (), 1)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    replica = FakeReplica()
    # With a forwarder, as on a node: Produce and Fetch would forward, so a
    # StreamFetch answering NOT_LEADER shows that streams are not forwarded.
    forwarder = Forwarder()
    address_of = lambda node: f"node-{node}:7000"  # noqa: E731
    service = LogService(
        _locate,
        lambda group: cast(Replica, replica) if group == GROUP else None,
        lambda group: replica.leader,
        address_of,
        forwarder,
    )
    server = grpc.aio.server(interceptors=[FrontDoor(FakeAuth().caller, address_of)])
    log_pb2_grpc.add_LogServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Served(replica, Stub(channel))
    finally:
        await channel.close()
        await server.stop(grace=None)
        await forwarder.close()


def request(offset: int = 0, max_bytes: int = 0, max_wait_ms: int = 0) -> log_pb2.StreamFetchRequest:
    return log_pb2.StreamFetchRequest(
        topic="t", partition=0, offset=offset, max_bytes=max_bytes, max_wait_ms=max_wait_ms
    )


def values(response: log_pb2.FetchResponse) -> list[tuple[int, bytes]]:
    return [(r.offset, r.value or b"") for b in response.batches for r in decode_records(b)]


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_a_stream_sends_what_is_there_then_what_commits_later(served: Served) -> None:
    replica = served.replica
    for i in range(5):
        replica.append([f"v{i}".encode()])
    # 2 falls inside the batches; one batch per response (max_bytes 1).
    call = served.stub.stream_fetch(request(offset=2, max_bytes=1))
    got = [values(await call.read()) for _ in range(3)]
    assert got == [[(2, b"v2")], [(3, b"v3")], [(4, b"v4")]]
    await until(lambda: len(replica.waiters) == 1)  # caught up: waiting on commits
    replica.append([b"x", b"y"])
    response = await call.read()
    assert values(response) == [(5, b"x"), (6, b"y")]
    assert (response.high_watermark, response.log_start_offset) == (7, 0)
    call.cancel()


async def test_the_first_response_comes_at_once_even_without_data(served: Served) -> None:
    call = served.stub.stream_fetch(request())
    first = await asyncio.wait_for(call.read(), 2.0)
    assert list(first.batches) == [] and first.high_watermark == 0
    served.replica.append([b"late"])
    assert values(await asyncio.wait_for(call.read(), 2.0)) == [(0, b"late")]
    call.cancel()


async def test_an_idle_stream_waits_on_commits_and_reads_nothing(served: Served) -> None:
    replica = served.replica
    call = served.stub.stream_fetch(request())
    await call.read()
    await until(lambda: len(replica.waiters) == 1)
    reads = replica.reads
    await asyncio.sleep(1.0)
    # It wakes only to check its caller and leadership again, once every
    # CALLER_CHECK_S (one cheap read each time), never in a polling loop.
    assert replica.reads - reads <= 1.0 / CALLER_CHECK_S + 1, "an idle stream kept reading the replica"
    assert len(replica.waiters) == 1
    call.cancel()
    await until(lambda: not replica.waiters)  # the cancelled handler took its waiter along


async def test_heartbeats_carry_the_watermarks_when_asked_for(served: Served) -> None:
    served.replica.append([b"a"])
    call = served.stub.stream_fetch(request(offset=1, max_wait_ms=100))
    started = time.monotonic()
    beats = [await asyncio.wait_for(call.read(), 2.0) for _ in range(4)]
    elapsed = time.monotonic() - started
    assert all(not b.batches and b.high_watermark == 1 for b in beats)
    assert 0.25 < elapsed < 2.0, elapsed  # the first at once, then one per 100 ms
    call.cancel()


async def test_a_leader_move_ends_the_stream_with_not_leader_and_the_address(served: Served) -> None:
    replica = served.replica
    replica.append([b"a"])
    call = served.stub.stream_fetch(request())
    assert values(await call.read()) == [(0, b"a")]
    await until(lambda: len(replica.waiters) == 1)
    # A new leader's first entry commits here: no data, but it wakes the stream.
    replica.leader = 2
    replica.commit()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    info = error_info(caught.value)
    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert info is not None and (info.reason, info.leader_address) == ("NOT_LEADER", "node-2:7000")


async def test_a_stream_opened_on_a_follower_is_not_forwarded(served: Served) -> None:
    served.replica.leader = 3
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.stream_fetch(request()).read()
    info = error_info(caught.value)
    assert info is not None and (info.reason, info.leader_address) == ("NOT_LEADER", "node-3:7000")


async def test_offsets_outside_the_log_are_out_of_range(served: Served) -> None:
    served.replica.append([b"a", b"b"])
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.stream_fetch(request(offset=3)).read()
    info = error_info(caught.value)
    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE
    assert info is not None and info.reason == "OFFSET_OUT_OF_RANGE"
    assert (info.metadata["log_start_offset"], info.metadata["high_watermark"]) == ("0", "2")


async def test_retention_passing_the_stream_ends_it_out_of_range(served: Served) -> None:
    replica = served.replica
    replica.append([b"a"])
    call = served.stub.stream_fetch(request())
    await call.read()
    await until(lambda: len(replica.waiters) == 1)
    replica.log_start = replica.high_watermark = 5  # a snapshot past the stream's offset
    replica.commit()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.OUT_OF_RANGE


async def test_unknown_topics_and_bad_keys_are_refused(served: Served) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.stream_fetch(
            log_pb2.StreamFetchRequest(topic="other-tenants-topic", partition=0)
        ).read()
    info = error_info(caught.value)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert info is not None and info.reason == "UNKNOWN_TOPIC_OR_PARTITION"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await served.stub.stream_fetch(request(), metadata=(("authorization", "Bearer wrong"),)).read()
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_the_deadline_ends_an_idle_stream(served: Served) -> None:
    call = served.stub.stream_fetch(request(), timeout=0.3)
    await call.read()
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await until(lambda: not served.replica.waiters)


async def test_a_client_that_stops_reading_stops_the_server(served: Served) -> None:
    replica = served.replica
    batches = 1000  # 16 MB: more than gRPC's windows grow to (about 6 MB on loopback)
    for i in range(batches):
        replica.append([bytes([i % 256]) * 16_000])
    call = served.stub.stream_fetch(request(max_bytes=1))  # one 16 KB batch per response
    await call.read()
    await asyncio.sleep(0.5)
    reads = replica.reads
    await asyncio.sleep(0.3)
    assert replica.reads == reads, "the server went on reading while nobody read the stream"
    assert reads < batches * 3 // 4, f"the server read {reads} responses ahead"
    got = 1
    while got < batches:
        response = await call.read()
        got += len(response.batches)
    assert got == batches
    call.cancel()
