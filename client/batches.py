"""What a ``Producer`` holds while records travel: their batches, one queue
per partition, and the byte budget that makes ``send`` wait.

- ``RecordMetadata``, ``ProducerStats``: what the producer reports.
- ``RecordRun``: records of one ``Producer.send_many`` call that travel in
  one batch, with the one future that tells their fate.
- ``record_size_bound``: what a record may take in a batch (the budget and
  the batch size limit count with it).
- ``Batch``: records on their way to one partition, with their futures;
  its request bytes are fixed at the first attempt.
- ``PartitionQueue``: one partition's open, ready and in-flight batches and
  its idempotence state (producer id, epoch, next sequence); it fills its
  open batch (``add``, ``add_run``) up to the batch size target.
- ``ByteBudget``: bounds the bytes held; waiters are served in arrival
  order.
- ``as_bytes``, ``header_value``, ``checked_record``: the type checks and
  conversions of what ``send`` and ``send_many`` are given.

Invariants:

- Only a partition's sender task takes batches out of its queue; ``send``
  and ``flush`` put them in.
- A batch's ``waiters`` cover its records exactly, in order: each future
  stands for ``count`` consecutive records (1 for ``send``, a run for
  ``send_many``) and is resolved once, with the ``RecordMetadata`` of the
  first of them (the others follow at consecutive offsets) or with the
  batch's error: a batch commits or fails as a whole.
- A batch holds at most ``max_batch_bytes`` (its header and its records'
  ``record_size_bound``), except a record larger than that, which travels
  alone.
- ``ByteBudget.used`` is the sum of the sizes acquired and not released; a
  request larger than the whole budget is admitted when nothing else is
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
    "RecordRun",
    "as_bytes",
    "checked_record",
    "header_value",
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


class RecordRun(NamedTuple):
    """``count`` consecutive records of one ``Producer.send_many`` call, all
    in one batch. ``first`` resolves with the first one's ``RecordMetadata``
    once the batch committed (record ``i`` of the run is at ``offset + i``,
    with its own timestamp), or with the batch's error: none of the run is
    acknowledged then."""

    record_count: int
    first: asyncio.Future[RecordMetadata]


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
    # Records are mostly short: one or two bytes without a loop.
    if n < 0x80:
        return 1
    if n < 0x4000:
        return 2
    length = 3
    n >>= 21
    while n:
        n >>= 7
        length += 1
    return length


def record_size_bound(record: Record) -> int:
    """An upper bound on the bytes ``record`` takes in a batch (its frame).
    Exact but for the timestamp and offset deltas, counted at their
    largest (10 and 5 bytes). Runs for every record sent: kept flat."""
    value, key, headers, _ = record
    body = 1 + 10 + 5
    body += 1 if key is None else _uvarint_len(len(key) << 1) + len(key)
    body += 1 if value is None else _uvarint_len(len(value) << 1) + len(value)
    if not headers:
        return _uvarint_len(body + 1) + body + 1
    body += _uvarint_len(len(headers))
    for name, header_value in headers:
        encoded = len(name.encode("utf-8"))
        body += _uvarint_len(encoded) + encoded + _uvarint_len(len(header_value)) + len(header_value)
    return _uvarint_len(body) + body


class Batch:
    """Records on their way to one partition, with their futures (module
    invariants: ``waiters``)."""

    __slots__ = (
        "base_sequence",
        "created",
        "done",
        "maybe_committed",
        "records",
        "request",
        "size",
        "trace_context",
        "waiters",
    )

    def __init__(self, created: float, done: asyncio.Future[None]) -> None:
        self.records: list[Record] = []
        # (future, count): the future stands for `count` consecutive records.
        self.waiters: list[tuple[asyncio.Future[RecordMetadata], int]] = []
        self.size = HEADER_SIZE
        self.created = created
        self.request: log_pb2.ProduceRequest | None = None  # fixed at the first attempt
        self.base_sequence = -1
        # True once an attempt ended in a way that may have committed it.
        self.maybe_committed = False
        self.done = done  # resolved (None) when every future is
        # The OpenTelemetry context of its first record sent inside a span
        # (client/trace_context.py): its calls carry it. None: no span.
        self.trace_context: object | None = None

    def resolve(self, topic: str, partition: int, base_offset: int) -> None:
        """The batch committed at ``base_offset``: each pending waiter gets
        the metadata of its first record."""
        records = self.records
        index = 0
        for future, count in self.waiters:
            if not future.done():
                future.set_result(
                    RecordMetadata(topic, partition, base_offset + index, records[index].timestamp_ms)
                )
            index += count

    def fail(self, error: BaseException) -> None:
        """The batch failed: every pending waiter gets ``error``."""
        for future, _ in self.waiters:
            if not future.done():
                future.set_exception(error)


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

    def add(
        self,
        record: Record,
        size: int,
        future: asyncio.Future[RecordMetadata],
        max_batch_bytes: int,
        trace_context: object | None = None,
    ) -> None:
        """Append one record (``size``: its ``record_size_bound``) to the
        open batch, opening one (and closing a full one) as needed;
        ``trace_context``: the batch's, unless it has one already."""
        batch = self.open
        if batch is not None and batch.size + size > max_batch_bytes:
            self.close_open()
            batch = None
        if batch is None:
            batch = self._open_batch()
        if trace_context is not None and batch.trace_context is None:
            batch.trace_context = trace_context
        batch.records.append(record)
        batch.waiters.append((future, 1))
        batch.size += size
        if batch.size >= max_batch_bytes:
            self.close_open()

    def add_run(
        self,
        records: list[Record],
        sizes: list[int],
        max_batch_bytes: int,
        trace_context: object | None = None,
    ) -> list[RecordRun]:
        """Append ``records`` (``sizes``: their ``record_size_bound``), in
        order, as ``add`` would one by one, but with one future per batch
        they land in: the runs, in order."""
        loop = asyncio.get_running_loop()
        runs: list[RecordRun] = []
        end = len(records)
        i = 0
        while i < end:
            batch = self.open
            if batch is not None and batch.size + sizes[i] > max_batch_bytes:
                self.close_open()
                batch = None
            if batch is None:
                batch = self._open_batch()
            if trace_context is not None and batch.trace_context is None:
                batch.trace_context = trace_context
            # The first record always goes in (one larger than a batch travels alone).
            start = i
            size = batch.size + sizes[i]
            i += 1
            while i < end and size + sizes[i] <= max_batch_bytes:
                size += sizes[i]
                i += 1
            batch.records += records[start:i]
            batch.size = size
            run = RecordRun(i - start, loop.create_future())
            batch.waiters.append((run.first, run.record_count))
            runs.append(run)
            if size >= max_batch_bytes:
                self.close_open()
        return runs

    def close_open(self) -> None:
        """The open batch is ready to go (full, or flushed)."""
        if self.open is not None:
            self.ready.append(self.open)
            self.open = None
            self.wakeup.set()

    def _open_batch(self) -> Batch:
        loop = asyncio.get_running_loop()
        batch = self.open = self.last = Batch(loop.time(), loop.create_future())
        self.wakeup.set()  # the sender starts this batch's linger clock
        return batch

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


# --- preparing records (Producer.send, send_many) ---------------------------------


def as_bytes(data: object, what: str) -> bytes | None:
    """``data`` as bytes (bytes-like converted) or None; ``TypeError`` otherwise."""
    if data is None or isinstance(data, bytes):
        return data
    if isinstance(data, bytearray | memoryview):
        return bytes(data)
    raise TypeError(f"{what} must be bytes or None, not {type(data).__name__}; encode it first")


def checked_record(record: Record) -> Record:
    """``record`` with bytes-like fields as bytes; ``TypeError`` or
    ``ValueError`` (``send``'s) for what cannot be sent."""
    value, key, headers, timestamp_ms = record
    if type(timestamp_ms) is not int:
        raise TypeError(f"timestamp_ms must be an int, not {type(timestamp_ms).__name__}")
    if timestamp_ms < 0:
        raise ValueError(f"timestamp_ms must be >= 0, got {timestamp_ms}")
    return Record(
        value=as_bytes(value, "value"),
        key=as_bytes(key, "key"),
        headers=tuple((str(name), header_value(v)) for name, v in headers),
        timestamp_ms=timestamp_ms,
    )


def header_value(data: object) -> bytes:
    """A header value as bytes; ``TypeError`` for None or what is not bytes-like."""
    value = as_bytes(data, "a header value")
    if value is None:
        raise TypeError("a header value must be bytes, not None")
    return value
