"""The consumer in stream mode (``fetch_mode="stream"``) against in-process
fake nodes.

``StreamLog`` is the consumer tests' ``FakeLog`` with a ``StreamFetch`` that
follows the server's rules (first response at once, then batches as they
are appended, starting where the last response ended; ``NOT_LEADER`` with
the leader's address off the leader or when leadership moves;
``OFFSET_OUT_OF_RANGE`` outside the log). It records every stream opened
(node, partition, offset) and counts the open ones, so the tests can check
that one stream serves a partition, that a seek or unassign closes it, and
where a reopened stream starts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest

from client import Consumer, TopicPartition
from client.consumer import FetchMode
from cluster.frontend.grpc_errors import ServiceError, abort
from raftlog.v1 import log_pb2
from raftlog.v1.record_batch import parse_header
from tests.client.test_consumer import FakeLog, _FakeNode

pytestmark = pytest.mark.timeout(60)


class StreamLog(FakeLog):
    def __init__(self) -> None:
        super().__init__()
        self.streams: list[tuple[str, int, int]] = []  # (address, partition, offset) per stream opened
        self.open_streams = 0
        self.frozen = False  # streams stop sending anything (a paused node)
        self.fail_next: grpc.StatusCode | None = None  # end open streams with this status

    def make_node(self, index: int) -> _FakeNode:
        return _StreamNode(self, index)

    def poke(self) -> None:
        """Wake every stream (what a commit does on a real node)."""
        self.appended.set()
        self.appended = asyncio.Event()


class _StreamNode(_FakeNode):
    async def StreamFetch(
        self, request: log_pb2.StreamFetchRequest, context: grpc.aio.ServicerContext
    ) -> None:
        fake = self.fake
        assert isinstance(fake, StreamLog)
        p, offset = request.partition, request.offset
        fake.streams.append((fake.addresses[self.index], p, offset))
        fake.open_streams += 1
        try:
            await self.abort_unless_leader(context)
            if not fake.log_start[p] <= offset <= fake.next_offset[p]:
                await abort(context, fake.out_of_range(p, offset, fake.next_offset[p]))
            first = True
            while True:
                appended = fake.appended
                if fake.fail_next is not None:
                    await abort(context, ServiceError(fake.fail_next, fake.fail_next.name, "injected"))
                await self.abort_unless_leader(context)
                out: list[bytes] = []
                size = 0
                for batch in fake.batches[p]:
                    if parse_header(batch).last_offset < offset:
                        continue
                    if out and size + len(batch) > (request.max_bytes or 1 << 20):
                        break
                    out.append(batch)
                    size += len(batch)
                if (out or first) and not fake.frozen:
                    await context.write(
                        log_pb2.FetchResponse(
                            batches=out,
                            high_watermark=fake.next_offset[p],
                            log_start_offset=fake.log_start[p],
                        )
                    )
                    first = False
                    if out:
                        offset = parse_header(out[-1]).last_offset + 1
                        continue
                await appended.wait()
        finally:
            fake.open_streams -= 1


@pytest.fixture
async def fake() -> AsyncIterator[StreamLog]:
    f = StreamLog()
    await f.start()
    yield f
    await f.stop()


def streaming(fake: StreamLog, **options: Any) -> Consumer:
    return Consumer(fake.addresses, fetch_mode="stream", **options)


async def poll_until(consumer: Consumer, count: int, timeout_s: float = 10.0) -> list[tuple[int, bytes]]:
    got: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {len(got)} of {count} records"
        got.extend((r.offset, r.value or b"") for r in await consumer.poll(0.5))
    return got


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def numbered(start: int, stop: int) -> list[tuple[int, bytes]]:
    return [(i, f"v{i}".encode()) for i in range(start, stop)]


def append_numbered(fake: StreamLog, start: int, stop: int) -> None:
    fake.append(0, [f"v{i}".encode() for i in range(start, stop)])


async def test_one_stream_delivers_what_is_there_and_what_comes_later(fake: StreamLog) -> None:
    append_numbered(fake, 0, 5)
    async with streaming(fake) as consumer:
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 2)
        assert await poll_until(consumer, 3) == numbered(2, 5)
        for i in range(5, 20, 3):
            append_numbered(fake, i, i + 3)
        assert await poll_until(consumer, 15) == numbered(5, 20)
        assert consumer.position(("t", 0)) == 20
    assert fake.fetches == [], "stream mode sent Fetch requests"
    assert fake.streams == [(fake.addresses[0], 0, 2)]
    await until(lambda: fake.open_streams == 0)  # close() closed it


async def test_the_mode_is_checked_and_poll_stays_the_default(fake: StreamLog) -> None:
    with pytest.raises(ValueError):
        Consumer(fake.addresses, fetch_mode="push")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Consumer(fake.addresses, stream_heartbeat_ms=-1)
    fake.append(0, [b"a"])
    async with Consumer(fake.addresses) as consumer:
        consumer.assign([("t", 0)])
        assert [r.value for r in await consumer.poll(2.0)] == [b"a"]
    assert fake.streams == [] and fake.fetches
    assert FetchMode("stream") is FetchMode.STREAM


async def test_a_leader_move_reopens_the_stream_where_the_buffer_ends(fake: StreamLog) -> None:
    append_numbered(fake, 0, 10)
    async with streaming(fake) as consumer:
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)
        first = await poll_until(consumer, 4, timeout_s=5)
        fake.leader = 1
        fake.poke()  # the old leader's stream notices, ends with NOT_LEADER naming node 1
        append_numbered(fake, 10, 15)
        rest = await poll_until(consumer, 15 - len(first))
    assert first + rest == numbered(0, 15)
    assert fake.streams[0] == (fake.addresses[0], 0, 0)
    # Reopened on the named leader at the fetch offset: everything before it
    # was buffered already (poll returned only part of it).
    assert fake.streams[-1] == (fake.addresses[1], 0, 10)


async def test_unavailable_reopens_the_stream_without_gap_or_repeat(fake: StreamLog) -> None:
    append_numbered(fake, 0, 3)
    async with streaming(fake) as consumer:
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)
        got = await poll_until(consumer, 3)
        fake.fail_next = grpc.StatusCode.UNAVAILABLE
        fake.poke()
        await until(lambda: len(fake.streams) >= 2)
        fake.fail_next = None
        fake.poke()
        append_numbered(fake, 3, 6)
        got += await poll_until(consumer, 3)
    assert got == numbered(0, 6)
    assert [offset for _, _, offset in fake.streams][-1] == 3


async def test_a_seek_restarts_the_stream_at_the_new_offset(fake: StreamLog) -> None:
    append_numbered(fake, 0, 10)
    async with streaming(fake) as consumer:
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)
        assert await poll_until(consumer, 10) == numbered(0, 10)
        consumer.seek("t", 0, 4)
        assert await poll_until(consumer, 6) == numbered(4, 10)
        assert fake.streams[-1][2] == 4
        await until(lambda: fake.open_streams == 1)  # the stream before the seek is gone


async def test_unassigning_a_partition_closes_its_stream(fake: StreamLog) -> None:
    fake.append(0, [b"a"])
    fake.append(1, [b"b"])
    async with streaming(fake) as consumer:
        consumer.assign([("t", 0), ("t", 1)])
        await poll_until(consumer, 2)
        assert fake.open_streams == 2
        consumer.assign([("t", 1)])
        await consumer.poll(0.1)
        await until(lambda: fake.open_streams == 1)
        fake.append(1, [b"c"])
        assert [r.value for r in await consumer.poll(2.0)] == [b"c"]


async def test_a_silent_stream_is_taken_for_dead_and_opened_again(fake: StreamLog) -> None:
    fake.append(0, [b"a"])
    async with streaming(fake, stream_heartbeat_ms=100, request_timeout_s=0.2) as consumer:
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)
        assert [r.value for r in await consumer.poll(2.0)] == [b"a"]
        fake.frozen = True  # no data, no heartbeats: a paused node
        await until(lambda: len(fake.streams) >= 2, timeout=3.0)
        fake.frozen = False
        fake.append(0, [b"b"])
        assert [r.value for r in await consumer.poll(3.0)] == [b"b"]


async def test_a_full_buffer_stops_reading_the_stream_not_the_stream(fake: StreamLog) -> None:
    for i in range(40):
        fake.append(0, [bytes([i]) * 1000])
    async with streaming(fake, fetch_max_bytes=3000) as consumer:
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)
        await consumer.poll(0.0)  # starts the fetcher
        await asyncio.sleep(0.3)
        assert len(fake.streams) == 1 and fake.open_streams == 1
        # The fake wrote everything into gRPC's window by now: only the
        # consumer's pause keeps it out of the buffer.
        buffered = consumer._fetcher.states[TopicPartition("t", 0)].buffered_bytes
        assert 3000 <= buffered < 2 * 3000, f"{buffered} bytes buffered without a poll"
        got = await poll_until(consumer, 40)
    assert [v for _, v in got] == [bytes([i]) * 1000 for i in range(40)]
    assert len(fake.streams) == 1


async def test_out_of_range_resets_by_policy_in_stream_mode(fake: StreamLog) -> None:
    fake.append(0, [b"z"])
    fake.log_start[0] = 1  # retention removed offset 0
    fake.append(0, [b"a", b"b"])
    async with streaming(fake, auto_offset_reset="earliest") as consumer:
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)
        assert await poll_until(consumer, 2) == [(1, b"a"), (2, b"b")]
