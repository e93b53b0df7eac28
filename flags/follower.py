"""The log follower: every tenant's ``__flags`` topic, tailed into ``LiveFlags``.

What it does: *discovery* asks the cluster for its tenants
(``Admin.list_tenants`` with the operator key) every
``discovery_interval_s`` and describes each tenant's ``__flags`` topic
(``FLAGS_TOPIC``) with the operator key acting in that tenant; a tenant is
*followed* once that topic exists. Following is one streaming ``Consumer``
per tenant (``FetchMode.STREAM``, assigned ``(FLAGS_TOPIC, 0)``, read from
``live.applied(tenant)``: offset 0 on a fresh view) whose records go to
``LiveFlags.apply`` as they arrive. The SDK rides out partition-leader
failover and node restarts (it looks the leader up again and reopens the
stream at the same offset); the follower only steps in for errors the SDK
hands back (``Follower._recover``).

Invariants:

1. Per tenant, ``LiveFlags.apply`` receives the topic's records in offset
   order, each once, with no gap: one consumer per tenant, whose ``poll``
   returns records in order without gaps or repeats; a consumer restarted
   after an error is sought to ``live.applied(tenant)``, the position after
   the last record applied. A tenant task that has been replaced (its tenant
   dropped or re-followed) applies nothing more: it checks, before every
   batch, that it is still the tenant's current task.
2. A record ``LiveFlags`` cannot apply (``UnsupportedChange``: a newer
   record format; or any other error) stops that tenant where it is,
   loudly (an ERROR log line with the offset and the reason). It is never
   skipped: every record after it would then be applied on a view other
   flag servers do not have. ``is_ready()`` is false while any tenant is
   stopped: a flag server that cannot read the log must not serve it (in a
   rolling upgrade the upgraded servers take the traffic).
3. A tenant that is gone (absent from ``list_tenants``, or its
   ``__flags`` topic missing) is dropped: its task cancelled and
   ``live.forget_tenant`` called. A listing only drops tenants followed
   *before* it was asked for, so a tenant whose topic was created a moment
   ago (``follow``) is never dropped by a listing that predates it. A
   ``__flags`` topic re-created under the same name (a higher ``revision``)
   is dropped and followed again from offset 0. Followed tenants are
   described again every ``RECHECK_EVERY_SWEEPS`` sweeps (and whenever their
   consumer reports an error), not on every sweep: a cluster with many
   tenants is not asked about each of them every two seconds.
4. Readiness: the tenants found by the sweeps up to and including the first
   complete one (the listing and every describe answered) are the tenants
   *known at start*; ``is_ready()`` is true once that sweep is done and each
   of them has applied every record below its end offset as looked up when
   its consumer started. Tenants found later do not hold readiness back;
   a stopped tenant (2) does.
5. Every task is owned: tenant tasks and the discovery loop live in the
   ``asyncio.TaskGroup`` of ``run()``; each tenant task closes its
   consumer when it ends. ``close()`` cancels ``run()`` and waits for it.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

from client.admin import Admin
from client.consumer import Consumer, ConsumerRecord, FetchMode, OffsetReset
from client.errors import NotFoundError, RaftlogError
from flags.changes import UnsupportedChange
from flags.live import FLAGS_TOPIC, LiveFlags

__all__ = ["Follower"]

log = logging.getLogger(__name__)

REFRESH_MIN_INTERVAL_S = 1.0
"""``refresh()`` starts at most one sweep a second (requests name tenants
the server does not know; a burst of them must not become a burst of
listings)."""
RECHECK_EVERY_SWEEPS = 15
"""Followed tenants' topics are described again every this many sweeps
(about 30 s at the default interval): a re-created topic is noticed then."""
DISCOVERY_CONCURRENCY = 16
"""Describes in flight at once during a sweep."""
POLL_TIMEOUT_S = 1.0
ERROR_BACKOFF_S = (0.2, 5.0)
"""First and longest wait after a tenant's consumer reported an error."""
ADMIN_TIMEOUT_S = 10.0
"""How long one discovery call keeps retrying before the sweep gives up on it."""


@dataclass(slots=True, eq=False)
class _Followed:
    tenant: str
    revision: int
    """The ``__flags`` topic's revision when it was found (a re-created topic has a higher one)."""
    since: float
    """Loop time at which following began: listings asked earlier cannot drop it."""
    catch_up: bool
    """Known at start: readiness waits until ``target`` is applied."""
    target: int | None = None
    """The topic's end offset when its consumer started (``catch_up`` only)."""
    stopped: str | None = None
    """Why applying stopped (invariant 2); None while following."""
    task: asyncio.Task[None] | None = None


class Follower:
    """Tails every tenant's ``__flags`` topic into ``live``; see the module docstring.

    ``api_key`` is the flag server's operator key; it acts in each tenant
    with the ``tenant`` argument of the SDK. Use from ``live``'s event loop:
    ``run()`` as a task of the server, ``close()`` when shutting down.
    """

    def __init__(
        self,
        live: LiveFlags,
        bootstrap: str | Sequence[str],
        api_key: str,
        *,
        discovery_interval_s: float = 2.0,
    ) -> None:
        if discovery_interval_s <= 0:
            raise ValueError(f"discovery_interval_s must be > 0, got {discovery_interval_s}")
        self._live = live
        self._bootstrap = bootstrap
        self._api_key = api_key
        self._interval_s = discovery_interval_s
        self._operator = Admin(bootstrap, api_key=api_key, timeout_s=ADMIN_TIMEOUT_S)
        self._admins: dict[str, Admin] = {}
        self._followed: dict[str, _Followed] = {}
        self._group: asyncio.TaskGroup | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._started = False
        """The first complete sweep is done (invariant 4)."""
        self._caught_up = False
        """Every tenant known at start has caught up (stays true once true)."""
        self._stopped: dict[str, str] = {}
        """Followed tenants that stopped (invariant 2), with the reason."""
        self._progress = asyncio.Event()
        self._sweep_lock = asyncio.Lock()
        self._last_sweep_start = -math.inf
        self._sweeps = 0
        self._closed = False

    # --- running ---------------------------------------------------------------------

    async def run(self) -> None:
        """Discovery and one streaming consumer per followed tenant, until
        cancelled (or ``close()``)."""
        if self._run_task is not None or self._closed:
            raise RuntimeError("Follower.run() runs once, before close()")
        self._run_task = asyncio.current_task()
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                for followed in self._followed.values():  # follow() before run()
                    if followed.task is None and followed.stopped is None:
                        self._start_task(followed)
                while True:
                    await self._sweep_at_most_every(0.0)
                    await asyncio.sleep(self._interval_s)
        finally:
            self._group = None

    async def close(self) -> None:
        """Stop following (cancels ``run()`` and waits for its tasks to
        close their consumers) and close the channels. Idempotent."""
        if self._closed:
            return
        self._closed = True
        task = self._run_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            await asyncio.wait([task])
        await self._operator.close()
        for admin in self._admins.values():
            await admin.close()
        self._admins.clear()

    # --- readiness -------------------------------------------------------------------

    def is_ready(self) -> bool:
        """Every tenant known at start caught up to its end offset at start,
        and no tenant stopped (module docstring, invariants 2 and 4)."""
        if not self._caught_up:
            if not self._started:
                return False
            for followed in self._followed.values():
                if followed.catch_up and (
                    followed.target is None or self._live.applied(followed.tenant) < followed.target
                ):
                    return False
            self._caught_up = True
        return not self._stopped  # O(1): request handlers may ask on every call

    async def wait_ready(self, timeout_s: float) -> bool:
        """Wait until ``is_ready()`` (True) or ``timeout_s`` passed (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while True:
            # Cleared before the check: progress made after it wakes the wait.
            self._progress.clear()
            if self.is_ready():
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            # Bounded: a tenant dropped elsewhere can make us ready without progress.
            try:
                async with asyncio.timeout(min(remaining, 0.5)):
                    await self._progress.wait()
            except TimeoutError:
                pass

    def stopped_tenants(self) -> dict[str, str]:
        """Tenants whose records could not be applied, with the reason
        (invariant 2): for the readiness endpoint's explanation."""
        return dict(self._stopped)

    def following(self) -> tuple[str, ...]:
        """The tenants followed now (stopped ones included)."""
        return tuple(sorted(self._followed))

    # --- discovery -------------------------------------------------------------------

    async def follow(self, tenant: str) -> None:
        """Start following ``tenant`` now if its ``__flags`` topic exists
        (the writer just created it, or a request named a tenant discovery
        has not reached yet). No-op when already followed. Raises the SDK's
        ``RaftlogError`` when the cluster could not be asked."""
        if tenant in self._followed:
            return
        asked_at = asyncio.get_running_loop().time()
        revision = await self._describe(tenant)
        if revision is not None:
            self._found(tenant, revision, asked_at)

    async def refresh(self) -> None:
        """A discovery sweep now; at most one starts per second, and callers
        that arrive while one waits or runs share the next one."""
        await self._sweep_at_most_every(REFRESH_MIN_INTERVAL_S)

    async def _sweep_at_most_every(self, min_gap_s: float) -> None:
        loop = asyncio.get_running_loop()
        requested = loop.time()
        async with self._sweep_lock:
            if self._last_sweep_start >= requested:
                return  # a sweep began after this request: it saw what the caller wants seen
            wait = self._last_sweep_start + min_gap_s - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._last_sweep_start = loop.time()
            await self._sweep()

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        asked_at = loop.time()
        try:
            tenants = {t.name for t in await self._operator.list_tenants()}
        except RaftlogError as error:
            log.warning("flag follower: cannot list tenants (will retry): %s", error)
            return
        for name in [n for n, f in self._followed.items() if n not in tenants and f.since < asked_at]:
            self._drop(name, "the tenant was deleted")
        for name in [n for n in self._admins if n not in tenants and n not in self._followed]:
            await self._admins.pop(name).close()
        self._sweeps += 1
        recheck = self._sweeps % RECHECK_EVERY_SWEEPS == 0
        todo = sorted(n for n in tenants if recheck or n not in self._followed)
        complete = True
        limit = asyncio.Semaphore(DISCOVERY_CONCURRENCY)

        async def check(tenant: str) -> None:
            nonlocal complete
            try:
                async with limit:
                    revision = await self._describe(tenant)
            except RaftlogError as error:
                complete = False
                log.warning(
                    "flag follower: cannot describe %s/%s (will retry): %s", tenant, FLAGS_TOPIC, error
                )
                return
            self._found(tenant, revision, asked_at)

        async with asyncio.TaskGroup() as checks:
            for tenant in todo:
                checks.create_task(check(tenant))
        if complete and not self._started:
            self._started = True
            log.info("flag follower: following %d tenant(s) at start", len(self._followed))
        self._progress.set()

    async def _describe(self, tenant: str) -> int | None:
        """The revision of ``tenant``'s ``__flags`` topic; None when the
        topic (or the tenant) does not exist."""
        admin = self._admins.get(tenant)
        if admin is None:
            admin = self._admins[tenant] = Admin(
                self._bootstrap, api_key=self._api_key, tenant=tenant, timeout_s=ADMIN_TIMEOUT_S
            )
        try:
            topic = await admin.describe_topic(FLAGS_TOPIC)
        except NotFoundError:  # no such topic, or no such tenant
            return None
        return int(topic.revision)

    def _found(self, tenant: str, revision: int | None, asked_at: float) -> None:
        """What a describe asked at ``asked_at`` said about ``tenant``'s topic."""
        followed = self._followed.get(tenant)
        if followed is not None and followed.since >= asked_at:
            return  # followed after the question was asked: the answer may be older
        if revision is None:
            if followed is not None:
                self._drop(tenant, f"its {FLAGS_TOPIC} topic was deleted")
            return
        if followed is not None:
            if revision <= followed.revision:
                return
            self._drop(tenant, f"its {FLAGS_TOPIC} topic was re-created")
        followed = _Followed(
            tenant, revision, since=asyncio.get_running_loop().time(), catch_up=not self._started
        )
        self._followed[tenant] = followed
        if self._group is not None:
            self._start_task(followed)

    def _drop(self, tenant: str, why: str) -> None:
        followed = self._followed.pop(tenant, None)
        self._stopped.pop(tenant, None)
        if followed is not None and followed.task is not None and followed.task is not asyncio.current_task():
            followed.task.cancel()
        log.info("flag follower: no longer following tenant %s: %s", tenant, why)
        self._live.forget_tenant(tenant)
        self._progress.set()

    # --- one tenant ------------------------------------------------------------------

    def _start_task(self, followed: _Followed) -> None:
        assert self._group is not None
        followed.task = self._group.create_task(
            self._follow_tenant(followed), name=f"flags-follow-{followed.tenant}"
        )

    async def _follow_tenant(self, followed: _Followed) -> None:
        tenant = followed.tenant
        consumer = Consumer(
            self._bootstrap,
            api_key=self._api_key,
            tenant=tenant,
            fetch_mode=FetchMode.STREAM,
            auto_offset_reset=OffsetReset.EARLIEST,
        )
        tp = (FLAGS_TOPIC, 0)
        failures = 0
        try:
            consumer.assign([tp])
            consumer.seek(*tp, self._live.applied(tenant))
            while True:
                try:
                    if followed.catch_up and followed.target is None:
                        await consumer.seek_to_end(tp)
                        followed.target = consumer.position(tp)
                        consumer.seek(*tp, self._live.applied(tenant))
                    records = await consumer.poll(POLL_TIMEOUT_S)
                except RaftlogError as error:
                    failures += 1
                    if not await self._recover(followed, error, failures):
                        return
                    consumer.seek(*tp, self._live.applied(tenant))
                    continue
                failures = 0
                if not records:
                    continue
                if self._followed.get(tenant) is not followed:
                    return  # replaced (invariant 1)
                for record in records:
                    if not self._apply(followed, record):
                        return
                self._progress.set()
        finally:
            await consumer.close()

    def _apply(self, followed: _Followed, record: ConsumerRecord) -> bool:
        """Apply one record; False (and the tenant stopped) when it cannot be."""
        tenant = followed.tenant
        if record.offset < self._live.applied(tenant):
            return True  # already applied (a log's record never changes)
        # A key that is not UTF-8 cannot be one of ours: it reaches the store
        # as a malformed key and is refused there, in the same way everywhere.
        key = "" if record.key is None else record.key.decode("utf-8", "replace")
        try:
            self._live.apply(tenant, record.offset, key, record.value, record.timestamp_ms)
        except UnsupportedChange as exc:
            self._stop(followed, record, f"the record is in a newer format ({exc}); upgrade this flag server")
            return False
        except Exception as exc:
            log.exception("flag follower: applying %s/%s@%d failed", tenant, FLAGS_TOPIC, record.offset)
            self._stop(followed, record, f"{type(exc).__name__}: {exc}")
            return False
        return True

    def _stop(self, followed: _Followed, record: ConsumerRecord, why: str) -> None:
        followed.stopped = f"stopped at offset {record.offset} (key {record.key!r}): {why}"
        self._stopped[followed.tenant] = followed.stopped
        log.error(
            "flag follower: tenant %s stopped: records from offset %d on are not applied: %s",
            followed.tenant,
            record.offset,
            followed.stopped,
        )
        self._progress.set()

    async def _recover(self, followed: _Followed, error: RaftlogError, failures: int) -> bool:
        """After an error the SDK did not retry itself (unknown topic or
        tenant, authentication, a timeout of a lookup...): wait, then ask
        whether the topic is still the one followed. False: this task ends
        (the tenant was dropped or is followed anew)."""
        tenant = followed.tenant
        first, longest = ERROR_BACKOFF_S
        if failures == 1 or failures % 10 == 0:
            log.warning(
                "flag follower: reading %s/%s failed (%d in a row): %s", tenant, FLAGS_TOPIC, failures, error
            )
        await asyncio.sleep(min(first * 2 ** (failures - 1), longest))
        asked_at = asyncio.get_running_loop().time()
        try:
            revision = await self._describe(tenant)
        except RaftlogError:
            return True  # the cluster does not answer: keep trying to read
        if followed.since < asked_at:
            self._found(tenant, revision, asked_at)
        return self._followed.get(tenant) is followed
