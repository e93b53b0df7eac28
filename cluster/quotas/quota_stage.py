"""``QuotaStage``: quotas and fairness at the front door (a
``cluster.frontend.front_door.Stage``), and ``MeteredLogService``, which
charges what fetches answered.

Per admitted public call of a tenant, before its handler:

1. ``QuotaService.admit`` charges one request; a ``Produce`` is also checked
   against the storage quota and charged its batch bytes, a ``Fetch`` meets
   the fetch debt earlier answers left (both only on the partition's
   leader). Over a quota the call is refused there (``QUOTA_EXCEEDED``,
   nothing charged); with a debt of at most ``MAX_DELAY_S`` it sleeps that
   long first.
2. A ``StreamFetch`` is counted among the tenant's open streams (refused
   over ``streams``) until it ends.
3. A ``JoinGroup``, or a ``CommitOffsets`` without a member (Kafka's simple
   commit, which creates a group too), is first checked against the key's
   group prefixes (``PERMISSION_DENIED KEY_SCOPE`` wins over the quota),
   then refused when it would create a group beyond ``groups``; the
   existence check runs only for those two methods and only when the
   tenant has a group quota, and the group's name stays reserved while the
   call runs (``QuotaService.new_group``).
   A rate refusal is *held* before it is answered (Kafka's throttle:
   delay the answer rather than only ask the client to wait): the call
   sleeps its retry-after (at most ``MAX_RETRY_AFTER_S``) and is admitted
   once more, served if it fits by then, refused otherwise. A client that
   ignores retry-after can then make a node refuse no more than about
   (its calls in flight) / (the retry-after) calls a second, each costing
   a sleeping coroutine rather than a refusal's work; a polite client just
   sees a slower answer. At most ``MAX_HELD`` calls and ``MAX_HELD_BYTES``
   of request bytes per tenant are held on a node (what a hold keeps in
   memory); beyond that a refusal is answered at once.
4. ``Produce`` and ``Fetch`` then take their turn in the node's
   ``FairScheduler`` (per-tenant queues served round-robin): a produce, or a
   fetch that does not wait for data, holds a slot for the whole call; a
   long-poll fetch only takes its turn (holding a slot through a 30 s wait
   would let idle consumers starve everyone).

Fetch bytes are known only after the read: ``MeteredLogService`` (the
node's ``LogService`` with ``Fetch`` and ``StreamFetch`` metered) charges
the batch bytes of each answer this node read as the partition's leader
(a forwarded answer is charged by the leader that read it). A stream waits
out the debt its message made before it reads the next one, so a stream is
paced at the tenant's fetch share rather than refused mid-way.

With the node's ``TenantMetrics`` (cluster/quotas/tenant_metrics.py) the
stage counts each call the quotas delayed, held or refused, with the time
it cost the client; the service counts the produce and fetch bytes it
charges.

Invariants:

- Everything that can refuse runs before anything is charged or counted,
  and before the handler: a refused call did nothing (a refused produce
  wrote nothing).
- A stream's count is released exactly once, however the call ends.
- Exempt callers (operator keys in ``__system``) pass untouched.
- A held call has done nothing and holds nothing but its request: it is
  admitted (or refused) after the hold exactly as a new call would be.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any, cast

import grpc

from cluster.frontend.front_door import Caller, current_caller
from cluster.frontend.grpc_errors import ServiceError
from cluster.frontend.key_scope import check_group
from cluster.frontend.log_service import LogService
from cluster.quotas.fair_scheduler import FairScheduler
from cluster.quotas.quota_service import MAX_RETRY_AFTER_S, QuotaService, QuotaView
from raftlog.v1 import groups_pb2, log_pb2

__all__ = [
    "COMMIT_OFFSETS",
    "FETCH",
    "JOIN_GROUP",
    "PRODUCE",
    "STREAM_FETCH",
    "MeteredLogService",
    "QuotaStage",
]

_LOG = log_pb2.DESCRIPTOR.services_by_name["LogService"].full_name
_GROUPS = groups_pb2.DESCRIPTOR.services_by_name["GroupService"].full_name
PRODUCE = f"/{_LOG}/Produce"
FETCH = f"/{_LOG}/Fetch"
STREAM_FETCH = f"/{_LOG}/StreamFetch"
JOIN_GROUP = f"/{_GROUPS}/JoinGroup"
COMMIT_OFFSETS = f"/{_GROUPS}/CommitOffsets"

Sleep = Callable[[float], Awaitable[None]]
"""How the stage waits out a delay (``asyncio.sleep``; the test's own in tests)."""

MAX_HELD = 64
"""Calls of one tenant held at once on a node before refusals go out at once."""
MAX_HELD_BYTES = 16 << 20
"""Request bytes of one tenant held at once on a node (produce batches)."""


class QuotaStage:
    """The stage (see the module docstring); pass it in ``FrontDoor(...,
    stages=[...])``."""

    def __init__(
        self,
        service: QuotaService,
        view: QuotaView,
        scheduler: FairScheduler | None = None,
        sleep: Sleep = asyncio.sleep,
    ) -> None:
        self._service = service
        self._view = view
        self._scheduler = scheduler or FairScheduler()
        self._sleep = sleep
        # tenant -> (calls, request bytes) held now (module docstring, 1.)
        self._held: dict[str, tuple[int, int]] = {}

    def __call__(
        self, method: str, caller: Caller, request: Any, context: grpc.aio.ServicerContext
    ) -> AbstractAsyncContextManager[object]:
        return self._around(method, caller, request)

    @asynccontextmanager
    async def _around(self, method: str, caller: Caller, request: Any) -> AsyncIterator[object]:
        service = self._service
        if service.exempt(caller):
            yield None
            return
        tenant = caller.tenant
        async with AsyncExitStack() as held:  # what is counted or reserved, released however the call ends
            if method == STREAM_FETCH:
                service.stream_opened(tenant)  # may refuse
                held.callback(service.stream_closed, tenant)
            if method == JOIN_GROUP or (method == COMMIT_OFFSETS and not request.member_id):
                # A group outside the key's scope is refused KEY_SCOPE
                # whatever the group quota says (the handler checks it too).
                check_group(caller.principal, request.group)
                await held.enter_async_context(service.new_group(tenant, request.group))
            held_s = 0.0
            try:
                delay = self._admit(method, tenant, request)
            except ServiceError as refusal:
                delay, held_s = await self._held_then_admitted(method, tenant, request, refusal)
            if delay > 0:
                await self._sleep(delay)
            if delay > 0 or held_s > 0:
                self._throttled(tenant, held_s + delay)
            if method == PRODUCE or (method == FETCH and not request.max_wait_ms):
                async with self._scheduler.slot(tenant):
                    yield None
            elif method == FETCH:
                await self._scheduler.acquire(tenant)  # a long poll: its turn, not a slot
                self._scheduler.release()
                yield None
            else:
                yield None

    async def _held_then_admitted(
        self, method: str, tenant: str, request: Any, refusal: ServiceError
    ) -> tuple[float, float]:
        """Hold a rate refusal for its retry-after, then admit the call once
        more (module docstring, 1.): the delay it then meets and the time it
        was held. Raises ``refusal`` at once when it is not a rate's or the
        tenant already has its most held here. A refusal it raises is
        counted throttled (held time and retry-after)."""
        wait_s = refusal.info.retry_after_ms / 1000
        size = len(request.batch) if method == PRODUCE else 0
        calls, held_bytes = self._held.get(tenant, (0, 0))
        if not 0 < wait_s <= MAX_RETRY_AFTER_S or calls >= MAX_HELD or held_bytes + size > MAX_HELD_BYTES:
            self._throttled(tenant, wait_s)
            raise refusal
        self._held[tenant] = (calls + 1, held_bytes + size)
        try:
            await self._sleep(wait_s)
        finally:
            calls, held_bytes = self._held[tenant]
            if calls == 1:
                del self._held[tenant]
            else:
                self._held[tenant] = (calls - 1, held_bytes - size)
        try:
            return self._admit(method, tenant, request), wait_s
        except ServiceError as again:
            self._throttled(tenant, wait_s + again.info.retry_after_ms / 1000)
            raise

    def _throttled(self, tenant: str, seconds: float) -> None:
        metrics = self._service.metrics
        if metrics is not None:
            metrics.throttled(tenant, seconds)

    def held(self, tenant: str) -> int:
        """Calls of ``tenant`` held on this node now."""
        return self._held.get(tenant, (0, 0))[0]

    def _admit(self, method: str, tenant: str, request: Any) -> float:
        """``QuotaService.admit`` with the call's partition and bytes."""
        view, service = self._view, self._service
        if method == PRODUCE:
            group = view.group_of(tenant, request.topic, request.partition)
            return service.admit(tenant, produce_group=group, produce_bytes=len(request.batch))
        if method == FETCH:
            return service.admit(tenant, fetch_group=view.group_of(tenant, request.topic, request.partition))
        return service.admit(tenant)


class MeteredLogService(LogService):
    """``LogService`` charging the fetch bytes it answers (module docstring);
    ``sleep`` is how a stream waits out its debt (the test's clock in tests)."""

    def __init__(
        self,
        service: QuotaService,
        view: QuotaView,
        *args: Any,
        sleep: Sleep = asyncio.sleep,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._quotas = service
        self._quota_view = view
        self._pace_sleep = sleep

    def _charged(self, caller: Caller, topic: str, partition: int) -> bool:
        """Whether this node reads the partition as its leader (a forwarded
        answer is charged where it was read) and the caller pays."""
        if self._quotas.exempt(caller):
            return False
        group = self._quota_view.group_of(caller.tenant, topic, partition)
        return group is not None and self._quota_view.leads(group)

    async def Fetch(
        self, request: log_pb2.FetchRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.FetchResponse:
        response = await super().Fetch(request, context)
        caller = current_caller()
        if self._charged(caller, request.topic, request.partition):
            self._quotas.fetched(caller.tenant, sum(len(b) for b in response.batches))
        return response

    async def StreamFetch(
        self, request: log_pb2.StreamFetchRequest, context: grpc.aio.ServicerContext
    ) -> None:
        caller = current_caller()
        if not self._charged(caller, request.topic, request.partition):
            await super().StreamFetch(request, context)
            return
        paced = cast(
            grpc.aio.ServicerContext, _PacedContext(context, self._quotas, caller.tenant, self._pace_sleep)
        )
        await super().StreamFetch(request, paced)


class _PacedContext:
    """A call context whose ``write`` charges each message's batch bytes and
    then waits out the debt, before the stream reads its next message.
    Everything else is the call's own context."""

    def __init__(
        self, context: grpc.aio.ServicerContext, service: QuotaService, tenant: str, sleep: Sleep
    ) -> None:
        self._context = context
        self._service = service
        self._tenant = tenant
        self._sleep = sleep

    async def write(self, message: log_pb2.FetchResponse) -> None:
        await self._context.write(message)
        wait = self._service.fetched(self._tenant, sum(len(b) for b in message.batches))
        if wait > 0:
            await self._sleep(wait)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)
