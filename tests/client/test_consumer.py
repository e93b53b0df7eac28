"""The consumer: order, positions, long polls, leader moves, offset resets.

Unit tests run against ``FakeLog``: two in-process gRPC nodes serving
``Fetch``/``ListOffsets``/``GetMetadata`` from in-memory partitions with the
server's rules (a fetch starts at the batch holding the offset; offsets
outside ``[log_start, high_watermark]`` are ``OFFSET_OUT_OF_RANGE``;
non-leaders answer ``NOT_LEADER`` with a hint). Integration tests run real
node processes (``LocalCluster``, one per module).
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest

from client import (
    ClientClosedError,
    Consumer,
    OffsetOutOfRangeError,
    Producer,
    SyncConsumer,
    SyncProducer,
    TopicPartition,
)
from client.fetcher import ConsumerRecord, record_bytes
from cluster.frontend.grpc_errors import ServiceError, abort
from harness.local_cluster import LocalCluster, TopicSpec
from raftlog.v1 import log_pb2
from raftlog.v1.reasons import Reason
from raftlog.v1.record_batch import Record, encode_batch, parse_header
from tests.client.fake_nodes import FakeNode, FakeNodes, bootstrap, run_local_cluster

pytestmark = pytest.mark.timeout(120)


class FakeLog(FakeNodes):
    """Partitions of topic ``t`` in memory; node ``leader`` leads them all."""

    def __init__(self, partitions: int = 2) -> None:
        super().__init__({"t": partitions})
        self.batches: dict[int, list[bytes]] = defaultdict(list)
        self.log_start: dict[int, int] = defaultdict(int)
        self.next_offset: dict[int, int] = defaultdict(int)
        self.lagging_fetches = 0  # answer this many fetches as a leader behind by `lag`
        self.fetches: list[tuple[str, int, int]] = []  # (address, partition, offset)
        self.appended = asyncio.Event()

    def make_node(self, index: int) -> _FakeNode:
        return _FakeNode(self, index)

    def append(self, partition: int, values: list[bytes], timestamps: list[int] | None = None) -> None:
        base = self.next_offset[partition]
        stamps = timestamps or [1000 + base + i for i in range(len(values))]
        records = [Record(value=v, timestamp_ms=t) for v, t in zip(values, stamps, strict=True)]
        self.batches[partition].append(encode_batch(records, base_offset=base))
        self.next_offset[partition] += len(values)
        self.appended.set()
        self.appended = asyncio.Event()

    def out_of_range(self, partition: int, offset: int, high_watermark: int) -> ServiceError:
        return ServiceError(
            grpc.StatusCode.OUT_OF_RANGE,
            Reason.OFFSET_OUT_OF_RANGE,
            f"offset {offset} outside the log",
            metadata={
                "log_start_offset": str(self.log_start[partition]),
                "high_watermark": str(high_watermark),
            },
        )


class _FakeNode(FakeNode[FakeLog]):
    """Fetch and ListOffsets with the server's rules, on the leader only."""

    async def Fetch(
        self, request: log_pb2.FetchRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.FetchResponse:
        fake = self.fake
        fake.fetches.append((fake.addresses[self.index], request.partition, request.offset))
        await self.abort_unless_leader(context)
        p = request.partition
        hw = fake.next_offset[p]
        if fake.lagging_fetches > 0:
            fake.lagging_fetches -= 1
            hw = max(fake.log_start[p], hw - 5)
        if not fake.log_start[p] <= request.offset <= hw:
            await abort(context, fake.out_of_range(p, request.offset, hw))
        if request.offset == hw and request.max_wait_ms:
            try:
                async with asyncio.timeout(request.max_wait_ms / 1000):
                    await fake.appended.wait()
            except TimeoutError:
                pass
            hw = fake.next_offset[p]
        out: list[bytes] = []
        size = 0
        for batch in fake.batches[p]:
            h = parse_header(batch)
            if h.last_offset < request.offset or h.base_offset >= hw:
                continue
            if out and size + len(batch) > (request.max_bytes or 1 << 20):
                break
            out.append(batch)
            size += len(batch)
        return log_pb2.FetchResponse(batches=out, high_watermark=hw, log_start_offset=fake.log_start[p])

    async def ListOffsets(
        self, request: log_pb2.ListOffsetsRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.ListOffsetsResponse:
        await self.abort_unless_leader(context)
        p = request.partition
        response = log_pb2.ListOffsetsResponse(
            log_start_offset=self.fake.log_start[p], high_watermark=self.fake.next_offset[p]
        )
        if request.HasField("timestamp_ms"):
            for batch in self.fake.batches[p]:
                h = parse_header(batch)
                if h.max_timestamp >= request.timestamp_ms:
                    response.offset_for_timestamp = h.base_offset
                    break
        return response


@pytest.fixture
async def fake() -> AsyncIterator[FakeLog]:
    f = FakeLog()
    await f.start()
    yield f
    await f.stop()


async def poll_until(consumer: Consumer, count: int, timeout_s: float = 10.0) -> list[bytes]:
    got: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < count:
        assert time.monotonic() < deadline, f"only {len(got)} of {count} records"
        got.extend(r.value or b"" for r in await consumer.poll(0.5))
    return got


# --- unit tests against the fake ------------------------------------------------------


async def test_a_seek_into_the_middle_of_a_batch_skips_the_records_before_it(fake: FakeLog) -> None:
    fake.append(0, [f"a{i}".encode() for i in range(10)])
    fake.append(0, [f"a{i}".encode() for i in range(10, 20)])
    async with Consumer(fake.addresses) as consumer:
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 7)
        records = await consumer.poll(2.0)
        assert [r.offset for r in records] == list(range(7, 20))
        assert [r.value for r in records] == [f"a{i}".encode() for i in range(7, 20)]
        assert all(r.topic == "t" and r.partition == 0 for r in records)
        assert consumer.position(("t", 0)) == 20


async def test_poll_respects_max_poll_records_and_takes_partitions_in_turn(fake: FakeLog) -> None:
    fake.append(0, [b"p0"] * 50)
    fake.append(1, [b"p1"] * 50)
    async with Consumer(fake.addresses, max_poll_records=10) as consumer:
        consumer.assign([("t", 0), ("t", 1)])
        await asyncio.sleep(0.05)
        assert fake.fetches == [], "assign() alone fetched: poll() starts the fetchers"
        first = await consumer.poll(2.0)
        await asyncio.sleep(0.2)  # both partitions buffered now
        polls = [await consumer.poll(2.0) for _ in range(4)]
    assert all(len(p) <= 10 for p in [first, *polls])
    sources = [{r.partition for r in p} for p in polls]
    assert {0} in sources and {1} in sources, f"one partition starved the other: {sources}"
    for p in polls:
        offsets = [r.offset for r in p]
        assert offsets == sorted(offsets)


async def test_the_buffered_byte_count_follows_what_poll_takes(fake: FakeLog) -> None:
    fake.append(0, [b"x" * 100] * 25)
    async with Consumer(fake.addresses, max_poll_records=10) as consumer:
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)
        state = consumer._fetcher.states[TopicPartition("t", 0)]
        taken: list[ConsumerRecord] = []
        while len(taken) < 25:  # 10, 10, then the last 5 empty the buffer
            records = await consumer.poll(2.0)
            assert records, "nothing polled"
            taken += records
            assert state.buffered_bytes == sum(map(record_bytes, state.buffer))
        assert len(taken) == 25 and state.buffered_bytes == 0


async def test_a_long_poll_returns_as_soon_as_data_arrives(fake: FakeLog) -> None:
    async with Consumer(fake.addresses, fetch_max_wait_ms=5000) as consumer:
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)

        async def later() -> None:
            await asyncio.sleep(0.3)
            fake.append(0, [b"late"])

        writer = asyncio.create_task(later())
        started = time.monotonic()
        records = await consumer.poll(4.0)
        elapsed = time.monotonic() - started
        await writer
    assert [r.value for r in records] == [b"late"]
    assert 0.25 < elapsed < 2.0


async def test_poll_returns_nothing_after_its_timeout(fake: FakeLog) -> None:
    async with Consumer(fake.addresses, fetch_max_wait_ms=100) as consumer:
        consumer.assign([("t", 0)])
        started = time.monotonic()
        assert await consumer.poll(0.3) == []
        assert 0.25 < time.monotonic() - started < 1.5
        assert consumer.position(("t", 0)) == 0  # resolved by the "earliest" policy


async def test_not_leader_sends_the_fetch_to_the_named_leader(fake: FakeLog) -> None:
    fake.leader, fake.metadata_leader = 1, 0
    fake.append(0, [b"x", b"y"])
    async with Consumer(fake.addresses) as consumer:
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)
        assert await poll_until(consumer, 2) == [b"x", b"y"]
    assert fake.fetches[0][0] == fake.addresses[0]
    assert {a for a, _, _ in fake.fetches[1:]} == {fake.addresses[1]}


@pytest.mark.parametrize(("policy", "expected"), [("earliest", [b"a", b"b", b"c"]), ("latest", [b"d"])])
async def test_out_of_range_resets_by_policy(fake: FakeLog, policy: str, expected: list[bytes]) -> None:
    fake.append(0, [b"z"])
    fake.log_start[0] = 1  # retention removed offset 0
    fake.append(0, [b"a", b"b", b"c"])
    async with Consumer(fake.addresses, auto_offset_reset=policy, fetch_max_wait_ms=2000) as consumer:
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 100)  # past the end
        if policy == "latest":
            assert await consumer.poll(0.3) == []  # reset to the end (4) by now
            assert consumer.position(("t", 0)) == 4
            fake.append(0, [b"d"])
        assert await poll_until(consumer, len(expected)) == expected


async def test_out_of_range_with_the_error_policy_raises_once_then_waits_for_a_seek(fake: FakeLog) -> None:
    fake.append(0, [b"a", b"b"])
    async with Consumer(fake.addresses, auto_offset_reset="error") as consumer:
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 50)
        with pytest.raises(OffsetOutOfRangeError) as info:
            await consumer.poll(2.0)
        assert (info.value.log_start_offset, info.value.high_watermark) == (0, 2)
        assert await consumer.poll(0.2) == []
        assert consumer.position(("t", 0)) == 50
        consumer.seek("t", 0, 1)
        assert await poll_until(consumer, 1) == [b"b"]


async def test_a_partition_without_position_under_the_error_policy_raises(fake: FakeLog) -> None:
    async with Consumer(fake.addresses, auto_offset_reset="error") as consumer:
        consumer.assign([("t", 1)])
        with pytest.raises(OffsetOutOfRangeError) as info:
            await consumer.poll(2.0)
        assert info.value.reason == "NO_OFFSET"


async def test_a_lagging_new_leader_is_waited_for_not_reset(fake: FakeLog) -> None:
    fake.append(0, [f"v{i}".encode() for i in range(10)])
    async with Consumer(fake.addresses, auto_offset_reset="earliest") as consumer:
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)
        assert len(await poll_until(consumer, 10)) == 10
        fake.lagging_fetches = 3  # offset 10 is above the "new leader's" high watermark
        fake.append(0, [b"v10"])
        got = await poll_until(consumer, 1)
    assert got == [b"v10"], "the consumer reset to the log start and read records twice"
    assert fake.lagging_fetches == 0


async def test_seek_to_timestamp_finds_the_first_record_at_or_after_it(fake: FakeLog) -> None:
    fake.append(0, [b"a", b"b", b"c"], timestamps=[100, 200, 300])
    fake.append(0, [b"d", b"e"], timestamps=[400, 500])
    async with Consumer(fake.addresses) as consumer:
        consumer.assign([("t", 0), ("t", 1)])
        found = await consumer.seek_to_timestamp(150, ("t", 0))
        assert found == {TopicPartition("t", 0): 1}
        assert (await consumer.poll(2.0, max_records=1))[0].value == b"b"
        found = await consumer.seek_to_timestamp(400)
        assert found == {TopicPartition("t", 0): 3, TopicPartition("t", 1): None}
        assert consumer.position(("t", 1)) == 0  # the end of the empty partition
        assert await poll_until(consumer, 2) == [b"d", b"e"]
        assert (await consumer.seek_to_timestamp(10_000, ("t", 0))) == {TopicPartition("t", 0): None}
        assert consumer.position(("t", 0)) == 5


async def test_leaving_async_iteration_early_loses_nothing(fake: FakeLog) -> None:
    fake.append(0, [f"v{i}".encode() for i in range(10)])
    async with Consumer(fake.addresses) as consumer:
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)
        seen = []
        async for record in consumer:
            seen.append(record.value)
            if len(seen) == 4:
                break
        assert consumer.position(("t", 0)) == 4
        assert await poll_until(consumer, 6) == [f"v{i}".encode() for i in range(4, 10)]


async def test_the_buffer_is_bounded_without_polls(fake: FakeLog) -> None:
    for i in range(40):
        fake.append(0, [bytes([i]) * 1000])
    async with Consumer(fake.addresses, fetch_max_bytes=3000) as consumer:
        consumer.assign([("t", 0)])
        consumer.seek("t", 0, 0)
        await consumer.poll(0.0)  # starts the fetcher
        await asyncio.sleep(0.3)
        assert len(fake.fetches) <= 3, "the fetcher kept fetching while nobody polled"
        got = await poll_until(consumer, 40)
    assert got == [bytes([i]) * 1000 for i in range(40)]


async def test_misuse_is_refused_clearly(fake: FakeLog) -> None:
    consumer = Consumer(fake.addresses)
    with pytest.raises(ValueError, match="group_id"):
        consumer.subscribe(["t"])
    with pytest.raises(ValueError, match="not assigned"):
        consumer.seek("t", 0, 1)
    consumer.assign([("t", 0)])
    assert consumer.assignment() == {TopicPartition("t", 0)}
    await consumer.close()
    with pytest.raises(ClientClosedError):
        await consumer.poll(0.1)
    await consumer.close()


# --- integration: real node processes ------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    yield from run_local_cluster(
        tmp_path_factory,
        "sdk-consumer",
        [TopicSpec("ts", 1), TopicSpec("moves", 1), TopicSpec("reset", 1), TopicSpec("sync", 2)],
    )


async def test_seek_to_timestamp_on_a_real_cluster(cluster: LocalCluster) -> None:
    base = 1_700_000_000_000
    async with Producer(bootstrap(cluster), api_key=cluster.api_key, linger_ms=50) as producer:
        futures = [
            await producer.send("ts", f"t{i}".encode(), partition=0, timestamp_ms=base + 10 * i)
            for i in range(100)
        ]
        await producer.flush()
    offsets = [f.result().offset for f in futures]
    assert offsets == list(range(100))
    async with Consumer(bootstrap(cluster), api_key=cluster.api_key) as consumer:
        consumer.assign([("ts", 0)])
        found = await consumer.seek_to_timestamp(base + 375)
        assert found == {TopicPartition("ts", 0): 38}
        first = (await consumer.poll(5.0))[0]
        assert (first.offset, first.value, first.timestamp_ms) == (38, b"t38", base + 380)
        assert await consumer.seek_to_timestamp(base + 10_000) == {TopicPartition("ts", 0): None}
        assert consumer.position(("ts", 0)) == 100
        await consumer.seek_to_beginning()
        assert consumer.position(("ts", 0)) == 0


async def test_offset_reset_policies_on_a_real_cluster(cluster: LocalCluster) -> None:
    async with Producer(bootstrap(cluster), api_key=cluster.api_key) as producer:
        for i in range(5):
            await producer.send("reset", f"r{i}".encode(), partition=0)
    async with Consumer(bootstrap(cluster), api_key=cluster.api_key, auto_offset_reset="error") as strict:
        strict.assign([("reset", 0)])
        strict.seek("reset", 0, 1000)
        with pytest.raises(OffsetOutOfRangeError) as info:
            await strict.poll(5.0)
        assert (info.value.log_start_offset, info.value.high_watermark) == (0, 5)
    async with Consumer(bootstrap(cluster), api_key=cluster.api_key, auto_offset_reset="earliest") as early:
        early.assign([("reset", 0)])
        early.seek("reset", 0, 1000)
        assert await poll_until(early, 5) == [f"r{i}".encode() for i in range(5)]
    async with Consumer(
        bootstrap(cluster), api_key=cluster.api_key, auto_offset_reset="latest", fetch_max_wait_ms=100
    ) as late:
        late.assign([("reset", 0)])
        assert await late.poll(0.5) == []
        assert late.position(("reset", 0)) == 5


@pytest.mark.slow
async def test_the_consumer_follows_a_killed_leader_and_reads_everything_once(cluster: LocalCluster) -> None:
    total = 3000
    producer = Producer(bootstrap(cluster), api_key=cluster.api_key, linger_ms=2)
    consumer = Consumer(
        bootstrap(cluster), api_key=cluster.api_key, fetch_max_wait_ms=300, request_timeout_s=3
    )
    consumer.assign([("moves", 0)])
    consumer.seek("moves", 0, 0)
    read: list[tuple[int, bytes]] = []

    async def produce() -> None:
        for i in range(total):
            await producer.send("moves", f"m{i}".encode(), partition=0)
            if i % 100 == 99:
                await producer.flush()
                await asyncio.sleep(0.05)
        await producer.flush()

    async def consume() -> None:
        deadline = time.monotonic() + 60
        while len(read) < total:
            assert time.monotonic() < deadline, f"read {len(read)} of {total}"
            read.extend((r.offset, r.value or b"") for r in await consumer.poll(1.0))

    try:
        writer = asyncio.create_task(produce())
        reader = asyncio.create_task(consume())
        await asyncio.sleep(0.5)
        victim = consumer.metadata.leader_node("moves", 0)
        assert victim is not None, "the consumer has been reading from a known leader"
        read_before_kill = len(read)
        await asyncio.to_thread(cluster.kill, victim)
        await asyncio.sleep(0.5)
        await asyncio.to_thread(cluster.start, victim)
        await asyncio.gather(writer, reader)
    finally:
        await producer.close()
        await consumer.close()
    assert 0 < read_before_kill < total, "the kill did not happen while reading"
    assert read == [(i, f"m{i}".encode()) for i in range(total)]


def test_the_sync_facades_round_trip(cluster: LocalCluster) -> None:
    with SyncProducer(bootstrap(cluster), api_key=cluster.api_key, linger_ms=1) as producer:
        futures = [producer.send("sync", f"s{i}".encode(), key=f"k{i % 4}".encode()) for i in range(200)]
        producer.flush()
        acked = [f.result(timeout=10) for f in futures]
    assert {a.partition for a in acked} == {0, 1}
    with SyncConsumer(bootstrap(cluster), api_key=cluster.api_key, fetch_max_wait_ms=100) as consumer:
        consumer.assign([("sync", 0), ("sync", 1)])
        consumer.seek_to_beginning()
        assert consumer.position(("sync", 0)) == consumer.position(("sync", 1)) == 0
        got: list[bytes] = []
        deadline = time.monotonic() + 20
        while len(got) < 200 and time.monotonic() < deadline:
            got.extend(r.value or b"" for r in consumer.poll(1.0))
        for p in (0, 1):
            assert consumer.position(("sync", p)) == sum(a.partition == p for a in acked)
    assert sorted(got) == sorted(f"s{i}".encode() for i in range(200))
