"""``FairScheduler``: a node's produce and fetch work, served fairly across
tenants.

A node runs at most ``slots`` produce/fetch calls at once. A call that finds
a free slot and nobody waiting takes it at once (no await, no allocation
beyond the context manager: the uncontended path costs a counter). When the
slots are taken, the call waits in its *tenant's* FIFO queue, and every
freed slot goes to the next tenant in round-robin order that has a waiter.
So a tenant with a thousand calls queued and a tenant with one each get
every other slot: the second tenant's call waits behind at most one call
per other waiting tenant, never behind the flooding tenant's backlog. Quotas
bound how much a tenant may do; this bounds how much one tenant's queue
delays another's inside one node, also below its quota.

Invariants:

1. ``active <= slots``; a waiter exists only while ``active == slots``
   (a freed slot goes straight to a waiter, never back to the pool while
   someone waits).
2. Within a tenant, calls are served in arrival order (FIFO).
3. Across tenants, slots are handed out round-robin over the tenants that
   have waiters: between two grants to one tenant, every other tenant that
   was waiting at the first grant gets one.
4. A waiter that is cancelled (its call ended) leaves its queue and never
   holds a slot; if it was granted one in the same loop turn, the slot is
   passed on. ``active`` counts exactly the granted, unreleased slots.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

__all__ = ["DEFAULT_SLOTS", "FairScheduler"]

DEFAULT_SLOTS = 32
"""Concurrent produce/fetch calls per node: enough to keep the replicas'
group commit busy (a produce mostly waits for its commit), few enough that a
backlog waits in the tenant queues rather than in the event loop."""


class FairScheduler:
    """See the module docstring. Use from one event loop."""

    __slots__ = ("_active", "_queues", "_slots")

    def __init__(self, slots: int = DEFAULT_SLOTS) -> None:
        if slots < 1:
            raise ValueError(f"slots must be >= 1, got {slots}")
        self._slots = slots
        self._active = 0
        # tenant -> its waiters, in arrival order; the dict's order is the
        # round-robin order (a served tenant with more waiters moves to the end).
        self._queues: OrderedDict[str, deque[asyncio.Future[None]]] = OrderedDict()

    @property
    def active(self) -> int:
        return self._active

    def waiting(self, tenant: str | None = None) -> int:
        """Calls waiting for a slot (of ``tenant``, or of every tenant)."""
        if tenant is not None:
            return len(self._queues.get(tenant, ()))
        return sum(len(q) for q in self._queues.values())

    @asynccontextmanager
    async def slot(self, tenant: str) -> AsyncIterator[None]:
        """Hold one slot for the body (waiting in ``tenant``'s queue first
        when the slots are taken)."""
        await self.acquire(tenant)
        try:
            yield
        finally:
            self.release()

    async def acquire(self, tenant: str) -> None:
        if self._active < self._slots and not self._queues:
            self._active += 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        queue = self._queues.get(tenant)
        if queue is None:
            queue = self._queues[tenant] = deque()
        queue.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted in the same turn it was cancelled: pass it on
            else:
                self._forget(tenant, waiter)
            raise

    def release(self) -> None:
        """Free one slot: to the next tenant's first waiter, or to the pool."""
        while self._queues:
            tenant, queue = next(iter(self._queues.items()))
            waiter = queue.popleft()
            if queue:
                self._queues.move_to_end(tenant)
            else:
                del self._queues[tenant]
            if not waiter.done():
                waiter.set_result(None)  # the slot passes on: active unchanged
                return
        self._active -= 1

    def _forget(self, tenant: str, waiter: asyncio.Future[None]) -> None:
        queue = self._queues.get(tenant)
        if queue is None:
            return
        try:
            queue.remove(waiter)
        except ValueError:
            return
        if not queue:
            del self._queues[tenant]
