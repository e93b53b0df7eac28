"""Exposures and tracking events onto each tenant's log, off the evaluation path.

An *exposure* is an evaluation answered with a variant for a targeting key
(flagd RPC, OFREP, or reported by the in-process hook). ``ExposureSink.record``
is what evaluation code calls (``record_many`` for a batch of them, as the
hook reports them): synchronous, a few microseconds, never blocks and never
raises. It drops what it cannot take (counted in ``stats``) rather
than slow an evaluation down. A background task per tenant turns buffered
exposures into records of the tenant's ``__exposures`` topic through the one
idempotent ``client.Producer`` this sink keeps per tenant (the flag server's
operator key acting in the tenant), a chunk at a time with
``Producer.send_many``: the producer's per-record work was most of an
exposure's cost. ``track`` appends tracking events to the
tenant's ``__tracking`` topic through the same producer and returns only once
every record is acknowledged (durable on a majority).

Record formats (canonical JSON: sorted keys, no spaces, UTF-8; record key =
the targeting key, record timestamp = ``ts``)::

    __exposures  {"env":E,"flag":F,"format":1,"reason":R,"source":"rpc"|"ofrep"|"hook",
                  "targetingKey":K,"ts":ms,"variant":V,"version":flagVersion}
    __tracking   {"attributes":{...},"env":E,"format":1,"name":N,"targetingKey":K,
                  "ts":ms,"value":float|null}

Both topics are created lazily on first use, like ``__flags`` (flags/writer.py):
one partition (one order per tenant), the cluster's default replication,
``cleanup_policy="delete"``, retention 30 days.

Invariants:

1. ``record`` does O(1) work (``record_many`` O(1) per exposure) with no
   awaits, locks or I/O, and catches every exception (counted in
   ``errors``): an evaluation never waits for or fails because of the log.
2. Only evaluations with a non-empty targeting key and a variant are exposures
   (others are ignored, not counted as drops).
3. Dedup: of exposures with the same (tenant, env, targeting key, flag,
   variant), at most one is buffered per ``dedup_window_s``; one seen
   continuously is written again after at most twice that. Two generations of
   sets, rotated every window (or early when the current one holds
   ``dedup_max_keys / 2``, which shortens the window, never grows memory).
   A dropped exposure is not remembered (a later one may be written).
4. Bounded memory: at most ``max_buffered`` exposures wait in all, at most
   ``max_buffered_per_tenant`` per tenant (so one tenant's slow log cannot
   starve the others); beyond that ``record`` drops and counts (``dropped``).
   A tenant's producer holds at most ``producer_buffer_bytes`` more.
5. Exposures are best effort: records the producer fails (delivery timeout,
   topic not creatable) are counted in ``failed``, never retried by the sink.
   Tracking is not: ``track`` raises ``EventLogError`` unless every event was
   acknowledged, and validates nothing (callers validate a whole batch
   before calling, so a bad batch writes nothing: flags/tracking.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from client.admin import Admin
from client.errors import AlreadyExistsError, ClientClosedError, ProducerFencedError, RaftlogError
from client.producer import Producer, Record, RecordRun
from flags.event_records import (
    EXPOSURES_TOPIC,
    MAX_FIELD_CHARS,
    TRACKING_TOPIC,
    ExposureEncoder,
    TrackingEvent,
    encode_exposure,
    encode_tracking,
)
from flags.live import Scope

__all__ = [
    "EXPOSURES_TOPIC",
    "RETENTION_MS",
    "TRACKING_TOPIC",
    "EventLogError",
    "ExposureEncoder",
    "ExposureSink",
    "SinkStats",
    "TrackingEvent",
    "encode_exposure",
    "encode_tracking",
]

RETENTION_MS = 30 * 86_400_000
"""Longer flag keys, variants, reasons or targeting keys are not recorded (``rejected``)."""
DEFAULT_DEDUP_WINDOW_S = 600.0
DEFAULT_DEDUP_MAX_KEYS = 1_000_000
"""~150 bytes a key: ~150 MB at most across the two generations."""
DEFAULT_MAX_BUFFERED = 200_000
DEFAULT_MAX_BUFFERED_PER_TENANT = 100_000
DRAIN_CHUNK = 2048
"""Exposures a tenant's task hands to its producer at once (one ``send_many``)."""
TOPIC_RETRY_S = 1.0
"""After a topic could not be created, wait this long before trying again (dropping meanwhile)."""

log = logging.getLogger(__name__)


class EventLogError(Exception):
    """Tracking events could not be made durable in time (cluster unreachable,
    timeout, topic not creatable); some may still be written."""


@dataclass(frozen=True, slots=True)
class SinkStats:
    """Counters since start (exposures unless named otherwise)."""

    recorded: int
    """Accepted into the buffer."""
    deduplicated: int
    dropped: int
    """Buffer full, no running loop, or the topic could not be created."""
    rejected: int
    """A field too long or not encodable (UTF-8)."""
    errors: int
    """Unexpected exceptions caught in ``record`` (a bug; logged once)."""
    written: int
    """Acknowledged by the log."""
    failed: int
    """Refused or timed out by the producer."""
    buffered: int
    tracked: int
    """Tracking events acknowledged."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


_Pending = tuple[str, str, str, str, str, int, str, int]
"""env, flag, variant, reason, targeting key, version, source, ts (ms)."""


class _Lane:
    """One tenant: its buffered exposures, writer task, producer and topics."""

    __slots__ = ("drained", "idle", "pending", "producer", "retry_at", "task", "tenant", "topics", "wake")

    def __init__(self, tenant: str) -> None:
        self.tenant = tenant
        self.pending: deque[_Pending] = deque()
        self.wake = asyncio.Event()
        self.idle = True
        self.drained = asyncio.Event()
        """Set while nothing is buffered (everything handed to the producer or dropped)."""
        self.drained.set()
        self.task: asyncio.Task[None] | None = None
        self.producer: Producer | None = None
        self.topics: set[str] = set()
        self.retry_at = 0.0


class ExposureSink:
    """See the module docstring. One per flag server process; use it from
    the asyncio loop's thread (``record`` from handlers, ``track`` awaited).

    ``api_key``: the flag server's operator key (acts in each tenant).
    """

    def __init__(
        self,
        bootstrap: str | Sequence[str],
        api_key: str,
        *,
        dedup_window_s: float = DEFAULT_DEDUP_WINDOW_S,
        dedup_max_keys: int = DEFAULT_DEDUP_MAX_KEYS,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
        max_buffered_per_tenant: int = DEFAULT_MAX_BUFFERED_PER_TENANT,
        retention_ms: int = RETENTION_MS,
        linger_ms: float = 20.0,
        producer_buffer_bytes: int = 8 << 20,
        delivery_timeout_s: float = 30.0,
        admin_timeout_s: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = _now_ms,
    ) -> None:
        if dedup_window_s < 0 or dedup_max_keys < 2 or max_buffered < 1 or max_buffered_per_tenant < 1:
            raise ValueError("dedup_window_s >= 0, dedup_max_keys >= 2 and buffer limits >= 1 please")
        self._bootstrap = bootstrap
        self._api_key = api_key
        self._window = dedup_window_s
        self._half_keys = dedup_max_keys // 2
        self._max_buffered = max_buffered
        self._max_per_tenant = max_buffered_per_tenant
        self._retention_ms = retention_ms
        self._linger_ms = linger_ms
        self._producer_buffer_bytes = producer_buffer_bytes
        self._delivery_timeout_s = delivery_timeout_s
        self._admin_timeout_s = admin_timeout_s
        self._monotonic = monotonic
        self._wall_ms = wall_ms
        self._seen: set[tuple[str, str, str, str, str]] = set()
        self._seen_before: set[tuple[str, str, str, str, str]] = set()
        self._rotate_at = monotonic() + dedup_window_s
        self._lanes: dict[str, _Lane] = {}
        self._topic_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._buffered = 0
        self._encoder = ExposureEncoder()
        self._closed = False
        self._recorded = self._deduplicated = self._dropped = self._rejected = self._errors = 0
        self._written = self._failed = self._tracked = 0

    # --- the evaluation path -----------------------------------------------------------

    def record(
        self,
        scope: Scope,
        flag: str,
        variant: str | None,
        reason: str,
        targeting_key: str | None,
        version: int,
        source: str,
    ) -> None:
        """Note one evaluation as an exposure (module invariants 1-4). Never
        blocks, never raises; call it from the loop's thread."""
        self.record_many(scope, ((flag, variant, reason, targeting_key, version),), source)

    def record_many(
        self, scope: Scope, exposures: Iterable[tuple[str, str | None, str, str | None, int]], source: str
    ) -> None:
        """``record`` for each ``(flag, variant, reason, targeting key,
        version)`` of ``exposures``, in order (module invariants 1-4), the
        per-call work (clocks, the tenant's lane) done once: what a batch of
        reported exposures costs is mostly per exposure. Never blocks,
        never raises; call it from the loop's thread."""
        try:
            now = self._monotonic()
            if now >= self._rotate_at:
                self._rotate(now)
            tenant, env = scope.tenant, scope.env
            lane = self._lanes.get(tenant)
            ts = self._wall_ms()
            pending = lane.pending if lane is not None else None
            appended = 0
            for flag, variant, reason, targeting_key, version in exposures:
                if not targeting_key or not variant:
                    continue
                if (
                    len(targeting_key) > MAX_FIELD_CHARS
                    or len(flag) > MAX_FIELD_CHARS
                    or len(variant) > MAX_FIELD_CHARS
                    or len(reason) > MAX_FIELD_CHARS
                ):
                    self._rejected += 1
                    continue
                key = (tenant, env, targeting_key, flag, variant)
                if key in self._seen or key in self._seen_before:
                    self._deduplicated += 1
                    continue
                if pending is None or lane is None:
                    if self._closed:
                        self._dropped += 1
                        continue
                    lane = self._lanes[tenant] = _Lane(tenant)
                    pending = lane.pending
                if self._buffered >= self._max_buffered or len(pending) >= self._max_per_tenant:
                    self._dropped += 1
                    continue
                if lane.task is None:
                    # Raises RuntimeError without a running loop: counted as an error below.
                    lane.task = asyncio.get_running_loop().create_task(
                        self._run_lane(lane), name=f"exposures-{tenant}"
                    )
                seen = self._seen
                seen.add(key)
                if len(seen) >= self._half_keys:
                    self._rotate(now)
                pending.append((env, flag, variant, reason, targeting_key, version, source, ts))
                self._buffered += 1
                self._recorded += 1
                appended += 1
            if appended and lane is not None and lane.idle:
                lane.idle = False
                lane.drained.clear()
                lane.wake.set()
        except Exception:  # invariant 1: evaluation never fails because of us
            if not self._errors:
                log.exception("exposures not recorded")
            self._errors += 1

    def _rotate(self, now: float) -> None:
        self._seen_before = self._seen
        self._seen = set()
        self._rotate_at = now + self._window

    @property
    def stats(self) -> SinkStats:
        return SinkStats(
            recorded=self._recorded,
            deduplicated=self._deduplicated,
            dropped=self._dropped,
            rejected=self._rejected,
            errors=self._errors,
            written=self._written,
            failed=self._failed,
            buffered=self._buffered,
            tracked=self._tracked,
        )

    # --- the writer tasks --------------------------------------------------------------

    async def _run_lane(self, lane: _Lane) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not lane.pending:
                lane.idle = True
                lane.drained.set()
                lane.wake.clear()
                await lane.wake.wait()
                continue
            if loop.time() < lane.retry_at:
                self._drop_pending(lane)
                continue
            try:
                producer = await self._ready(lane, EXPOSURES_TOPIC)
            except EventLogError as error:
                log.warning("exposures of tenant %s dropped: %s", lane.tenant, error)
                lane.retry_at = loop.time() + TOPIC_RETRY_S
                self._drop_pending(lane)
                continue
            try:
                await self._hand_over(lane, producer)
            except Exception:  # a bug must not stop this tenant's exposures for good
                log.exception("exposures of tenant %s: writer failed", lane.tenant)
                self._drop_pending(lane)
                await asyncio.sleep(TOPIC_RETRY_S)

    def _drop_pending(self, lane: _Lane) -> None:
        count = len(lane.pending)
        lane.pending.clear()
        self._buffered -= count
        self._dropped += count

    async def _hand_over(self, lane: _Lane, producer: Producer) -> None:
        """Move up to ``DRAIN_CHUNK`` exposures into the producer with one
        ``send_many``. It waits only when the producer's buffer is full (the
        log is slow): the lane then fills and ``record`` drops (invariant 4)."""
        pending = lane.pending
        taken = min(len(pending), DRAIN_CHUNK)
        encode = self._encoder.encode
        records: list[Record] = []
        for _ in range(taken):
            env, flag, variant, reason, targeting_key, version, source, ts = pending.popleft()
            try:
                value = encode(env, flag, variant, reason, targeting_key, version, source, ts)
                key = targeting_key.encode("utf-8")
            except UnicodeEncodeError:
                self._rejected += 1
                continue
            records.append(Record(value, key, (), ts))
        self._buffered -= taken
        if not records:
            return
        try:
            runs = await producer.send_many(EXPOSURES_TOPIC, records, partition=0)
        except (ClientClosedError, ProducerFencedError):
            self._failed += len(records)
            await self._discard_producer(lane, producer)
            return
        except RaftlogError as error:
            self._failed += len(records)
            log.warning("%d exposures of tenant %s not sent: %s", len(records), lane.tenant, error)
            lane.topics.discard(EXPOSURES_TOPIC)  # e.g. deleted: look again next time
            return
        except asyncio.CancelledError:  # close() stopped us waiting for buffer room
            self._dropped += len(records)
            raise
        # One callback per chunk, not per run: a partition's batches resolve
        # in order, so when the last run is done the others are too.
        runs[-1].first.add_done_callback(lambda _: self._count_delivered(runs))

    def _count_delivered(self, runs: list[RecordRun]) -> None:
        for run in runs:
            future = run.first
            if not future.done():  # not expected (in-order resolution); count it when it is
                future.add_done_callback(functools.partial(self._count_late, run))
            elif future.cancelled() or future.exception() is not None:
                self._failed += run.record_count
            else:
                self._written += run.record_count

    def _count_late(self, run: RecordRun, _: object) -> None:
        self._count_delivered([run])

    # --- producers and topics ----------------------------------------------------------

    async def _ready(self, lane: _Lane, topic: str) -> Producer:
        """The tenant's producer, once ``topic`` is known to exist."""
        if self._closed:
            raise EventLogError("the exposure sink is closed")
        if topic not in lane.topics:
            await self._ensure_topic(lane, topic)
        if lane.producer is None:
            lane.producer = Producer(
                self._bootstrap,
                api_key=self._api_key,
                tenant=lane.tenant,
                idempotent=True,
                linger_ms=self._linger_ms,
                buffer_bytes=self._producer_buffer_bytes,
                delivery_timeout_s=self._delivery_timeout_s,
            )
        return lane.producer

    async def _discard_producer(self, lane: _Lane, producer: Producer) -> None:
        if lane.producer is producer:
            lane.producer = None
        await producer.close(timeout_s=0)

    async def _ensure_topic(self, lane: _Lane, topic: str) -> None:
        lock = self._topic_locks.setdefault((lane.tenant, topic), asyncio.Lock())
        async with lock:
            if topic in lane.topics:
                return
            try:
                async with Admin(
                    self._bootstrap,
                    api_key=self._api_key,
                    tenant=lane.tenant,
                    timeout_s=self._admin_timeout_s,
                ) as admin:
                    try:
                        await admin.create_topic(
                            topic, 1, 0, cleanup_policy="delete", retention_ms=self._retention_ms
                        )
                        log.info("created %s for tenant %s", topic, lane.tenant)
                    except AlreadyExistsError:
                        pass  # another flag server (or an earlier run) was first
            except RaftlogError as error:
                raise EventLogError(f"cannot create or find {lane.tenant}/{topic}: {error}") from None
            lane.topics.add(topic)

    # --- tracking ----------------------------------------------------------------------

    async def track(self, scope: Scope, events: Sequence[TrackingEvent], timeout_s: float = 10.0) -> None:
        """Append ``events`` (validated already) to the tenant's ``__tracking``
        and return once every one is acknowledged; ``EventLogError`` otherwise
        (some may be written then: tracking is at least once)."""
        if not events:
            return
        deadline = asyncio.get_running_loop().time() + timeout_s
        ts = self._wall_ms()
        values = [(encode_tracking(scope.env, event, ts), event.targeting_key.encode()) for event in events]
        lane = self._lanes.get(scope.tenant)
        if lane is None:
            lane = self._lanes[scope.tenant] = _Lane(scope.tenant)
        try:
            async with asyncio.timeout_at(deadline):
                producer = await self._ready(lane, TRACKING_TOPIC)
                futures = [
                    await producer.send(TRACKING_TOPIC, value, key=key, partition=0, timestamp_ms=ts)
                    for value, key in values
                ]
                await producer.flush()  # no linger: the caller is waiting
                # Shielded: giving up waiting must not cancel the records.
                await asyncio.gather(*(asyncio.shield(f) for f in futures))
        except TimeoutError:
            raise EventLogError(
                f"{scope.tenant}/{TRACKING_TOPIC}: not acknowledged within {timeout_s} s"
            ) from None
        except (ClientClosedError, ProducerFencedError) as error:
            if lane.producer is not None:
                await self._discard_producer(lane, lane.producer)
            raise EventLogError(f"{scope.tenant}/{TRACKING_TOPIC}: {error}") from None
        except RaftlogError as error:
            lane.topics.discard(TRACKING_TOPIC)
            raise EventLogError(f"{scope.tenant}/{TRACKING_TOPIC}: {error}") from None
        self._tracked += len(values)

    # --- housekeeping ------------------------------------------------------------------

    async def flush(self, timeout_s: float = 10.0) -> None:
        """Wait until every buffered exposure was handed to its producer and
        the producers delivered (or failed) it; for tests and shutdown."""
        async with asyncio.timeout(timeout_s):
            for lane in list(self._lanes.values()):
                await lane.drained.wait()
                if lane.producer is not None:
                    await lane.producer.flush()

    async def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is buffered (for at most ``timeout_s``), then stop."""
        if self._closed:
            return
        with contextlib.suppress(TimeoutError):
            await self.flush(timeout_s)
        self._closed = True
        for lane in self._lanes.values():
            if lane.task is not None:
                lane.task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await lane.task
            self._buffered -= len(lane.pending)
            self._dropped += len(lane.pending)
            lane.pending.clear()
            if lane.producer is not None:
                await lane.producer.close(timeout_s=0)
                lane.producer = None
