"""The producer: batching, retries, idempotence, and failover on real nodes.

Unit tests run the SDK against ``FakeCluster``: two in-process gRPC nodes
that serve ``LogService`` and ``MetadataService`` over a shared in-memory log
with the server's dedup rules (last 5 batches per producer, sequences from
0 without gaps), and answer Produce calls from a script (errors built with
the server's own ``cluster.frontend.grpc_errors``). Integration tests run real node
processes (``LocalCluster``, one per module).

``RAFTLOG_TEST_IDEMPOTENT=0`` runs the SIGKILL test with idempotence off: it
is then expected to fail with duplicates (the check can see them; see
``test_the_exactly_once_check_catches_duplicates_losses_and_reorders``).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter, defaultdict, deque
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass

import grpc
import pytest

from client import (
    ClientClosedError,
    Consumer,
    DeliveryTimeoutError,
    InvalidBatchError,
    Producer,
    ProducerFencedError,
    RecordMetadata,
    RecordTooLargeError,
    UnknownTopicOrPartitionError,
    key_partition,
)
from client.producer import record_size_bound
from cluster.frontend.grpc_errors import ServiceError, abort
from harness.local_cluster import LocalCluster, TopicSpec
from raftlog.v1 import log_pb2
from raftlog.v1.reasons import Reason
from raftlog.v1.record_batch import (
    HEADER_SIZE,
    DecodedRecord,
    InvalidBatch,
    Record,
    decode_records,
    encode_batch,
    parse_header,
    validate_batch,
    with_base_offset,
)
from tests.client.fake_nodes import FakeNode, FakeNodes, bootstrap, run_local_cluster

pytestmark = pytest.mark.timeout(120)

FAILED_PRECONDITION = grpc.StatusCode.FAILED_PRECONDITION


# --- a scripted in-process cluster ---------------------------------------------------


@dataclass
class Step:
    """How the leader answers one Produce call: ``error`` (None: success),
    after appending the batch first when ``commit`` (an ack lost after the
    commit, as when a leader dies)."""

    error: ServiceError | None = None
    commit: bool = False


def service_error(code: grpc.StatusCode, reason: str, **kwargs: object) -> ServiceError:
    return ServiceError(code, reason, f"scripted {reason}", **kwargs)  # type: ignore[arg-type]


class FakeCluster(FakeNodes):
    def __init__(self, topics: dict[str, int]) -> None:
        super().__init__(topics)
        self.logs: dict[tuple[str, int], list[bytes]] = defaultdict(list)
        self.next_offset: dict[tuple[str, int], int] = defaultdict(int)
        # (topic, partition, producer id) -> recent (first_seq, last_seq, base, last)
        self.recent: dict[tuple[str, int, int], list[tuple[int, int, int, int]]] = {}
        self.script: deque[Step] = deque()
        self.requests: list[tuple[str, str, int, bytes, float]] = []
        self.init_calls = 0
        self.in_flight: Counter[tuple[str, int]] = Counter()
        self.max_in_flight: Counter[tuple[str, int]] = Counter()
        self.gate: asyncio.Event | None = None  # Produce waits for it when set

    def make_node(self, index: int) -> _FakeNode:
        return _FakeNode(self, index)

    async def stop(self) -> None:
        if self.gate is not None:
            self.gate.set()
        await super().stop()

    def append(self, topic: str, partition: int, batch: bytes) -> tuple[int, int, bool]:
        try:
            h = validate_batch(batch, max_batch_bytes=1 << 20)
        except InvalidBatch as exc:
            raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, Reason(exc.reason), exc.message) from None
        key = (topic, partition, h.producer_id)
        recent = self.recent.get(key, [])
        if h.producer_id >= 0:
            for first, last, base, last_offset in recent:
                if (first, last) == (h.base_sequence, h.last_sequence):
                    return base, last_offset, True
            expected = recent[-1][1] + 1 if recent else 0
            if h.base_sequence != expected:
                reason = "OUT_OF_ORDER_SEQUENCE" if recent else "UNKNOWN_PRODUCER_ID"
                raise service_error(FAILED_PRECONDITION, reason)
        tp = (topic, partition)
        base = self.next_offset[tp]
        self.logs[tp].append(with_base_offset(batch, base))
        self.next_offset[tp] += h.record_count
        last_offset = base + h.record_count - 1
        if h.producer_id >= 0:
            self.recent[key] = [*recent, (h.base_sequence, h.last_sequence, base, last_offset)][-5:]
        return base, last_offset, False

    def records(self, topic: str, partition: int) -> list[DecodedRecord]:
        return [r for b in self.logs[(topic, partition)] for r in decode_records(b)]

    def batches_sent(self) -> list[bytes]:
        return [request[3] for request in self.requests]


class _FakeNode(FakeNode[FakeCluster]):
    """Produce (as the script says) and InitProducer."""

    async def Produce(
        self, request: log_pb2.ProduceRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.ProduceResponse:
        fake = self.fake
        tp = (request.topic, request.partition)
        fake.requests.append(
            (fake.addresses[self.index], request.topic, request.partition, request.batch, time.monotonic())
        )
        fake.in_flight[tp] += 1
        fake.max_in_flight[tp] = max(fake.max_in_flight[tp], fake.in_flight[tp])
        try:
            if fake.gate is not None:
                await fake.gate.wait()
            await self.abort_unless_leader(context)
            step = fake.script.popleft() if fake.script else Step()
            try:
                if step.error is None or step.commit:
                    base, last, duplicate = fake.append(request.topic, request.partition, request.batch)
            except ServiceError as error:
                await abort(context, error)
            if step.error is not None:
                await abort(context, step.error)
            return log_pb2.ProduceResponse(base_offset=base, last_offset=last, duplicate=duplicate)
        finally:
            fake.in_flight[tp] -= 1

    async def InitProducer(
        self, request: log_pb2.InitProducerRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.InitProducerResponse:
        self.fake.init_calls += 1
        return log_pb2.InitProducerResponse(producer_id=1000 + self.fake.init_calls, producer_epoch=0)


@pytest.fixture
async def fake() -> AsyncIterator[FakeCluster]:
    f = FakeCluster({"t": 2})
    await f.start()
    yield f
    await f.stop()


def header_of(batch: bytes) -> tuple[int, int, int]:
    h = parse_header(batch)
    return h.producer_id, h.base_sequence, h.record_count


# --- unit tests against the fake ------------------------------------------------------


async def test_records_sent_within_linger_travel_in_one_batch(fake: FakeCluster) -> None:
    async with Producer(fake.addresses, linger_ms=100) as producer:
        started = time.monotonic()
        futures = [await producer.send("t", f"v{i}".encode(), partition=0) for i in range(10)]
        results = [await f for f in futures]
        waited = time.monotonic() - started
    assert [r.offset for r in results] == list(range(10))
    assert all(r.topic == "t" and r.partition == 0 for r in results)
    assert len(fake.requests) == 1, "ten records within the linger make one batch"
    assert waited >= 0.09, "the batch waited for the linger before it was sent"
    assert [r.value for r in fake.records("t", 0)] == [f"v{i}".encode() for i in range(10)]


async def test_batches_stay_under_max_batch_bytes_and_keep_send_order(fake: FakeCluster) -> None:
    async with Producer(fake.addresses, linger_ms=1000, max_batch_bytes=4096) as producer:
        futures = [await producer.send("t", bytes([i]) * 1000, partition=1) for i in range(20)]
        await producer.flush()
    assert [f.result().offset for f in futures] == list(range(20))
    sizes = [len(b) for b in fake.batches_sent()]
    assert len(sizes) >= 5 and max(sizes) <= 4096, sizes
    assert [r.value for r in fake.records("t", 1)] == [bytes([i]) * 1000 for i in range(20)]


async def test_a_record_too_large_for_the_server_is_refused_before_sending(fake: FakeCluster) -> None:
    async with Producer(fake.addresses) as producer:
        with pytest.raises(RecordTooLargeError):
            await producer.send("t", b"x" * (1 << 20), partition=0)
        assert fake.requests == []
        # Larger than a batch target but within the server's limit: alone.
        big = await producer.send("t", b"y" * (300 * 1024), partition=0)
        assert (await big).offset == 0
    assert len(fake.requests) == 1


def test_record_size_bound_is_an_upper_bound_and_tight() -> None:
    rng = random.Random(5)
    for _ in range(200):
        records = [
            Record(
                value=None if rng.random() < 0.1 else rng.randbytes(rng.randrange(0, 3000)),
                key=None if rng.random() < 0.3 else rng.randbytes(rng.randrange(0, 200)),
                headers=tuple(
                    (f"h{j}", rng.randbytes(rng.randrange(0, 50))) for j in range(rng.randrange(3))
                ),
                timestamp_ms=rng.randrange(0, 2**41),
            )
            for _ in range(rng.randrange(1, 20))
        ]
        actual = len(encode_batch(records)) - HEADER_SIZE
        bound = sum(record_size_bound(r) for r in records)
        assert actual <= bound <= actual + 16 * len(records)


async def test_a_retry_after_outcome_unknown_resends_the_same_bytes_and_is_not_duplicated(
    fake: FakeCluster,
) -> None:
    fake.script.append(Step(service_error(grpc.StatusCode.UNAVAILABLE, "OUTCOME_UNKNOWN"), commit=True))
    async with Producer(fake.addresses, retry_backoff_ms=1) as producer:
        futures = [await producer.send("t", f"v{i}".encode(), partition=0) for i in range(3)]
        await producer.flush()
        stats = producer.stats
    assert [f.result().offset for f in futures] == [0, 1, 2]
    first, retry = fake.batches_sent()
    assert first == retry, "the retry carries the same producer id, epoch, sequence and records"
    assert len(fake.logs[("t", 0)]) == 1, "the partition holds the batch once"
    assert stats.duplicates == 1 and stats.retries == 1


async def test_without_idempotence_the_same_lost_ack_writes_the_batch_twice(fake: FakeCluster) -> None:
    """What the previous test guards against: the fake has no producer to
    deduplicate by, so the retry is appended again."""
    fake.script.append(Step(service_error(grpc.StatusCode.UNAVAILABLE, "OUTCOME_UNKNOWN"), commit=True))
    async with Producer(fake.addresses, idempotent=False, retry_backoff_ms=1) as producer:
        future = await producer.send("t", b"once", partition=0)
        await producer.flush()
    assert (await future).offset == 1
    assert [r.value for r in fake.records("t", 0)] == [b"once", b"once"]
    assert header_of(fake.batches_sent()[0])[:2] == (-1, -1)
    assert fake.init_calls == 0


async def test_not_leader_with_a_hint_goes_straight_to_the_named_leader(fake: FakeCluster) -> None:
    fake.leader, fake.metadata_leader = 1, 0  # metadata is stale
    async with Producer(fake.addresses, retry_backoff_ms=500) as producer:
        started = time.monotonic()
        metadata = await (await producer.send("t", b"v", partition=1))
        elapsed = time.monotonic() - started
    assert metadata == RecordMetadata("t", 1, 0, metadata.timestamp_ms)
    assert [r[0] for r in fake.requests] == [fake.addresses[0], fake.addresses[1]]
    assert fake.requests[0][3] == fake.requests[1][3]
    assert elapsed < 0.25, "no backoff before following a NOT_LEADER hint"


async def test_backpressure_waits_at_least_retry_after(fake: FakeCluster) -> None:
    fake.script.append(
        Step(service_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "BACKPRESSURE", retry_after_ms=300))
    )
    async with Producer(fake.addresses, retry_backoff_ms=1) as producer:
        assert (await (await producer.send("t", b"v", partition=0))).offset == 0
    (_, _, _, _, first), (_, _, _, _, second) = fake.requests
    assert second - first >= 0.29


async def test_a_definite_refusal_fails_the_records_and_frees_their_sequence_numbers(
    fake: FakeCluster,
) -> None:
    fake.script.append(Step(service_error(grpc.StatusCode.INVALID_ARGUMENT, "CORRUPT_BATCH")))
    async with Producer(fake.addresses, linger_ms=0) as producer:
        refused = await producer.send("t", b"a", partition=0)
        with pytest.raises(InvalidBatchError) as info:
            await refused
        assert info.value.reason == "CORRUPT_BATCH" and not info.value.retriable
        accepted = await producer.send("t", b"b", partition=0)
        assert (await accepted).offset == 0
    (pid1, seq1, _), (pid2, seq2, _) = map(header_of, fake.batches_sent())
    assert (pid1, seq1) == (pid2, seq2) == (1001, 0), "nothing was written, so the sequence is reused"
    assert fake.init_calls == 1


async def test_an_expired_producer_is_renumbered_under_a_new_id(fake: FakeCluster) -> None:
    async with Producer(fake.addresses, linger_ms=0) as producer:
        assert (await (await producer.send("t", b"a", partition=0))).offset == 0
        fake.recent.clear()  # the partition forgets the producer (expiry)
        assert (await (await producer.send("t", b"b", partition=0))).offset == 1
    headers = [header_of(b) for b in fake.batches_sent()]
    assert headers == [(1001, 0, 1), (1001, 1, 1), (1002, 0, 1)]
    assert [r.value for r in fake.records("t", 0)] == [b"a", b"b"]


async def test_giving_up_on_a_batch_that_may_have_committed_switches_to_a_fresh_producer_id(
    fake: FakeCluster,
) -> None:
    for _ in range(1000):
        fake.script.append(Step(service_error(grpc.StatusCode.UNAVAILABLE, "OUTCOME_UNKNOWN"), commit=True))
    async with Producer(fake.addresses, linger_ms=0, delivery_timeout_s=0.3, retry_backoff_ms=20) as producer:
        lost = await producer.send("t", b"a", partition=0)
        with pytest.raises(DeliveryTimeoutError) as info:
            await lost
        assert "may be in the log" in info.value.message
        fake.script.clear()
        later = await producer.send("t", b"b", partition=0)
        assert (await later).offset == 1
    last_pid, last_seq, _ = header_of(fake.batches_sent()[-1])
    assert (last_pid, last_seq) == (1002, 0), "the unknown batch's sequence numbers are never reused"
    assert [r.value for r in fake.records("t", 0)] == [b"a", b"b"]


async def test_a_fenced_producer_fails_its_records_and_refuses_new_ones(fake: FakeCluster) -> None:
    fake.script.append(Step(service_error(FAILED_PRECONDITION, "INVALID_PRODUCER_EPOCH")))
    producer = Producer(fake.addresses, linger_ms=0)
    try:
        future = await producer.send("t", b"a", partition=0)
        with pytest.raises(ProducerFencedError):
            await future
        with pytest.raises(ProducerFencedError):
            await producer.send("t", b"b", partition=0)
    finally:
        await producer.close()


async def test_one_batch_in_flight_per_partition_and_partitions_in_parallel(fake: FakeCluster) -> None:
    fake.gate = asyncio.Event()
    async with Producer(fake.addresses, linger_ms=0, max_batch_bytes=1024) as producer:
        futures = []
        for i in range(12):
            futures.append(await producer.send("t", bytes([i]) * 600, partition=i % 2))
        await asyncio.sleep(0.2)
        assert fake.in_flight == Counter({("t", 0): 1, ("t", 1): 1})
        fake.gate.set()
        await producer.flush()
    assert fake.max_in_flight == Counter({("t", 0): 1, ("t", 1): 1})
    for p in (0, 1):
        offsets = [f.result().offset for f in futures[p::2]]
        assert offsets == list(range(6))
        assert [r.value for r in fake.records("t", p)] == [bytes([i]) * 600 for i in range(p, 12, 2)]


async def test_send_waits_for_buffer_room(fake: FakeCluster) -> None:
    fake.gate = asyncio.Event()
    async with Producer(fake.addresses, linger_ms=0, buffer_bytes=4000) as producer:
        for _ in range(3):
            await producer.send("t", b"x" * 1000, partition=0)
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await producer.send("t", b"x" * 1500, partition=0)
        blocked = asyncio.create_task(producer.send("t", b"x" * 1500, partition=0))
        await asyncio.sleep(0.05)
        assert not blocked.done()
        fake.gate.set()
        future = await blocked
        assert (await future).offset == 3
    assert len(fake.records("t", 0)) == 4


async def test_close_delivers_everything_sent_then_refuses_more(fake: FakeCluster) -> None:
    producer = Producer(fake.addresses, linger_ms=10_000)
    futures = [await producer.send("t", f"{i}".encode(), key=f"k{i}".encode()) for i in range(100)]
    await producer.close()
    assert all(f.done() and f.exception() is None for f in futures)
    stored = [r.value or b"" for p in (0, 1) for r in fake.records("t", p)]
    assert sorted(stored) == sorted(f"{i}".encode() for i in range(100))
    with pytest.raises(ClientClosedError):
        await producer.send("t", b"late")
    await producer.close()  # idempotent


async def test_close_with_a_timeout_fails_what_it_could_not_deliver(fake: FakeCluster) -> None:
    fake.gate = asyncio.Event()  # the leader never answers
    producer = Producer(fake.addresses, linger_ms=0)
    in_flight = await producer.send("t", b"a", partition=0)
    await asyncio.sleep(0.1)
    queued = await producer.send("t", b"b", partition=0)
    started = time.monotonic()
    await producer.close(timeout_s=0.2)
    assert time.monotonic() - started < 2
    for future in (in_flight, queued):
        with pytest.raises(ClientClosedError):
            async with asyncio.timeout(5):  # a future close() forgot never resolves
                await future


async def test_keys_choose_partitions_and_bad_targets_are_refused(fake: FakeCluster) -> None:
    async with Producer(fake.addresses) as producer:
        futures = {k: await producer.send("t", b"v", key=k) for k in (b"alpha", b"beta", b"gamma", b"delta")}
        for key, future in futures.items():
            assert (await future).partition == key_partition(key, 2)
        with pytest.raises(UnknownTopicOrPartitionError):
            await producer.send("t", b"v", partition=2)
        with pytest.raises(UnknownTopicOrPartitionError):
            await producer.send("nope", b"v")
        with pytest.raises(TypeError):
            await producer.send("t", "text")  # type: ignore[arg-type]


# --- exactly-once check, and that it can fail ----------------------------------------


def exactly_once_problems(
    acked: dict[bytes, tuple[int, int]], sent_order: Sequence[bytes], log: dict[int, list[tuple[int, bytes]]]
) -> list[str]:
    """What is wrong with ``log`` (partition -> [(offset, value)] as read
    back) given ``acked`` (value -> (partition, offset) from the producer)
    and the order values were sent: losses, duplicates, records at other
    offsets than acknowledged, and reordering within a partition."""
    problems = []
    where: dict[bytes, list[tuple[int, int]]] = defaultdict(list)
    for partition, records in log.items():
        for offset, value in records:
            where[value].append((partition, offset))
    twice = [v for v, places in where.items() if len(places) > 1]
    if twice:
        problems.append(f"{len(twice)} records appear more than once, e.g. {twice[:3]}")
    lost = [v for v in acked if v not in where]
    if lost:
        problems.append(f"{len(lost)} acknowledged records are missing, e.g. {lost[:3]}")
    moved = [v for v, place in acked.items() if v in where and place not in where[v]]
    if moved:
        problems.append(f"{len(moved)} records are not where their ack said, e.g. {moved[:3]}")
    position = {v: places[0] for v, places in where.items()}
    last: dict[int, int] = {}
    for value in sent_order:
        if value not in position:
            continue
        partition, offset = position[value]
        if offset <= last.get(partition, -1):
            problems.append(f"{value!r} was sent after a record written at a higher offset")
            break
        last[partition] = offset
    return problems


def test_the_exactly_once_check_catches_duplicates_losses_and_reorders() -> None:
    acked = {b"a": (0, 0), b"b": (0, 1), b"c": (0, 2)}
    order = [b"a", b"b", b"c"]
    good = {0: [(0, b"a"), (1, b"b"), (2, b"c")]}
    assert exactly_once_problems(acked, order, good) == []
    duplicated = {0: [(0, b"a"), (1, b"b"), (2, b"b"), (3, b"c")]}
    assert any("more than once" in p for p in exactly_once_problems(acked, order, duplicated))
    lost = {0: [(0, b"a"), (1, b"b")]}
    assert any("missing" in p for p in exactly_once_problems(acked, order, lost))
    moved = {0: [(0, b"a"), (1, b"c"), (2, b"b")]}
    problems = exactly_once_problems({b"a": (0, 0), b"b": (0, 1)}, [b"a", b"b"], moved)
    assert problems == ["1 records are not where their ack said, e.g. [b'b']"]
    reordered = {0: [(0, b"a"), (1, b"c"), (2, b"b")]}
    problems = exactly_once_problems({b"a": (0, 0)}, order, reordered)
    assert any("sent after" in p for p in problems)


# --- integration: real node processes ------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    yield from run_local_cluster(
        tmp_path_factory,
        "sdk-producer",
        [TopicSpec("keys", partitions=3), TopicSpec("kill", partitions=1), TopicSpec("close", 2)],
    )


async def read_back(cluster: LocalCluster, topic: str, partitions: int) -> dict[int, list[tuple[int, bytes]]]:
    """Every record of ``topic`` from offset 0 to the high watermark."""
    consumer = Consumer(bootstrap(cluster), api_key=cluster.api_key, fetch_max_wait_ms=100)
    try:
        tps = [(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_end()
        ends = {p: consumer.position((topic, p)) for p in range(partitions)}
        await consumer.seek_to_beginning()
        log: dict[int, list[tuple[int, bytes]]] = {p: [] for p in range(partitions)}
        deadline = time.monotonic() + 30
        while any(consumer.position((topic, p)) != ends[p] for p in range(partitions)):
            assert time.monotonic() < deadline, "could not read back to the high watermark"
            for record in await consumer.poll(1.0):
                assert record.value is not None
                log[record.partition].append((record.offset, record.value))
        for p, records in log.items():
            assert [o for o, _ in records] == list(range(ends[p] or 0)), f"partition {p}: offsets have gaps"
        return log
    finally:
        await consumer.close()


async def test_ten_thousand_keyed_records_keep_key_and_partition_order(cluster: LocalCluster) -> None:
    keys = [f"key-{k}".encode() for k in range(37)]
    sent: list[tuple[bytes, bytes]] = []
    async with Producer(bootstrap(cluster), api_key=cluster.api_key, linger_ms=5) as producer:
        futures = []
        for i in range(10_000):
            key = keys[i % len(keys)]
            value = f"{key.decode()}:{i:05d}".encode()
            sent.append((key, value))
            futures.append(await producer.send("keys", value, key=key))
        await producer.flush()
        results = [f.result() for f in futures]
    acked = {value: (r.partition, r.offset) for (_, value), r in zip(sent, results, strict=True)}
    assert len(acked) == 10_000
    for (key, _), r in zip(sent, results, strict=True):
        assert r.partition == key_partition(key, 3)
    log = await read_back(cluster, "keys", 3)
    assert sum(len(v) for v in log.values()) == 10_000
    assert exactly_once_problems(acked, [v for _, v in sent], log) == []
    # Per key: read back in the order sent.
    read_order: dict[bytes, list[bytes]] = defaultdict(list)
    for p in sorted(log):
        for _, value in log[p]:
            read_order[value.split(b":")[0]].append(value)
    for key in keys:
        assert read_order[key] == [v for k, v in sent if k == key]


async def test_close_after_sends_loses_nothing(cluster: LocalCluster) -> None:
    producer = Producer(bootstrap(cluster), api_key=cluster.api_key, linger_ms=200)
    futures = [await producer.send("close", f"c{i}".encode()) for i in range(3000)]
    await producer.close()  # no flush first: close must deliver everything
    assert all(f.done() and f.exception() is None for f in futures)
    log = await read_back(cluster, "close", 2)
    values = sorted(v for records in log.values() for _, v in records)
    assert values == sorted(f"c{i}".encode() for i in range(3000))


async def leader_of(producer: Producer, topic: str, partition: int) -> int:
    node = producer.metadata.leader_node(topic, partition)
    while node is None:
        await producer.metadata.refresh([topic])
        node = producer.metadata.leader_node(topic, partition)
        await asyncio.sleep(0.05)
    return node


@pytest.mark.slow
async def test_leader_sigkill_while_producing_every_acknowledged_record_once(cluster: LocalCluster) -> None:
    idempotent = os.environ.get("RAFTLOG_TEST_IDEMPOTENT", "1") != "0"
    rounds = 3
    producer = Producer(
        bootstrap(cluster),
        api_key=cluster.api_key,
        linger_ms=2,
        max_batch_bytes=8 * 1024,
        idempotent=idempotent,
        delivery_timeout_s=60,
        request_timeout_s=5,
    )
    acked: dict[bytes, tuple[int, int]] = {}
    sent_order: list[bytes] = []
    stop = asyncio.Event()

    async def produce() -> None:
        pending: deque[tuple[bytes, asyncio.Future[RecordMetadata]]] = deque()
        i = 0
        while not stop.is_set() or pending:
            if not stop.is_set():
                value = f"r{i:07d}".encode()
                i += 1
                sent_order.append(value)
                pending.append((value, await producer.send("kill", value, partition=0)))
            if len(pending) >= 300 or (stop.is_set() and pending):
                value, future = pending.popleft()
                metadata = await future
                acked[value] = (metadata.partition, metadata.offset)
            elif i % 50 == 0:
                await asyncio.sleep(0)  # let acks in

    task = asyncio.create_task(produce())
    try:
        for _ in range(rounds):
            await asyncio.sleep(0.6)
            victim = await leader_of(producer, "kill", 0)
            before = len(acked)
            await asyncio.to_thread(cluster.kill, victim)
            await asyncio.sleep(0.3)
            await asyncio.to_thread(cluster.start, victim)
            deadline = time.monotonic() + 20
            while len(acked) < before + 500:
                assert time.monotonic() < deadline, "no progress within 20 s of a leader kill"
                assert not task.done(), task
                await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
        await producer.close()
    stats = producer.stats
    print(f"idempotent={idempotent} acked={len(acked)} sent={len(sent_order)} stats={stats}")
    assert stats.retries > 0, "the kills never reached the producer: the test proved nothing"
    log = await read_back(cluster, "kill", 1)
    values = [v for _, v in log[0]]
    assert set(values) <= set(sent_order), "records nobody sent"
    assert exactly_once_problems(acked, sent_order, log) == []
