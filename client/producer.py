"""``Producer``: batched, idempotent, acks=all writes to partitions.

How a record travels: ``send`` picks the partition (the one given, else the
partitioner's), waits for room in the producer's buffer (``buffer_bytes``),
appends the record to the partition's open batch and returns a future at
once. ``send_many`` does the same for many records to one partition with
one check, one wait and one future per batch they land in (``RecordRun``):
for callers that produce records by the thousand (the flag server's
exposures), where the per-record work of ``send`` is most of the cost. Each partition has one sender task that closes the open batch when it
is full (``max_batch_bytes``) or ``linger_ms`` after its first record (or at
``flush``), encodes it, sends it to the leader and resolves every record's
future with its offset once the batch has committed on a majority.

Invariants:

- One batch in flight per partition, and batches go out in the order their
  records were sent: records sent by one task to one partition are written
  in send order (a ``send_many`` call's in the order given, none of another
  call in between), and a retry never overtakes a later batch. (Two in
  flight, numbered at encoding, was measured at half the flat-out rate on
  3 local nodes and 2 cores: p99 156-168 ms against 117-124 with one,
  because twice the batches at half the size cost the nodes more CPU
  than the wait saves; bench/README.md, "Where it stops on this machine".)
- A batch's bytes are fixed when it is first encoded (producer id, epoch,
  base sequence); every retry of it sends exactly those bytes, so the
  partition's dedup window answers a retry of a batch that did commit with
  the original offsets instead of appending it again. How batches are
  numbered, and when a partition switches to a fresh producer id, is
  client/producer_ids.py's (``ProducerIds``).
- Every record's future (a ``RecordRun``'s for its records) is resolved
  exactly once: with ``RecordMetadata``, or with a ``RaftlogError`` (definite refusals, ``DeliveryTimeoutError``
  after ``delivery_timeout_s``, ``ClientClosedError`` if ``close`` gave up).
- ``close()`` waits until every record accepted by ``send`` is acknowledged
  or failed, then cancels and awaits the sender tasks and closes channels.

Retries: ``NOT_LEADER`` (straight to the named leader, else after a fresh
metadata lookup), ``OUTCOME_UNKNOWN``, ``UNAVAILABLE``,
``DEADLINE_EXCEEDED``, leader unknown, and ``BACKPRESSURE`` (no sooner than
its ``retry_after_ms``), with capped exponential backoff and jitter, until
``delivery_timeout_s`` after the batch was opened. Everything else fails the
batch's records. Without idempotence (``idempotent=False``) retries may
write a batch twice: delivery is at least once.

Silent leaders and the produce attempt timeout (``PRODUCE_ATTEMPT_TIMEOUT_S``,
1 s like every call's): why not rely on keepalive and wait longer. A
produce that times out is sent again, and a leader that is slow, not gone,
appends the copy before its sequence check at apply drops it (the copy is
replicated and fsynced in full), and the timeout marks the node suspect
and forgets its leaderships: load added when the cluster is overloaded.
Measured (3 local nodes, a flat-out producer, 2 shared cores at load 5-13,
30 s runs): produce calls took up to 1.1-1.8 s (p99 0.7-1.5 s); with 1 s
0.1-1.5 % of them timed out (up to 16 in 30 s, as many resends and suspect
marks), with 1.5 s 12 of 1412, with 10 s none; in no run did the resends
grow, fail records or cut throughput beyond the runs' noise. Keepalive
(client/metadata.py) cannot take over: its ping goes a second after the
last byte read, so on a connection carrying answers a paused leader is
noticed about 2 s after it stopped; the pause drill
(tests/integration/test_pause_drill.py) then stalled its partition 2.06 s
(over the drill's 2 s bound; 1.2 s in another run) against 1.05 s with a
1 s attempt timeout. So the attempt timeout stays the silence detector for
produces; a cluster known to answer slower than a second under load should
be given a larger ``attempt_timeout_s``. Metadata and ``InitProducer``
calls never take longer than 1 s: any node answers them and a retry costs
nothing.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from types import TracebackType

from client.batches import (
    DEFAULT_MAX_REQUEST_BYTES,
    Batch,
    ByteBudget,
    PartitionQueue,
    ProducerStats,
    RecordMetadata,
    RecordRun,
    as_bytes,
    checked_record,
    header_value,
    record_size_bound,
)
from client.errors import (
    ClientClosedError,
    DeliveryTimeoutError,
    OutcomeUnknownError,
    ProducerFencedError,
    RaftlogError,
    RecordTooLargeError,
    RequestTimeoutError,
    ServerError,
    UnavailableError,
    UnknownProducerIdError,
    UnknownTopicOrPartitionError,
)
from client.leader_calls import (
    ATTEMPT_TIMEOUT_S,
    LeaderCalls,
    NodeRoute,
    PartitionRoute,
    UnaryCall,
    Verdict,
)
from client.metadata import MetadataCache, TopicPartition, client_transport
from client.partitioner import DefaultPartitioner, Partitioner
from client.producer_ids import ProducerIds
from client.trace_context import call_in, current_trace_context, untraced
from raftlog.v1 import log_pb2
from raftlog.v1.record_batch import HEADER_SIZE, Record

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "PRODUCE_ATTEMPT_TIMEOUT_S",
    "Producer",
    "ProducerStats",
    "Record",
    "RecordMetadata",
    "RecordRun",
    "record_size_bound",
]

PRODUCE_ATTEMPT_TIMEOUT_S = ATTEMPT_TIMEOUT_S
"""Default deadline of one ``Produce`` attempt: the call path's second (the
module docstring says why not longer)."""

# Errors after which a produce that reached a node may have committed.
_UNCERTAIN = (OutcomeUnknownError, UnavailableError, RequestTimeoutError, ServerError)


class Producer:
    """Sends records to partitions; see the module docstring.

    Use from one event loop, as ``async with Producer(...) as producer:`` or
    with an explicit ``await producer.close()``.

    ``bootstrap``: one or more node addresses (``"host:port"``, a list, or
    comma-separated). ``linger_ms``: how long a batch waits for more records
    after its first. ``max_batch_bytes``: batch size target (a record larger
    than it travels alone); by default the server's limit, 1 MiB, because
    the nodes' cost is largely per batch (``python -m bench.batch_sizes``,
    1 KiB records flat out: the three nodes spent 52.7 ms of CPU per MB
    with 256 KiB batches and 39.4 ms with 1 MiB, for 29.6 against 39.8
    MB/s). ``max_request_bytes``: the server's batch limit; a record that
    cannot fit is refused by ``send``. ``buffer_bytes``: bytes
    held (queued and in flight) before ``send`` waits. ``idempotent``:
    exactly-once writes per partition (needs ``InitProducer``).
    ``delivery_timeout_s``: how long a batch is retried before its records
    fail. ``attempt_timeout_s``: how long one ``Produce`` attempt waits for
    the leader before the batch is sent again (to the leader the cluster
    names then); short, so a paused leader costs about a second, but a
    leader slower than it is sent the batch again (module docstring).
    ``request_timeout_s``: the most one
    attempt may take (caps ``attempt_timeout_s``).
    ``metadata_timeout_s``: how long ``send`` waits for a topic's metadata
    while no node answers. ``partitioner``: see ``client.partitioner``.
    ``api_key``, ``tenant``: who is calling (``client.auth``).
    ``address_map``: advertised node address -> address to dial.
    ``tls_ca``: the cluster's CA certificate file for TLS (None:
    ``$RAFTLOG_TLS_CA``, else plaintext; ``client.auth``).
    """

    def __init__(
        self,
        bootstrap: str | Sequence[str],
        *,
        linger_ms: float = 5.0,
        max_batch_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        buffer_bytes: int = 32 << 20,
        idempotent: bool = True,
        delivery_timeout_s: float = 120.0,
        request_timeout_s: float = 10.0,
        attempt_timeout_s: float = PRODUCE_ATTEMPT_TIMEOUT_S,
        retry_backoff_ms: float = 20.0,
        retry_backoff_max_ms: float = 1000.0,
        metadata_timeout_s: float = 60.0,
        partitioner: Partitioner | None = None,
        api_key: str | None = None,
        tenant: str | None = None,
        address_map: Mapping[str, str] | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
    ) -> None:
        if not HEADER_SIZE < max_batch_bytes <= max_request_bytes:
            raise ValueError(
                f"need {HEADER_SIZE} < max_batch_bytes <= max_request_bytes, "
                f"got {max_batch_bytes} and {max_request_bytes}"
            )
        if (
            linger_ms < 0
            or min(delivery_timeout_s, request_timeout_s, attempt_timeout_s) <= 0
            or buffer_bytes < 1
        ):
            raise ValueError("linger_ms must be >= 0; timeouts and buffer_bytes must be > 0")
        attempt_timeout_s = min(attempt_timeout_s, request_timeout_s)
        # GetMetadata and InitProducer: any node answers, a retry costs nothing.
        lookup_timeout_s = min(attempt_timeout_s, ATTEMPT_TIMEOUT_S)
        self._pool, self._metadata, self._backoff = client_transport(
            bootstrap,
            request_timeout_s=lookup_timeout_s,
            retry_backoff_ms=retry_backoff_ms,
            retry_backoff_max_ms=retry_backoff_max_ms,
            api_key=api_key,
            tenant=tenant,
            address_map=address_map,
            tls_ca=tls_ca,
        )
        self._linger_s = linger_ms / 1000
        self._max_batch_bytes = max_batch_bytes
        self._max_request_bytes = max_request_bytes
        self._ids = ProducerIds(self._pool, self._metadata, idempotent=idempotent, timeout_s=lookup_timeout_s)
        self._delivery_timeout_s = delivery_timeout_s
        self._calls = LeaderCalls(self._metadata, self._backoff, attempt_timeout_s=attempt_timeout_s)
        self._metadata_timeout_s = metadata_timeout_s
        self._partitioner: Partitioner = partitioner or DefaultPartitioner(sticky_bytes=max_batch_bytes)
        self._budget = ByteBudget(buffer_bytes)
        # Keyed by plain (topic, partition) tuples (equal to TopicPartition's).
        self._queues: dict[tuple[str, int], PartitionQueue] = {}
        self._fatal: RaftlogError | None = None
        self._closing = False
        self._closed = False
        self.stats = ProducerStats()

    # --- public API ---------------------------------------------------------------

    async def __aenter__(self) -> Producer:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @property
    def metadata(self) -> MetadataCache:
        """The producer's view of the cluster (leaders are hints)."""
        return self._metadata

    async def send(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None = None,
        headers: Iterable[tuple[str, bytes]] = (),
        partition: int | None = None,
        timestamp_ms: int | None = None,
    ) -> asyncio.Future[RecordMetadata]:
        """Queue one record; returns a future of its ``RecordMetadata``
        (set once the record committed) or of its error.

        Returns as soon as the record is queued: waits only for the topic's
        metadata on first use and for buffer room. Raises here (nothing
        queued) for a closed or fenced producer (``ClientClosedError``,
        ``ProducerFencedError``), an unknown topic or partition, a record
        too large for any batch (``RecordTooLargeError``) or arguments of
        the wrong type (``TypeError``).
        """
        self._check_open()
        if value is not None and type(value) is not bytes:
            value = as_bytes(value, "value")
        if key is not None and type(key) is not bytes:
            key = as_bytes(key, "key")
        header_list = tuple((str(name), header_value(v)) for name, v in headers) if headers else ()
        if timestamp_ms is None:
            timestamp_ms = time.time_ns() // 1_000_000
        elif timestamp_ms < 0:
            raise ValueError(f"timestamp_ms must be >= 0, got {timestamp_ms}")
        record = Record(value=value, key=key, headers=header_list, timestamp_ms=timestamp_ms)
        size = record_size_bound(record)
        if HEADER_SIZE + size > self._max_request_bytes:
            raise RecordTooLargeError(
                f"a record of about {size} bytes cannot fit in a batch of at most "
                f"{self._max_request_bytes} bytes (the server's limit); send smaller records"
            )
        count = self._metadata.fresh_partition_count(topic)
        if count is None:
            count = await self._partition_count(topic)
        if partition is None:
            partition = self._partitioner.partition(topic, key, count, size)
        if not 0 <= partition < count:
            raise UnknownTopicOrPartitionError(
                f"topic {topic!r} has partitions 0..{count - 1}; partition {partition} does not exist",
                metadata={"topic": topic, "partition": str(partition)},
            )
        if not self._budget.try_acquire(size):
            await self._budget.acquire(size)
        if self._closing or self._fatal is not None:
            # close() began while we waited: its flush may not see this record.
            self._budget.release(size)
            self._check_open()
        future: asyncio.Future[RecordMetadata] = asyncio.get_running_loop().create_future()
        self._queue(topic, partition).add(
            record, size, future, self._max_batch_bytes, current_trace_context()
        )
        return future

    async def send_many(self, topic: str, records: Iterable[Record], *, partition: int) -> list[RecordRun]:
        """Queue ``records`` to ``partition``, in the order given and with
        no record of another call in between, as ``send`` would one by one
        but with one size check, one wait for buffer room and one future
        per batch they land in: the returned runs, in order (their counts
        add up to the records'; usually one run, more when the records
        fill batches). A run's future resolves with its first record's
        ``RecordMetadata`` (the others at the next offsets) or with its
        batch's error (none of the run is acknowledged then).

        Each record's ``timestamp_ms`` is used as given (``Record``'s
        default is 0: set it); ``value`` and ``key`` are bytes or None,
        header values bytes. Raises here, with nothing queued, for what
        ``send`` refuses (for any of the records) and for a negative
        timestamp. Waits for room for all the records at once, so a group
        larger than ``buffer_bytes`` waits until nothing else is held.
        """
        self._check_open()
        checked = list(records)
        sizes: list[int] = []
        for index, record in enumerate(checked):
            value, key, headers, timestamp_ms = record
            if (
                (value is not None and type(value) is not bytes)
                or (key is not None and type(key) is not bytes)
                or headers
                or type(timestamp_ms) is not int
                or timestamp_ms < 0
            ):
                record = checked[index] = checked_record(record)
            sizes.append(record_size_bound(record))
        if not checked:
            return []
        largest = max(sizes)
        if HEADER_SIZE + largest > self._max_request_bytes:
            raise RecordTooLargeError(
                f"a record of about {largest} bytes cannot fit in a batch of at most "
                f"{self._max_request_bytes} bytes (the server's limit); send smaller records"
            )
        count = self._metadata.fresh_partition_count(topic)
        if count is None:
            count = await self._partition_count(topic)
        if not 0 <= partition < count:
            raise UnknownTopicOrPartitionError(
                f"topic {topic!r} has partitions 0..{count - 1}; partition {partition} does not exist",
                metadata={"topic": topic, "partition": str(partition)},
            )
        total = sum(sizes)
        if not self._budget.try_acquire(total):
            await self._budget.acquire(total)
        if self._closing or self._fatal is not None:
            # close() began while we waited: its flush may not see these records.
            self._budget.release(total)
            self._check_open()
        return self._queue(topic, partition).add_run(
            checked, sizes, self._max_batch_bytes, current_trace_context()
        )

    async def flush(self) -> None:
        """Send every queued record now (ignoring linger) and wait until
        each was acknowledged or failed. Errors stay on the records'
        futures; flush itself does not raise them."""
        waits: list[asyncio.Future[None]] = []
        for q in self._queues.values():
            q.close_open()
            if q.last is not None and not q.last.done.done():
                waits.append(q.last.done)
        if waits:
            await asyncio.gather(*(asyncio.shield(w) for w in waits))

    async def close(self, timeout_s: float | None = None) -> None:
        """Stop accepting records, deliver everything already accepted
        (waiting at most ``timeout_s`` if given; records still pending then
        fail with ``ClientClosedError``), and release every resource."""
        if self._closed:
            return
        self._closing = True
        try:
            async with asyncio.timeout(timeout_s):
                await self.flush()
        except TimeoutError:
            pass
        finally:
            await self._shutdown()

    # --- internals: queueing ----------------------------------------------------

    async def _partition_count(self, topic: str) -> int:
        """The topic's partition count, retrying while no node answers (a
        cluster starting up) for at most ``metadata_timeout_s``, with the
        call path's waits (``max(backoff, retry_after)``)."""
        deadline = asyncio.get_running_loop().time() + self._metadata_timeout_s
        # No attempt names an address: the route is never asked or told.
        attempts = self._calls.attempts(NodeRoute(self._metadata), deadline)
        while True:
            try:
                return await self._metadata.partition_count(topic)
            except RaftlogError as error:
                await attempts.failed(None, error)  # raises when it is final
            self._check_open()

    def _check_open(self) -> None:
        if self._fatal is not None:
            raise self._fatal
        if self._closing:
            raise ClientClosedError("the producer is closed; create a new one to send more records")

    def _queue(self, topic: str, partition: int) -> PartitionQueue:
        q = self._queues.get((topic, partition))
        if q is None:
            tp = TopicPartition(topic, partition)
            q = self._queues[tp] = PartitionQueue(tp)
            q.task = asyncio.create_task(  # outlives the caller's span: client/trace_context.py
                self._run_partition(q), name=f"raftlog-producer-{tp.topic}-{tp.partition}", context=untraced()
            )
        return q

    # --- internals: the sender task of a partition ------------------------------

    async def _run_partition(self, q: PartitionQueue) -> None:
        while True:
            batch = await self._next_batch(q)
            q.in_flight = batch
            try:
                await self._deliver(q, batch)
            except Exception as exc:  # a bug must not leave the records' futures pending
                self._finish(batch, exc)
            # Not in a `finally`: when close() cancels this task mid-delivery,
            # the batch must stay findable so that close() can fail it.
            q.in_flight = None

    async def _next_batch(self, q: PartitionQueue) -> Batch:
        loop = asyncio.get_running_loop()
        while True:
            if q.ready:
                return q.ready.popleft()
            batch = q.open
            q.wakeup.clear()
            if batch is None:
                await q.wakeup.wait()
                continue
            delay = batch.created + self._linger_s - loop.time()
            if delay <= 0 or self._closing:
                q.open = None
                return batch
            try:
                async with asyncio.timeout(delay):
                    await q.wakeup.wait()
            except TimeoutError:
                pass

    async def _deliver(self, q: PartitionQueue, batch: Batch) -> None:
        """Send ``batch`` through the call path (client/leader_calls.py)
        until it is acknowledged, definitely refused, or out of time;
        resolve its futures accordingly. The path resends ``batch.request``
        unchanged; only a renumbering (below) builds it again."""
        renumbered = False
        attempts = 0

        async def prepare() -> None:
            if self._fatal is not None:
                raise self._fatal
            if batch.request is None:
                await self._ids.encode(q, batch)

        def invoke(address: str, timeout: float) -> UnaryCall[log_pb2.ProduceResponse]:
            nonlocal attempts
            if attempts:
                self.stats.retries += 1
            attempts += 1
            self.stats.requests += 1
            stub = self._pool.log(address)
            call: UnaryCall[log_pb2.ProduceResponse]
            if batch.trace_context is None:
                call = stub.Produce(batch.request, timeout=timeout)
            else:  # in the context of the batch's first traced send (client/trace_context.py)
                call = call_in(batch.trace_context, lambda: stub.Produce(batch.request, timeout=timeout))
            return call

        def on_error(error: RaftlogError, sent: bool) -> Verdict:
            nonlocal renumbered
            self.stats.errors[error.reason] = self.stats.errors.get(error.reason, 0) + 1
            if sent and isinstance(error, _UNCERTAIN):
                batch.maybe_committed = True
            if isinstance(error, UnknownProducerIdError) and not renumbered and not batch.maybe_committed:
                # The partition forgot this producer (expiry) and nothing of
                # this batch was written: renumber it under a fresh id.
                renumbered = True
                self._ids.renumber(q, batch)
                return Verdict.RETRY_NOW
            return Verdict.DEFAULT

        try:
            response = await self._calls.call(
                PartitionRoute(self._metadata, *q.tp),
                invoke,
                deadline=batch.created + self._delivery_timeout_s,
                prepare=prepare,
                on_error=on_error,
            )
        except RaftlogError as error:
            # A retriable error out of the path: the delivery timeout passed.
            self._fail(q, batch, self._timeout_error(q, batch, error) if error.retriable else error)
            return
        self._succeed(q, batch, response)

    def _succeed(self, q: PartitionQueue, batch: Batch, response: log_pb2.ProduceResponse) -> None:
        topic, partition = q.tp
        self._ids.committed(q, batch)
        self.stats.batches += 1
        self.stats.records += len(batch.records)
        if response.duplicate:
            self.stats.duplicates += 1
        batch.resolve(topic, partition, int(response.base_offset))
        self._finish(batch, None)

    def _fail(self, q: PartitionQueue, batch: Batch, error: RaftlogError) -> None:
        if isinstance(error, ProducerFencedError):
            self._fatal = error
        self._ids.failed(q, batch, error)
        self._finish(batch, error)

    def _timeout_error(self, q: PartitionQueue, batch: Batch, cause: RaftlogError | None) -> RaftlogError:
        fate = (
            "an attempt may have committed it, so the records may be in the log"
            if batch.maybe_committed
            else "no attempt committed it"
        )
        return DeliveryTimeoutError(
            f"gave up on a batch of {len(batch.records)} records to {q.tp.topic}/{q.tp.partition} after "
            f"{self._delivery_timeout_s:g} s ({fate}); last error: {cause}",
            cause=cause,
        )

    def _finish(self, batch: Batch, error: BaseException | None) -> None:
        """Resolve whatever is still pending in ``batch`` and free its bytes."""
        if batch.done.done():
            return
        if error is not None:
            batch.fail(error)
        batch.done.set_result(None)
        self._budget.release(batch.size - HEADER_SIZE)

    async def _shutdown(self) -> None:
        tasks = [q.task for q in self._queues.values() if q.task is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        closed = ClientClosedError(
            "the producer was closed before this record was acknowledged; it may or may not be in the log"
        )
        for q in self._queues.values():
            for batch in q.batches():
                self._finish(batch, closed)
        self._budget.close(ClientClosedError("the producer is closed"))
        await self._pool.close()
        self._closed = True
