"""The SDK's one call path (client/leader_calls.py) on every path that uses
it, against in-process fake nodes (tests/client/fake_nodes.py):

- ``retry_after_ms`` on a ``BACKPRESSURE``/``QUOTA_EXCEEDED`` answer is
  waited for before the retry by the producer, the consumer's fetch, admin
  calls and group calls alike, and by metadata lookups that every node
  refused (backoffs are set far below it, so only the server's figure can
  explain the wait);
- a node that timed out is asked last for metadata;
- a ``raftlog-leader`` trailer on a forwarded answer moves the cached leader;
- an attempt to a node that never answers is given up after the attempt
  timeout, not the (much longer) request timeout, and the request moves on;
- hints are followed at once at most ``max_redirects`` times in a row;
- a leader that is slow (1.5 s) but alive is not sent a produce twice when
  the producer's attempt timeout is longer than that.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from client import Consumer, Producer
from client.admin import Admin
from client.errors import NotLeaderError, RaftlogError
from client.leader_calls import LeaderCalls
from client.metadata import Backoff, ChannelPool, MetadataCache
from cluster.frontend.grpc_errors import ServiceError, abort
from raftlog.v1 import admin_pb2, admin_pb2_grpc, groups_pb2, groups_pb2_grpc, headers, log_pb2, metadata_pb2
from raftlog.v1.reasons import Reason
from tests.client.fake_nodes import start_fake_nodes
from tests.client.test_consumer import FakeLog
from tests.client.test_consumer import _FakeNode as LogNode
from tests.client.test_producer import FakeCluster, Step
from tests.client.test_producer import _FakeNode as ProduceNode

pytestmark = pytest.mark.timeout(30)

RETRY_AFTER_MS = 300
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED


def overloaded(reason: Reason = Reason.BACKPRESSURE) -> ServiceError:
    return ServiceError(RESOURCE_EXHAUSTED, reason, "slow down", retry_after_ms=RETRY_AFTER_MS)


def assert_waited_retry_after(times: list[float]) -> None:
    assert len(times) >= 2, times
    assert times[1] - times[0] >= RETRY_AFTER_MS / 1000 - 0.01, f"retried after {times[1] - times[0]:.3f} s"


# --- retry_after on every path ---------------------------------------------------------


async def test_the_producer_waits_retry_after() -> None:
    fake = FakeCluster({"t": 1})
    await fake.start()
    try:
        fake.script.append(Step(overloaded(Reason.QUOTA_EXCEEDED)))
        async with Producer(fake.addresses, retry_backoff_ms=1, retry_backoff_max_ms=1) as producer:
            assert (await (await producer.send("t", b"v", partition=0))).offset == 0
        assert_waited_retry_after([request[4] for request in fake.requests])
    finally:
        await fake.stop()


class OverloadedLog(FakeLog):
    """The consumer tests' log whose first fetch is refused with retry-after."""

    def __init__(self) -> None:
        super().__init__(partitions=1)
        self.fetch_times: list[float] = []

    def make_node(self, index: int) -> LogNode:
        return OverloadedNode(self, index)


class OverloadedNode(LogNode):
    async def Fetch(self, request: log_pb2.FetchRequest, context: grpc.aio.ServicerContext) -> Any:
        fake = self.fake
        assert isinstance(fake, OverloadedLog)
        fake.fetch_times.append(time.monotonic())
        if len(fake.fetch_times) == 1:
            await abort(context, overloaded())
        return await super().Fetch(request, context)


async def test_the_consumer_fetch_waits_retry_after() -> None:
    fake = OverloadedLog()
    await fake.start()
    try:
        fake.append(0, [b"a"])
        async with Consumer(fake.addresses, retry_backoff_ms=1, retry_backoff_max_ms=1) as consumer:
            consumer.assign([("t", 0)])
            consumer.seek("t", 0, 0)
            records = await consumer.poll(5.0)
        assert [r.value for r in records] == [b"a"]
        assert_waited_retry_after(fake.fetch_times)
    finally:
        await fake.stop()


class OverloadedAdmin(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self) -> None:
        self.times: list[float] = []

    async def GetClusterStatus(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.times.append(time.monotonic())
        if len(self.times) == 1:
            await abort(context, overloaded(Reason.QUOTA_EXCEEDED))
        return admin_pb2.GetClusterStatusResponse()


async def test_admin_calls_wait_retry_after() -> None:
    servicer = OverloadedAdmin()
    server = grpc.aio.server()
    admin_pb2_grpc.add_AdminServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with Admin(f"127.0.0.1:{port}", timeout_s=5) as admin:
            await admin.cluster_status()
        assert_waited_retry_after(servicer.times)
    finally:
        await server.stop(grace=None)


class OverloadedGroups(groups_pb2_grpc.GroupServiceServicer):
    def __init__(self) -> None:
        self.times: list[float] = []

    async def FetchCommittedOffsets(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.times.append(time.monotonic())
        if len(self.times) == 1:
            await abort(context, overloaded())
        return groups_pb2.FetchCommittedOffsetsResponse()


async def test_group_calls_wait_retry_after() -> None:
    fake = FakeLog(partitions=1)
    groups = OverloadedGroups()
    servers, addresses = await start_fake_nodes(fake.make_node, 1, lambda i: groups)
    fake.addresses.extend(addresses)
    try:
        async with Consumer(addresses, group_id="g", retry_backoff_ms=1, retry_backoff_max_ms=1) as consumer:
            assert await consumer.committed([("t", 0)]) == {("t", 0): None}
        assert_waited_retry_after(groups.times)
    finally:
        for server in servers:
            await server.stop(grace=None)


class OverloadedJoin(groups_pb2_grpc.GroupServiceServicer):
    def __init__(self) -> None:
        self.times: list[float] = []

    async def JoinGroup(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self.times.append(time.monotonic())
        if len(self.times) == 1:
            await abort(context, overloaded(Reason.QUOTA_EXCEEDED))
        return groups_pb2.JoinGroupResponse(
            member_id=request.member_id, member_epoch=1, heartbeat_interval_ms=60_000
        )


async def test_a_join_the_call_path_gave_up_on_waits_retry_after_before_the_next() -> None:
    """The join's deadline (``request_timeout_s``) is shorter than the
    retry-after: the call path raises at once, and the member's own retry
    loop must wait the server's figure, not just its backoff."""
    fake = FakeLog(partitions=1)
    groups = OverloadedJoin()
    servers, addresses = await start_fake_nodes(fake.make_node, 1, lambda i: groups)
    fake.addresses.extend(addresses)
    try:
        async with Consumer(
            addresses, group_id="g", request_timeout_s=0.1, retry_backoff_ms=1, retry_backoff_max_ms=1
        ) as consumer:
            consumer.subscribe(["t"])
            async with asyncio.timeout(5):
                while len(groups.times) < 2:
                    await consumer.poll(0.05)
        assert_waited_retry_after(groups.times)
    finally:
        for server in servers:
            await server.stop(grace=None)


class QuotaMetadataNode(ProduceNode):
    """``GetMetadata`` refused with ``QUOTA_EXCEEDED`` (and a retry-after)
    on every node while ``metadata_refusals`` lasts; times recorded."""

    async def GetMetadata(
        self, request: metadata_pb2.GetMetadataRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb2.GetMetadataResponse:
        fake = self.fake
        assert isinstance(fake, QuotaMetadataCluster)
        fake.metadata_times.append(time.monotonic())
        if fake.metadata_refusals > 0:
            fake.metadata_refusals -= 1
            await abort(context, overloaded(Reason.QUOTA_EXCEEDED))
        return await super().GetMetadata(request, context)


class QuotaMetadataCluster(FakeCluster):
    def __init__(self) -> None:
        super().__init__({"t": 1})
        self.metadata_refusals = 2  # one round: both nodes refuse
        self.metadata_times: list[float] = []

    def make_node(self, index: int) -> ProduceNode:
        return QuotaMetadataNode(self, index)


async def test_metadata_lookups_wait_retry_after_when_every_node_refused() -> None:
    fake = QuotaMetadataCluster()
    await fake.start()
    try:
        async with Producer(fake.addresses, retry_backoff_ms=1, retry_backoff_max_ms=1) as producer:
            assert (await (await producer.send("t", b"v", partition=0))).offset == 0
        times = fake.metadata_times
        assert len(times) >= 3, times
        waited = times[2] - times[1]
        assert waited >= RETRY_AFTER_MS / 1000 - 0.01, f"asked again {waited:.3f} s after the refusals"
    finally:
        await fake.stop()


# --- silent nodes, suspects, trailers --------------------------------------------------


class CountingLog(FakeLog):
    """Records which node answered each ``GetMetadata``."""

    def __init__(self) -> None:
        super().__init__(partitions=1)
        self.metadata_calls: list[int] = []

    def make_node(self, index: int) -> LogNode:
        return CountingNode(self, index)


class CountingNode(LogNode):
    async def GetMetadata(
        self, request: metadata_pb2.GetMetadataRequest, context: grpc.aio.ServicerContext
    ) -> metadata_pb2.GetMetadataResponse:
        fake = self.fake
        assert isinstance(fake, CountingLog)
        fake.metadata_calls.append(self.index)
        return await super().GetMetadata(request, context)


@pytest.fixture
async def counting() -> AsyncIterator[CountingLog]:
    fake = CountingLog()
    await fake.start(nodes=3)
    yield fake
    await fake.stop()


async def test_a_node_that_timed_out_is_asked_last_for_metadata(counting: CountingLog) -> None:
    pool = ChannelPool()
    try:
        cache = MetadataCache(counting.addresses, pool)
        await cache.refresh(["t"])
        assert counting.metadata_calls == [0]
        silent = counting.addresses[0]
        assert cache.cached_leader("t", 0) == silent  # node 0 leads every partition
        cache.node_failed(silent)
        assert cache.cached_leader("t", 0) is None, "its leaderships are forgotten"
        assert cache.candidates()[-1] == silent
        await cache.refresh(["t"])
        assert counting.metadata_calls == [0, 1], "the next round asks another node first"
    finally:
        await pool.close()


class ForwardingNode(ProduceNode):
    """Node 0 is not the leader but forwards: it answers the produce itself
    (appending as the leader would) and names the leader in the trailer."""

    async def Produce(self, request: log_pb2.ProduceRequest, context: grpc.aio.ServicerContext) -> Any:
        fake = self.fake
        if self.index == fake.leader:
            return await super().Produce(request, context)
        fake.requests.append(
            (fake.addresses[self.index], request.topic, request.partition, request.batch, time.monotonic())
        )
        base, last, duplicate = fake.append(request.topic, request.partition, request.batch)
        context.set_trailing_metadata(((headers.LEADER, fake.addresses[fake.leader]),))
        return log_pb2.ProduceResponse(base_offset=base, last_offset=last, duplicate=duplicate)


class ForwardingCluster(FakeCluster):
    def make_node(self, index: int) -> ProduceNode:
        return ForwardingNode(self, index)


async def test_a_leader_trailer_on_a_forwarded_answer_sends_the_next_call_direct() -> None:
    fake = ForwardingCluster({"t": 1})
    fake.leader, fake.metadata_leader = 1, 0  # metadata names node 0, which forwards to node 1
    await fake.start()
    try:
        async with Producer(fake.addresses, linger_ms=0) as producer:
            assert (await (await producer.send("t", b"a", partition=0))).offset == 0
            assert producer.metadata.cached_leader("t", 0) == fake.addresses[1]
            assert (await (await producer.send("t", b"b", partition=0))).offset == 1
        assert [r[0] for r in fake.requests] == [fake.addresses[0], fake.addresses[1]]
    finally:
        await fake.stop()


class HangingNode(ProduceNode):
    """A node whose ``Produce`` never answers while it is the fake's
    ``hanging`` node (a paused process, as far as one call can tell)."""

    async def Produce(self, request: log_pb2.ProduceRequest, context: grpc.aio.ServicerContext) -> Any:
        fake = self.fake
        assert isinstance(fake, HangingCluster)
        if self.index == fake.hanging:
            fake.requests.append(
                (
                    fake.addresses[self.index],
                    request.topic,
                    request.partition,
                    request.batch,
                    time.monotonic(),
                )
            )
            fake.leader = 1  # meanwhile the cluster elects node 1
            await asyncio.Event().wait()
        return await super().Produce(request, context)


class HangingCluster(FakeCluster):
    def __init__(self) -> None:
        super().__init__({"t": 1})
        self.hanging = 0

    def make_node(self, index: int) -> ProduceNode:
        return HangingNode(self, index)


async def test_an_attempt_to_a_node_that_never_answers_moves_on_after_the_attempt_timeout() -> None:
    fake = HangingCluster()
    await fake.start()
    try:
        async with Producer(
            fake.addresses, linger_ms=0, request_timeout_s=30, delivery_timeout_s=60, retry_backoff_ms=1
        ) as producer:
            started = time.monotonic()
            future = await producer.send("t", b"v", partition=0)
            async with asyncio.timeout(10):
                metadata = await future
            elapsed = time.monotonic() - started
        assert (metadata.offset, fake.requests[-1][0]) == (0, fake.addresses[1])
        assert elapsed < 2.5, f"took {elapsed:.2f} s: the attempt waited for more than its own timeout"
        first, retry = fake.requests[0][3], fake.requests[-1][3]
        assert first == retry, "the retry resent the same bytes (same producer id, epoch, sequence)"
    finally:
        await fake.stop()


class SlowCluster(FakeCluster):
    """Its leader answers the first ``Produce`` after ``delay_s`` (an
    overloaded leader, alive: its connection answers pings), later ones at
    once."""

    def __init__(self, delay_s: float) -> None:
        super().__init__({"t": 1})
        self.delays = [delay_s]

    def make_node(self, index: int) -> ProduceNode:
        return SlowNode(self, index)


class SlowNode(ProduceNode):
    async def Produce(self, request: log_pb2.ProduceRequest, context: grpc.aio.ServicerContext) -> Any:
        fake = self.fake
        assert isinstance(fake, SlowCluster)
        if fake.delays:
            await asyncio.sleep(fake.delays.pop())
        return await super().Produce(request, context)


async def test_a_leader_answering_within_a_longer_attempt_timeout_is_sent_the_batch_once() -> None:
    """What client/producer.py advises for a cluster that answers slower
    than a second under load: a larger ``attempt_timeout_s`` means no
    resend (appended and replicated again before the leader drops it as a
    duplicate) and no suspect mark."""
    fake = SlowCluster(delay_s=1.5)
    await fake.start()
    try:
        async with Producer(fake.addresses, linger_ms=0, attempt_timeout_s=3) as producer:
            metadata = await (await producer.send("t", b"v", partition=0))
            suspects = [a for a in fake.addresses if producer.metadata.is_suspect(a)]
        assert metadata.offset == 0
        assert (producer.stats.requests, producer.stats.retries) == (1, 0), producer.stats
        assert suspects == []
    finally:
        await fake.stop()


# --- redirects ---------------------------------------------------------------------------


class _PingPongRoute:
    """A route whose two nodes each name the other as the leader."""

    def __init__(self) -> None:
        self.current = "a:1"
        self.moves: list[str] = []

    async def address(self) -> str:
        return self.current

    def moved(self, address: str) -> None:
        self.moves.append(address)
        self.current = address

    def failed(self, address: str, error: RaftlogError) -> None:
        pass

    def answered(self, address: str) -> None:
        pass


async def test_hints_are_followed_at_once_at_most_max_redirects_times_in_a_row() -> None:
    """Two nodes that name each other must not spin: after ``MAX_REDIRECTS``
    immediate moves the path waits its backoff before following another."""
    pool = ChannelPool()
    try:
        backoff_s = 0.2
        calls = LeaderCalls(MetadataCache(["a:1"], pool), Backoff(backoff_s, backoff_s), max_redirects=3)
        route = _PingPongRoute()
        attempts = calls.attempts(route, deadline=None)
        waits: list[float] = []
        for _ in range(8):
            here = await route.address()
            other = "b:1" if here == "a:1" else "a:1"
            started = time.monotonic()
            await attempts.failed(here, NotLeaderError("not me", leader_address=other))
            waits.append(time.monotonic() - started)
        waited = [w >= backoff_s * 0.5 - 0.01 for w in waits]  # jitter: [0.5, 1] x backoff
        assert waited == [False, False, False, True] * 2, [round(w, 3) for w in waits]
        assert len(route.moves) == 8, "every hint is followed, some after a wait"
    finally:
        await pool.close()
