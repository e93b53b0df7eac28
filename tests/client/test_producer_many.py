"""``Producer.send_many``: many records to one partition with one check, one
buffer wait and one future per batch they land in (``RecordRun``), against
the scripted ``FakeCluster`` of test_producer.py. The producer's invariants
hold for them as for ``send``: order, batch size, idempotence, the byte
budget, every run's future resolved once with its batch's fate."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from client import (
    ClientClosedError,
    DeliveryTimeoutError,
    InvalidBatchError,
    Producer,
    RecordMetadata,
    RecordTooLargeError,
    UnknownTopicOrPartitionError,
)
from client.batches import _uvarint_len
from client.producer import Record, RecordRun
from raftlog.v1.record_batch import _uvarint_bytes
from tests.client.test_producer import FakeCluster, Step, fake, header_of, service_error

__all__ = ["fake"]  # the fixture, imported for pytest

pytestmark = pytest.mark.timeout(60)


def records(prefix: str, n: int, size: int = 10, ts: int = 1_000) -> list[Record]:
    return [
        Record(value=f"{prefix}{i}".encode().ljust(size, b"."), key=f"k{i}".encode(), timestamp_ms=ts + i)
        for i in range(n)
    ]


def covered(runs: list[RecordRun]) -> list[int]:
    """The offset of every record of ``runs`` (each run's first, then consecutive)."""
    return [run.first.result().offset + i for run in runs for i in range(run.record_count)]


async def test_a_group_keeps_its_order_between_single_sends_and_fills_batches(fake: FakeCluster) -> None:
    group = records("g", 40, size=200)
    async with Producer(fake.addresses, linger_ms=50, max_batch_bytes=2048) as producer:
        before = await producer.send("t", b"before", partition=0)
        runs = await producer.send_many("t", group, partition=0)
        after = await producer.send("t", b"after", partition=0)
        await producer.flush()
        assert producer._budget.used == 0, "every byte taken is given back"
    assert len(runs) > 1 and sum(run.record_count for run in runs) == 40
    assert (await before).offset == 0 and (await after).offset == 41
    assert covered(runs) == list(range(1, 41))
    stored = fake.records("t", 0)
    assert [r.value for r in stored] == [b"before", *(r.value for r in group), b"after"]
    assert [(r.key, r.timestamp_ms) for r in stored[1:41]] == [(r.key, r.timestamp_ms) for r in group]
    sizes = [len(b) for b in fake.batches_sent()]
    assert max(sizes) <= 2048 and len(sizes) == len(runs), "one run per batch the group landed in"
    first = runs[0].first.result()
    assert first == RecordMetadata("t", 0, 1, group[0].timestamp_ms)


async def test_a_group_within_a_batch_is_one_run_and_one_request(fake: FakeCluster) -> None:
    async with Producer(fake.addresses, linger_ms=20) as producer:
        runs = await producer.send_many("t", records("a", 500), partition=1)
        assert len(runs) == 1 and runs[0].record_count == 500
        assert (await runs[0].first).offset == 0
        assert await producer.send_many("t", [], partition=1) == []
    assert len(fake.requests) == 1
    assert [header_of(b) for b in fake.batches_sent()] == [(1001, 0, 500)]


async def test_a_record_larger_than_a_batch_travels_alone(fake: FakeCluster) -> None:
    group = [Record(b"s", timestamp_ms=1), Record(b"L" * 5000, timestamp_ms=2), Record(b"t", timestamp_ms=3)]
    async with Producer(fake.addresses, linger_ms=0, max_batch_bytes=1024) as producer:
        runs = await producer.send_many("t", group, partition=0)
        await producer.flush()
    assert [run.record_count for run in runs] == [1, 1, 1]
    assert covered(runs) == [0, 1, 2]
    assert [h[2] for h in map(header_of, fake.batches_sent())] == [1, 1, 1]


async def test_refusals_queue_nothing(fake: FakeCluster) -> None:
    async with Producer(fake.addresses, linger_ms=0) as producer:
        good = records("x", 3)
        with pytest.raises(RecordTooLargeError):
            await producer.send_many("t", [*good, Record(b"x" * (1 << 20), timestamp_ms=1)], partition=0)
        with pytest.raises(UnknownTopicOrPartitionError):
            await producer.send_many("t", good, partition=2)
        with pytest.raises(UnknownTopicOrPartitionError):
            await producer.send_many("nope", good, partition=0)
        with pytest.raises(TypeError):
            await producer.send_many("t", [*good, Record("text", timestamp_ms=1)], partition=0)  # type: ignore[arg-type]
        with pytest.raises(TypeError):
            bad_header = Record(b"v", headers=(("h", "text"),), timestamp_ms=1)  # type: ignore[arg-type]
            await producer.send_many("t", [bad_header], partition=0)
        with pytest.raises(ValueError):
            await producer.send_many("t", [*good, Record(b"v", timestamp_ms=-1)], partition=0)
        assert producer._budget.used == 0
        await producer.flush()
        assert fake.requests == []
        # Bytes-like values and headers are taken (as bytes), like send's.
        runs = await producer.send_many(
            "t",
            [Record(bytearray(b"ba"), key=memoryview(b"mv"), headers=(("h", b"1"),), timestamp_ms=5)],  # type: ignore[arg-type]
            partition=0,
        )
        assert (await runs[0].first).offset == 0
    (stored,) = fake.records("t", 0)
    assert (stored.value, stored.key, stored.headers, stored.timestamp_ms) == (
        b"ba",
        b"mv",
        (("h", b"1"),),
        5,
    )
    with pytest.raises(ClientClosedError):
        await producer.send_many("t", records("late", 1), partition=0)


async def test_a_group_waits_for_buffer_room_for_all_its_records(fake: FakeCluster) -> None:
    fake.gate = asyncio.Event()
    async with Producer(fake.addresses, linger_ms=0, buffer_bytes=4000) as producer:
        await producer.send("t", b"x" * 2000, partition=0)
        group = records("g", 2, size=1000)  # ~2,040 bytes: does not fit beside the 2,000 held
        blocked = asyncio.create_task(producer.send_many("t", group, partition=0))
        await asyncio.sleep(0.1)
        assert not blocked.done()
        fake.gate.set()
        runs = await blocked
        await producer.flush()
        assert covered(runs) == [1, 2]
        # A group larger than the whole buffer is admitted once nothing else is held.
        huge = await producer.send_many("t", records("h", 10, size=1000), partition=0)
        await producer.flush()
        assert covered(huge) == list(range(3, 13))
        assert producer._budget.used == 0


async def test_a_refused_batch_fails_its_run_and_gives_its_sequence_numbers_on(fake: FakeCluster) -> None:
    fake.script.append(Step(service_error(grpc.StatusCode.INVALID_ARGUMENT, "CORRUPT_BATCH")))
    async with Producer(fake.addresses, linger_ms=0) as producer:
        (refused,) = await producer.send_many("t", records("a", 3), partition=0)
        with pytest.raises(InvalidBatchError):
            await refused.first
        (accepted,) = await producer.send_many("t", records("b", 2), partition=0)
        assert (await accepted.first).offset == 0
    assert [header_of(b) for b in fake.batches_sent()] == [(1001, 0, 3), (1001, 0, 2)]
    assert [r.value for r in fake.records("t", 0)] == [r.value for r in records("b", 2)]


async def test_a_lost_ack_is_retried_with_the_same_bytes_and_written_once(fake: FakeCluster) -> None:
    fake.script.append(Step(service_error(grpc.StatusCode.UNAVAILABLE, "OUTCOME_UNKNOWN"), commit=True))
    async with Producer(fake.addresses, linger_ms=0, retry_backoff_ms=1) as producer:
        (run,) = await producer.send_many("t", records("a", 5), partition=0)
        assert (await run.first).offset == 0
        (later,) = await producer.send_many("t", records("b", 1), partition=0)
        assert (await later.first).offset == 5
    first, retry, _ = fake.batches_sent()
    assert first == retry
    assert len(fake.records("t", 0)) == 6 and producer.stats.duplicates == 1


async def test_giving_up_fails_every_run_of_the_batch(fake: FakeCluster) -> None:
    for _ in range(1000):
        fake.script.append(Step(service_error(grpc.StatusCode.UNAVAILABLE, "UNAVAILABLE")))
    async with Producer(
        fake.addresses, linger_ms=50, delivery_timeout_s=0.3, retry_backoff_ms=20
    ) as producer:
        runs = [*await producer.send_many("t", records("a", 2), partition=0)]
        runs += await producer.send_many("t", records("b", 2), partition=0)
        assert len(runs) == 2, "two calls within the linger share one batch, one run each"
        for run in runs:
            with pytest.raises(DeliveryTimeoutError):
                await run.first
        fake.script.clear()
        assert producer._budget.used == 0


async def test_close_with_a_timeout_fails_pending_runs(fake: FakeCluster) -> None:
    fake.gate = asyncio.Event()
    producer = Producer(fake.addresses, linger_ms=0)
    (in_flight,) = await producer.send_many("t", records("a", 2), partition=0)
    await asyncio.sleep(0.1)
    (queued,) = await producer.send_many("t", records("b", 2), partition=0)
    await producer.close(timeout_s=0.2)
    for run in (in_flight, queued):
        with pytest.raises(ClientClosedError):
            async with asyncio.timeout(5):
                await run.first


async def test_a_group_waiting_for_room_when_close_begins_is_refused(fake: FakeCluster) -> None:
    fake.gate = asyncio.Event()
    producer = Producer(fake.addresses, linger_ms=0, buffer_bytes=3000)
    held = await producer.send("t", b"x" * 2000, partition=0)
    blocked = asyncio.create_task(producer.send_many("t", records("g", 2, size=1000), partition=0))
    await asyncio.sleep(0.05)
    closing = asyncio.create_task(producer.close())
    await asyncio.sleep(0.05)
    fake.gate.set()  # the held record is delivered: room for the group, but the producer is closing
    with pytest.raises(ClientClosedError):
        await blocked
    await closing
    assert (await held).offset == 0
    assert [r.value for r in fake.records("t", 0)] == [b"x" * 2000]


def test_uvarint_len_is_the_encoded_length() -> None:
    edges = [0, 1, 127, 128, 16383, 16384, 2**21 - 1, 2**21, 2**28 - 1, 2**28, 2**35, 2**49, 2**63 - 1]
    for n in edges:
        assert _uvarint_len(n) == len(_uvarint_bytes(n)), n
