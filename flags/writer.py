"""The flag writer: changes appended to a tenant's ``__flags`` topic, and read back.

``append(tenant, change)``: the change is checked against the live view
(``FlagStore.check_change``; a refusal is returned and nothing is written),
produced with the tenant's idempotent producer (acks from a majority), and
its result is what ``LiveFlags`` decided when the follower applied it: the
writer waits for that (``LiveFlags.wait_applied``) and returns
``live.result(offset)``. The log decides, not the writer: two flag servers
writing against stale views both write, and every view refuses the later
one the same way when it is applied.

After a ``Conflict`` or ``Rejected`` result the record's key is *dirty*
(flags/store.py: on a replay of the compacted log a refused record that is
the latest under its key could be accepted), so the writer appends the
key's restate (``FlagStore.restate``) at once. ``restate_pending`` (and
``run_sweeps``, its timer) appends the restates still owed, e.g. after a
crash between a conflict and its restate.

The topic is created on a tenant's first write (``Admin.create_topic`` with
the operator key acting in the tenant): one partition (one order per
tenant), the cluster's default replication, ``cleanup_policy="compact"``
and ``min_compaction_lag_ms`` = the audit window, so every change stays
readable that long and the latest state per key forever.

Invariants:

1. Nothing refused by the pre-check is written; everything written is
   reported with the result the log gave it (or ``FlagLogError`` when that
   could not be learnt in time: the record may still be written and
   applied; the caller reads before retrying, and a retry with the same
   expected version conflicts rather than applies twice).
2. One idempotent producer per tenant, created on first use and reused:
   its retries (leader failover, lost answers) never write a record twice
   nor reorder a tenant's records. A producer that failed for good is
   replaced.
3. Restates are written with the operator key's id as ``who`` (never the
   key), and a periodic sweep restates only keys seen dirty at the same
   position by the previous sweep, so two flag servers do not keep
   restating the same key over each other (a restate made on a stale view
   is itself stale and leaves the key dirty).
4. ``read_records`` returns the records at the offsets asked for, in offset
   order, leaving out those compaction removed or that do not exist.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import Iterable, Sequence

from client.admin import Admin
from client.consumer import Consumer, ConsumerRecord, FetchMode, OffsetReset
from client.errors import (
    AlreadyExistsError,
    ClientClosedError,
    NotFoundError,
    ProducerFencedError,
    RaftlogError,
    UnknownTopicOrPartitionError,
)
from client.producer import Producer, RecordMetadata
from flags.changes import Change, encode
from flags.follower import Follower
from flags.live import FLAGS_TOPIC, LiveFlags
from flags.store import Accepted, ApplyResult

__all__ = ["DEFAULT_AUDIT_WINDOW_MS", "FlagLogError", "FlagWriter"]

log = logging.getLogger(__name__)

DEFAULT_AUDIT_WINDOW_MS = 90 * 86_400_000
DELIVERY_TIMEOUT_S = 120.0
"""How long a producer keeps retrying a record (a caller stops waiting
after its own ``timeout_s``; the record may land later)."""
READ_TIMEOUT_S = 10.0
SEEK_AHEAD_RECORDS = 256
"""``read_records`` seeks instead of reading on when the next offset asked
for is more than this many records ahead."""
UNKNOWN_TOPIC_RETRY_S = 0.05
"""A topic created a moment ago may be unknown to the node asked first."""
FALLBACK_WHO = "flag-server"
_OPERATOR_KEY = re.compile(r"rlk_([0-9a-f]{16})_[A-Za-z0-9_-]{43}")


class FlagLogError(Exception):
    """The log could not be written or read in time (cluster unreachable,
    timeout, unknown tenant). ``cause``: the SDK's error, if any."""

    def __init__(self, message: str, *, cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.cause = cause


class FlagWriter:
    """Appends to and reads from tenants' ``__flags`` topics; see the module docstring.

    ``api_key``: the flag server's operator key (acts in each tenant).
    ``audit_window_ms``: how long every change stays readable
    (``min_compaction_lag_ms`` of topics this writer creates).
    """

    def __init__(
        self,
        live: LiveFlags,
        follower: Follower,
        bootstrap: str | Sequence[str],
        api_key: str,
        *,
        audit_window_ms: int = DEFAULT_AUDIT_WINDOW_MS,
    ) -> None:
        if audit_window_ms < 0:
            raise ValueError(f"audit_window_ms must be >= 0, got {audit_window_ms}")
        self._live = live
        self._follower = follower
        self._bootstrap = bootstrap
        self._api_key = api_key
        self._audit_window_ms = audit_window_ms
        match = _OPERATOR_KEY.fullmatch(api_key)
        self.who = match.group(1) if match else FALLBACK_WHO
        """What restates name as their author: the operator key's id."""
        self._producers: dict[str, Producer] = {}
        self._topics: set[str] = set()
        """Tenants whose ``__flags`` topic is known to exist and be followed."""
        self._topic_locks: dict[str, asyncio.Lock] = {}
        self._seen_dirty: set[tuple[str, str, str, int]] = set()
        """What the previous sweep found dirty (invariant 3)."""
        self._closed = False

    # --- writing ---------------------------------------------------------------------

    async def append(self, tenant: str, change: Change, timeout_s: float = 10.0) -> ApplyResult:
        """Append ``change`` and return what the log decided (module
        docstring). A refusal by the pre-check has offset -1 and wrote
        nothing. Raises ``FlagLogError`` when the outcome is not known
        within ``timeout_s``."""
        deadline = self._deadline(timeout_s)
        if self._live.applied(tenant) == 0:
            # The view may not know this tenant yet (discovery is periodic):
            # check against the log, not against nothing.
            await self._catch_up(tenant, deadline)
        refusal = self._live.store.check_change(tenant, change)
        if refusal is not None:
            return refusal
        offset = await self._write(tenant, change.key, encode(change), deadline)
        result = self._live.result(tenant, offset)
        if result is None:
            raise FlagLogError(
                f"{tenant}/{FLAGS_TOPIC}@{offset} was applied but its result is no longer known"
            )
        if not isinstance(result, Accepted) and change.flag is not None:
            await self._restate_keys(tenant, {(change.env, change.flag)}, deadline)
        return result

    async def append_record(self, tenant: str, key: str, value: bytes, timeout_s: float = 10.0) -> int:
        """Append any other record (SDK key records); its offset once the
        live view has applied it. Raises ``FlagLogError`` like ``append``."""
        return await self._write(tenant, key, value, self._deadline(timeout_s))

    async def _write(self, tenant: str, key: str, value: bytes, deadline: float) -> int:
        """Produce one record and wait until the live view applied it."""
        stopped = self._follower.stopped_tenants().get(tenant)
        if stopped is not None:  # its result would never be known here
            raise FlagLogError(f"this flag server cannot apply {tenant}/{FLAGS_TOPIC}: {stopped}")
        await self._ensure_topic(tenant, deadline)
        metadata = await self._produce(tenant, key, value, deadline)
        offset = metadata.offset
        if not await self._live.wait_applied(tenant, offset + 1, self._remaining(deadline)):
            raise FlagLogError(
                f"{tenant}/{FLAGS_TOPIC}@{offset} was written but not applied in time "
                "(the follower is behind, stopped or not running); read it back before retrying"
            )
        return offset

    async def _produce(self, tenant: str, key: str, value: bytes, deadline: float) -> RecordMetadata:
        loop = asyncio.get_running_loop()
        while True:
            producer = self._producer(tenant)
            try:
                async with asyncio.timeout_at(deadline):
                    future = await producer.send(FLAGS_TOPIC, value, key=key.encode("utf-8"), partition=0)
            except TimeoutError:
                raise FlagLogError(f"{tenant}/{FLAGS_TOPIC}: no node took the record in time") from None
            except UnknownTopicOrPartitionError as error:
                if loop.time() + UNKNOWN_TOPIC_RETRY_S < deadline:
                    await asyncio.sleep(UNKNOWN_TOPIC_RETRY_S)
                    continue
                self._topics.discard(tenant)  # deleted behind our back: create it next time
                raise FlagLogError(f"{tenant}/{FLAGS_TOPIC} does not exist: {error}", cause=error) from None
            except (ClientClosedError, ProducerFencedError) as error:
                await self._discard_producer(tenant, producer)
                if loop.time() < deadline:
                    continue
                raise FlagLogError(f"{tenant}/{FLAGS_TOPIC}: {error}", cause=error) from None
            except RaftlogError as error:
                raise FlagLogError(f"{tenant}/{FLAGS_TOPIC}: {error}", cause=error) from None
            break
        try:
            # Shielded: giving up waiting must not cancel the record.
            async with asyncio.timeout_at(deadline):
                return await asyncio.shield(future)
        except TimeoutError:
            raise FlagLogError(
                f"{tenant}/{FLAGS_TOPIC}: the record was not acknowledged in time; it may still be "
                "written: read it back before retrying"
            ) from None
        except RaftlogError as error:
            if isinstance(error, ProducerFencedError):
                await self._discard_producer(tenant, producer)
            raise FlagLogError(
                f"{tenant}/{FLAGS_TOPIC}: the record was not written: {error}", cause=error
            ) from None

    def _producer(self, tenant: str) -> Producer:
        if self._closed:
            raise FlagLogError("the flag writer is closed")
        producer = self._producers.get(tenant)
        if producer is None:
            producer = self._producers[tenant] = Producer(
                self._bootstrap,
                api_key=self._api_key,
                tenant=tenant,
                idempotent=True,
                linger_ms=0,  # one change at a time; concurrent ones batch while one is in flight
                delivery_timeout_s=DELIVERY_TIMEOUT_S,
            )
        return producer

    async def _discard_producer(self, tenant: str, producer: Producer) -> None:
        if self._producers.get(tenant) is producer:
            del self._producers[tenant]
        await producer.close(timeout_s=0)

    # --- the topic -------------------------------------------------------------------

    async def _ensure_topic(self, tenant: str, deadline: float) -> None:
        """Make sure ``tenant``'s ``__flags`` exists (create it if missing)
        and is followed."""
        if tenant in self._topics:
            return
        lock = self._topic_locks.setdefault(tenant, asyncio.Lock())
        async with lock:
            if tenant in self._topics:
                return
            async with Admin(
                self._bootstrap,
                api_key=self._api_key,
                tenant=tenant,
                timeout_s=max(self._remaining(deadline), 0.1),
            ) as admin:
                try:
                    try:
                        topic = await admin.describe_topic(FLAGS_TOPIC)
                    except UnknownTopicOrPartitionError:
                        try:
                            topic = await admin.create_topic(
                                FLAGS_TOPIC,
                                1,
                                0,
                                cleanup_policy="compact",
                                min_compaction_lag_ms=self._audit_window_ms,
                            )
                            log.info("created %s for tenant %s", FLAGS_TOPIC, tenant)
                        except AlreadyExistsError:  # another flag server was first
                            topic = await admin.describe_topic(FLAGS_TOPIC)
                    await self._follower.follow(tenant)
                except RaftlogError as error:
                    raise FlagLogError(
                        f"cannot create or find {tenant}/{FLAGS_TOPIC}: {error}", cause=error
                    ) from None
            if topic.cleanup_policy != "compact" or topic.partitions != 1:
                log.warning(
                    "%s/%s has cleanup_policy %r and %d partitions, not 'compact' and 1: "
                    "history may be lost or unordered",
                    tenant,
                    FLAGS_TOPIC,
                    topic.cleanup_policy,
                    topic.partitions,
                )
            self._topics.add(tenant)

    async def _catch_up(self, tenant: str, deadline: float) -> None:
        """Follow ``tenant`` if its topic exists and wait until the live view
        holds every record written before now."""
        try:
            await self._follower.follow(tenant)
        except RaftlogError as error:
            raise FlagLogError(f"cannot find {tenant}/{FLAGS_TOPIC}: {error}", cause=error) from None
        if tenant not in self._follower.following():
            return  # no topic yet: nothing to catch up with (the write creates it)
        end = await self._end_offset(tenant, deadline)
        if end and not await self._live.wait_applied(tenant, end, self._remaining(deadline)):
            raise FlagLogError(f"{tenant}/{FLAGS_TOPIC}: the live view did not catch up in time")

    async def _end_offset(self, tenant: str, deadline: float) -> int:
        """The high watermark of ``tenant``'s topic; 0 when it does not exist."""
        async with self._reader(tenant, deadline) as consumer:
            try:
                await consumer.seek_to_end((FLAGS_TOPIC, 0))
            except NotFoundError:
                return 0
            except RaftlogError as error:
                raise FlagLogError(f"{tenant}/{FLAGS_TOPIC}: {error}", cause=error) from None
            return consumer.position((FLAGS_TOPIC, 0)) or 0

    # --- restates --------------------------------------------------------------------

    async def restate_pending(
        self, tenant: str | None = None, *, settled_only: bool = False, timeout_s: float = 10.0
    ) -> int:
        """Append the restates the live view says are owed (of ``tenant``,
        or of every tenant); the number appended. ``settled_only``: only keys
        that were already dirty at the same position at the previous call
        with it (what the periodic sweep uses, invariant 3)."""
        deadline = self._deadline(timeout_s)
        found: set[tuple[str, str, str, int]] = set()
        for name in self._live.tenants() if tenant is None else (tenant,):
            for env, flag, at in self._live.store.needs_restate(name):
                found.add((name, env, flag, at))
        todo = found & self._seen_dirty if settled_only else found
        if settled_only:
            self._seen_dirty = found
        by_tenant: dict[str, set[tuple[str, str]]] = {}
        for name, env, flag, _ in todo:
            by_tenant.setdefault(name, set()).add((env, flag))
        appended = 0
        for name, keys in sorted(by_tenant.items()):
            appended += await self._restate_keys(name, keys, deadline)
        return appended

    async def run_sweeps(self, interval_s: float = 60.0) -> None:
        """``restate_pending(settled_only=True)`` every ``interval_s`` (with
        jitter, so flag servers started together do not sweep together),
        until cancelled."""
        while True:
            await asyncio.sleep(interval_s * random.uniform(0.75, 1.25))
            try:
                count = await self.restate_pending(settled_only=True)
            except FlagLogError as error:
                log.warning("restate sweep: %s", error)
                continue
            if count:
                log.info("restate sweep: appended %d restate(s)", count)

    async def _restate_keys(self, tenant: str, keys: Iterable[tuple[str, str]], deadline: float) -> int:
        """Append a restate for each of ``keys`` still dirty. Failures are
        logged, not raised: the change the caller made is decided already,
        and a sweep will find the key again."""
        appended = 0
        for env, flag in sorted(keys):
            if not any(e == env and f == flag for e, f, _ in self._live.store.needs_restate(tenant)):
                continue
            when = time.time_ns() // 1_000_000
            restate = self._live.store.restate(tenant, env, flag, self.who, when)
            if restate is None:
                continue
            try:
                offset = await self._write(tenant, restate.key, encode(restate), deadline)
            except FlagLogError as error:
                log.warning("restate of %s/%s/%s not written: %s", tenant, env, flag, error)
                continue
            appended += 1
            if not isinstance(self._live.result(tenant, offset), Accepted):
                log.info("restate of %s/%s/%s at %d was stale; a sweep will retry", tenant, env, flag, offset)
        return appended

    # --- reading ---------------------------------------------------------------------

    async def read_records(self, tenant: str, offsets: Sequence[int]) -> list[ConsumerRecord]:
        """The records of ``tenant``'s topic at ``offsets``, in offset order;
        offsets that compaction removed (or never existed) are left out.
        Raises ``FlagLogError`` when the log cannot be read in time."""
        wanted = sorted({o for o in offsets if o >= 0})
        if not wanted:
            return []
        deadline = self._deadline(READ_TIMEOUT_S)
        tp = (FLAGS_TOPIC, 0)
        found: list[ConsumerRecord] = []
        async with self._reader(tenant, deadline) as consumer:
            try:
                await consumer.seek_to_end(tp)
                end = consumer.position(tp) or 0
                wanted = [o for o in wanted if o < end]
                i = 0
                while i < len(wanted):
                    consumer.seek(*tp, wanted[i])
                    while i < len(wanted):
                        records = await consumer.poll(self._remaining(deadline))
                        if not records and self._remaining(deadline) <= 0:
                            raise FlagLogError(f"{tenant}/{FLAGS_TOPIC}: reading timed out")
                        for record in records:
                            while i < len(wanted) and wanted[i] < record.offset:
                                i += 1  # compacted away
                            if i < len(wanted) and wanted[i] == record.offset:
                                found.append(record)
                                i += 1
                        position = consumer.position(tp) or 0
                        while i < len(wanted) and wanted[i] < position:
                            i += 1
                        if i < len(wanted) and wanted[i] - position > SEEK_AHEAD_RECORDS:
                            break  # seek there rather than read what lies between
            except NotFoundError:
                return []  # no topic (or tenant): no records
            except RaftlogError as error:
                raise FlagLogError(f"{tenant}/{FLAGS_TOPIC}: {error}", cause=error) from None
        return found

    def _reader(self, tenant: str, deadline: float) -> Consumer:
        """A consumer of ``tenant``'s topic for one lookup (assigned, not positioned)."""
        consumer = Consumer(
            self._bootstrap,
            api_key=self._api_key,
            tenant=tenant,
            fetch_mode=FetchMode.POLL,
            fetch_max_wait_ms=100,
            auto_offset_reset=OffsetReset.EARLIEST,
            api_timeout_s=max(self._remaining(deadline), 0.1),
        )
        consumer.assign([(FLAGS_TOPIC, 0)])
        return consumer

    # --- housekeeping ----------------------------------------------------------------

    async def close(self) -> None:
        """Deliver what was accepted (a few seconds at most), then close every producer."""
        if self._closed:
            return
        self._closed = True
        producers = list(self._producers.values())
        self._producers.clear()
        for producer in producers:
            await producer.close(timeout_s=5.0)

    @staticmethod
    def _deadline(timeout_s: float) -> float:
        return asyncio.get_running_loop().time() + timeout_s

    @staticmethod
    def _remaining(deadline: float) -> float:
        return max(0.0, deadline - asyncio.get_running_loop().time())
