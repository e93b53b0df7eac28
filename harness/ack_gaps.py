"""A paced producer workload for failover drills: it records when each
partition's records were acknowledged, so a drill can measure how long a
fault stalled each partition, and checks the partitions' logs against the
acknowledgements afterwards.

``PacedWriters`` runs one task per partition that hands the producer one
record (of ``value_bytes``) every ``interval_s`` (a steady stream, whatever the acknowledgements
do) and records, from each record's future, its offset and the moment it
was acknowledged. ``longest_gap`` is the longest time a partition went
without an acknowledgement; ``check_partition_log`` compares a partition read
back from offset 0 with what was sent and acknowledged; ``read_partitions``
reads them back through the SDK's ``Consumer``.

Invariants:

- Record values name their partition and sequence number
  (``record_value``): the n-th record handed to the producer for a partition
  carries sequence n, so a log read back tells which record each entry is.
- Every sequence handed to ``Producer.send`` ends in exactly one of
  ``PartitionAcks.acks`` (with its offset and acknowledgement time) or
  ``PartitionAcks.errors``, once its future resolves; ``drain`` waits for
  that.
- ``longest_gap`` counts the trailing silence too: a partition that stopped
  acknowledging before the writers stopped has a gap up to ``stopped_at``.
- Times are ``time.monotonic()`` seconds throughout, so a drill can put its
  own fault times (pause, resume) on the same clock.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from client import Consumer, Producer, RecordMetadata

__all__ = [
    "Ack",
    "PacedWriters",
    "PartitionAcks",
    "check_partition_log",
    "longest_gap",
    "parse_value",
    "read_partitions",
    "record_value",
]


def record_value(partition: int, sequence: int, size: int = 0) -> bytes:
    """The value of a partition's ``sequence``-th record, padded to at
    least ``size`` bytes (a drill's records should weigh what a user's do)."""
    value = f"p{partition}-s{sequence:08d}".encode()
    return value + b"-" + b"." * (size - len(value) - 1) if size > len(value) else value


def parse_value(value: bytes | None) -> tuple[int, int] | None:
    """(partition, sequence) of a value made by ``record_value``; None for
    anything else."""
    if value is None:
        return None
    head, sep, rest = value.decode(errors="replace").partition("-s")
    tail = rest.split("-", 1)[0]
    if not sep or not head.startswith("p") or not head[1:].isdigit() or not tail.isdigit():
        return None
    return int(head[1:]), int(tail)


@dataclass(frozen=True, slots=True)
class Ack:
    sequence: int
    offset: int
    sent_at: float
    acked_at: float


@dataclass(slots=True)
class PartitionAcks:
    """What happened to one partition's records (mutated by the writer)."""

    partition: int
    sent: int = 0
    """Sequences 0..sent-1 were handed to the producer."""
    acks: list[Ack] = field(default_factory=list)
    """In the order the acknowledgements arrived."""
    errors: list[tuple[int, str]] = field(default_factory=list)
    """(sequence, error) of records whose future failed."""

    def ack_times(self) -> list[float]:
        return sorted(a.acked_at for a in self.acks)

    def max_latency(self) -> float:
        """Longest time from ``send`` to acknowledgement (0 with no acks)."""
        return max((a.acked_at - a.sent_at for a in self.acks), default=0.0)


def longest_gap(ack_times: Sequence[float], stopped_at: float) -> tuple[float, float]:
    """(longest gap, when it began) over a partition's acknowledgement
    times, from its first acknowledgement until the last one or, if none
    came at or after ``stopped_at``, until ``stopped_at``. No
    acknowledgement at all is a gap of infinity."""
    times = sorted(ack_times)
    if not times:
        return float("inf"), stopped_at
    longest, began = 0.0, times[0]
    for earlier, later in itertools.pairwise(times):
        if later - earlier > longest:
            longest, began = later - earlier, earlier
    if times[-1] < stopped_at and stopped_at - times[-1] > longest:
        longest, began = stopped_at - times[-1], times[-1]
    return longest, began


class PacedWriters:
    """One writer task per partition, each handing ``producer`` one record
    every ``interval_s`` until ``stop``; ``run`` returns once every writer
    has stopped sending (acknowledgements may still be on their way:
    ``drain`` waits for them)."""

    def __init__(
        self,
        producer: Producer,
        topic: str,
        partitions: Sequence[int],
        interval_s: float = 0.015,
        value_bytes: int = 0,
    ):
        self.producer = producer
        self.topic = topic
        self.interval_s = interval_s
        self.value_bytes = value_bytes
        self.partitions = {p: PartitionAcks(p) for p in partitions}
        self.stopped_at: float | None = None
        self._stop = asyncio.Event()
        self._pending: set[asyncio.Future[RecordMetadata]] = set()

    def stop(self) -> None:
        """Stop sending; ``stopped_at`` ends the measured window."""
        if self.stopped_at is None:
            self.stopped_at = time.monotonic()
        self._stop.set()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            for state in self.partitions.values():
                tasks.create_task(self._write(state))

    async def drain(self, timeout_s: float) -> int:
        """Wait up to ``timeout_s`` for every sent record's future; returns
        how many are still unresolved."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout_s)
        return len(self._pending)

    def acked_at_least(self, count: int) -> bool:
        return all(len(state.acks) >= count for state in self.partitions.values())

    async def _write(self, state: PartitionAcks) -> None:
        loop = asyncio.get_running_loop()
        next_send = loop.time()
        while not self._stop.is_set():
            sequence = state.sent
            sent_at = time.monotonic()
            future = await self.producer.send(
                self.topic,
                record_value(state.partition, sequence, self.value_bytes),
                partition=state.partition,
            )
            state.sent += 1
            self._pending.add(future)
            future.add_done_callback(functools.partial(self._resolved, state, sequence, sent_at))
            # A steady rate, not a burst to catch up after ``send`` waited
            # (for buffer room, say): a stall must show as a gap, not be
            # hidden by a flood of records afterwards.
            next_send = max(next_send + self.interval_s, loop.time())
            await asyncio.sleep(next_send - loop.time())

    def _resolved(
        self, state: PartitionAcks, sequence: int, sent_at: float, future: asyncio.Future[RecordMetadata]
    ) -> None:
        now = time.monotonic()
        self._pending.discard(future)
        if future.cancelled():
            state.errors.append((sequence, "cancelled"))
        elif (error := future.exception()) is not None:
            state.errors.append((sequence, repr(error)))
        else:
            state.acks.append(Ack(sequence, future.result().offset, sent_at, now))


def check_partition_log(state: PartitionAcks, log: Sequence[tuple[int, bytes | None]]) -> list[str]:
    """What is wrong with ``log`` (a partition's (offset, value) pairs read
    from offset 0) given what was sent and acknowledged: records lost,
    written twice, at another offset than acknowledged, out of send order,
    or never sent. An empty list: nothing."""
    problems: list[str] = []
    where: dict[int, int] = {}
    previous = -1
    for offset, value in log:
        parsed = parse_value(value)
        if parsed is None or parsed[0] != state.partition or not 0 <= parsed[1] < state.sent:
            problems.append(f"offset {offset}: {value!r} was never sent to partition {state.partition}")
            continue
        sequence = parsed[1]
        if sequence in where:
            problems.append(f"sequence {sequence} written twice: offsets {where[sequence]} and {offset}")
            continue
        if sequence < previous:
            problems.append(f"offset {offset}: sequence {sequence} after sequence {previous} (reordered)")
        where[sequence] = offset
        previous = max(previous, sequence)
    lost = [a.sequence for a in state.acks if a.sequence not in where]
    if lost:
        problems.append(f"{len(lost)} acknowledged records lost, sequences {lost[:5]}...")
    moved = [
        (a.sequence, a.offset, where[a.sequence])
        for a in state.acks
        if where.get(a.sequence, a.offset) != a.offset
    ]
    if moved:
        problems.append(f"acknowledged at one offset, found at another (sequence, acked, found): {moved[:5]}")
    return [f"partition {state.partition}: {p}" for p in problems]


async def read_partitions(
    bootstrap: Sequence[str], api_key: str, topic: str, partitions: Sequence[int], timeout_s: float = 30.0
) -> dict[int, list[tuple[int, bytes | None]]]:
    """Each partition's (offset, value) pairs from its log start up to the
    high watermark it had when the read began."""
    async with Consumer(list(bootstrap), api_key=api_key) as consumer:
        consumer.assign([(topic, p) for p in partitions])
        await consumer.seek_to_end()
        ends = {p: consumer.position((topic, p)) or 0 for p in partitions}
        await consumer.seek_to_beginning()
        found: dict[int, list[tuple[int, bytes | None]]] = {p: [] for p in partitions}
        deadline = asyncio.get_running_loop().time() + timeout_s
        while any((consumer.position((topic, p)) or 0) < ends[p] for p in partitions):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(
                    f"read { ({p: len(v) for p, v in found.items()}) } records of {topic}, "
                    f"ends {ends}, in {timeout_s} s"
                )
            for record in await consumer.poll(0.5):
                if record.offset < ends[record.partition]:
                    found[record.partition].append((record.offset, record.value))
        return found
