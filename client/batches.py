"""What a ``Producer`` holds while records travel: their batches, one queue
per partition, and the byte budget that makes ``send`` wait.

- ``RecordMetadata``, ``ProducerStats``: what the producer reports.
- ``record_size_bound``: what a record may take in a batch (the budget and
  the batch size limit count with it).
- ``Batch``: records on their way to one partition, with their futures;
  its request bytes are fixed at the first attempt.
- ``PartitionQueue``: one partition's open, ready and in-flight batches and
  its idempotence state (producer id, epoch, next sequence).
- ``ByteBudget``: bounds the bytes held; waiters are served in arrival
  order.

Invariants:

- Only a partition's sender task takes batches out of its queue; ``send``
  and ``flush`` put them in.
- ``ByteBudget.used`` is the sum of the sizes acquired and not released; a
  record larger than the whole budget is admitted when nothing else is
  held, so it can never wait forever.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass, field
from typing import NamedTuple

from client.errors import RaftlogError
from client.metadata import TopicPartition
from raftlog.v1 import log_pb2
from raftlog.v1.record_batch import HEADER_SIZE, Record

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "SEQUENCE_MODULUS",
    "Batch",
    "ByteBudget",
    "PartitionQueue",
    "ProducerStats",
    "RecordMetadata",
    "record_size_bound",
]

DEFAULT_MAX_REQUEST_BYTES = 1 << 20
"""The server's default maximum batch size (1 MiB)."""

SEQUENCE_MODULUS = 2**31


class RecordMetadata(NamedTuple):
    """Where an acknowledged record was written. A NamedTuple: one is built
    per record, and a frozen dataclass costs about four times as much."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int


@dataclass(slots=True)
class ProducerStats:
    """Counters for monitoring and tests (mutated by the producer)."""

    batches: int = 0
    """Batches acknowledged."""
    records: int = 0
    """Records acknowledged."""
    requests: int = 0
    """Produce calls sent (first attempts and retries)."""
    retries: int = 0
    duplicates: int = 0
    """Retries the server recognised as already written."""
    errors: dict[str, int] = field(default_factory=dict)
    """Failed attempts by reason."""


def _uvarint_len(n: int) -> int:
    length = 1
    while n >= 0x80:
        n >>= 7
        length += 1
    return length


def record_size_bound(record: Record) -> int:
    """An upper bound on the bytes ``record`` takes in a batch (its frame).
    Exact but for the timestamp and offset deltas, counted at their
    largest (10 and 5 bytes)."""
    body = 1 + 10 + 5
    for part in (record.key, record.value):
        body += 1 if part is None else _uvarint_len(len(part) << 1) + len(part)
    if not record.headers:
        return _uvarint_len(body + 1) + body + 1
    body += _uvarint_len(len(record.headers))
    for name, value in record.headers:
        encoded = len(name.encode("utf-8"))
        body += _uvarint_len(encoded) + encoded + _uvarint_len(len(value)) + len(value)
    return _uvarint_len(body) + body


class Batch:
    """Records on their way to one partition, with their futures."""

    __slots__ = (
        "base_sequence",
        "created",
        "done",
        "futures",
        "maybe_committed",
        "records",
        "request",
        "size",
    )

    def __init__(self, created: float, done: asyncio.Future[None]) -> None:
        self.records: list[Record] = []
        self.futures: list[asyncio.Future[RecordMetadata]] = []
        self.size = HEADER_SIZE
        self.created = created
        self.request: log_pb2.ProduceRequest | None = None  # fixed at the first attempt
        self.base_sequence = -1
        # True once an attempt ended in a way that may have committed it.
        self.maybe_committed = False
        self.done = done  # resolved (None) when every future is


class PartitionQueue:
    """One partition's batches and sender state. Only its sender task
    takes batches out; ``send`` and ``flush`` put them in."""

    __slots__ = (
        "epoch",
        "in_flight",
        "last",
        "needs_new_identity",
        "next_sequence",
        "open",
        "producer_id",
        "ready",
        "task",
        "tp",
        "wakeup",
    )

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.open: Batch | None = None
        self.ready: deque[Batch] = deque()
        self.in_flight: Batch | None = None
        self.last: Batch | None = None  # the newest batch: done => all done
        self.wakeup = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.producer_id = -1
        self.epoch = -1
        self.next_sequence = 0
        self.needs_new_identity = False

    def batches(self) -> list[Batch]:
        """Every batch not yet finished, oldest first."""
        found = [b for b in (self.in_flight, *self.ready, self.open) if b is not None]
        return [b for b in found if not b.done.done()]


class ByteBudget:
    """Bounds the record bytes held by the producer. Waiters are served in
    arrival order; a record larger than the whole budget is admitted when
    nothing else is held."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._waiters: deque[tuple[int, asyncio.Future[None]]] = deque()
        self._closed: RaftlogError | None = None

    def try_acquire(self, n: int) -> bool:
        """Take ``n`` bytes if that needs no wait (the common case, without
        the cost of a coroutine); False otherwise, nothing taken."""
        if self._closed is None and not self._waiters and (self.used + n <= self.limit or self.used == 0):
            self.used += n
            return True
        return False

    async def acquire(self, n: int) -> None:
        if self._closed is not None:
            raise self._closed
        if self.try_acquire(n):
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (n, future)
        self._waiters.append(entry)
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                self.release(n)  # granted just as we were cancelled
            elif entry in self._waiters:
                self._waiters.remove(entry)
                self._wake()
            raise

    def release(self, n: int) -> None:
        self.used -= n
        self._wake()

    def _wake(self) -> None:
        while self._waiters:
            n, future = self._waiters[0]
            if future.done():
                self._waiters.popleft()
                continue
            if self.used + n > self.limit and self.used > 0:
                return
            self._waiters.popleft()
            self.used += n
            future.set_result(None)

    def close(self, error: RaftlogError) -> None:
        self._closed = error
        while self._waiters:
            _, future = self._waiters.popleft()
            if not future.done():
                future.set_exception(error)
