"""Wake waiting calls when this node's metadata changes.

A long-poll ``Fetch`` or an idle ``StreamFetch`` waits on a replica's
commits, and checks its caller again (``front_door.confirm_caller``) after
each wait. A revocation does not commit anything on that replica: without
a wake-up the call learns of it only at the end of its wait slice
(``log_service.CALLER_CHECK_S``). ``MetadataWatch`` ends such waits as soon
as this node applies a metadata entry, so a revoked key's stream ends
milliseconds after the node learns of the revocation; the slice stays as
the bound for what no entry announces (a key's expiry, a lost leadership).

How: one watcher task per watch waits on the metadata's ``wait_changed``
while anybody waits, and calls every registered ``wake`` on each change.
A waiter registers for the length of one wait (``waking``); the usual wake
cuts an ``asyncio.timeout`` short (``wait_cut_short``), so a wait costs no
task of its own.

Invariants:

- A change applied after a waiter registered wakes it (the watcher waits
  from a version no later than the one current at registration); a wake
  may also be spurious (a change just before it registered), which costs
  one more caller check, never a missed one.
- ``wake`` callbacks run in the watcher's task and must not raise or await.
- No task outlives the waits by more than ``IDLE_S``: the watcher ends once
  nobody has waited for that long.
- The watcher starts in an empty ``contextvars.Context``: it is started by
  whichever call first waits (a ``StreamFetch`` handler) but serves every
  later waiter, so it must not carry that call's caller (tenant), span or
  log group; whatever it logs is the node's, not one call's.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol

__all__ = ["IDLE_S", "MetadataWatch", "VersionedMetadata"]

IDLE_S = 1.0
"""How long the watcher task waits for a change before checking whether
anybody still waits (and ending if not)."""


class VersionedMetadata(Protocol):
    """What the watch reads of this node's metadata (``ControllerReplica``):
    ``version`` grows with every applied change; ``wait_changed(v, t)``
    returns the version once it is not ``v`` any more, or after ``t``."""

    @property
    def version(self) -> int: ...

    async def wait_changed(self, version: int, timeout: float | None = None) -> int: ...


class MetadataWatch:
    """See the module docstring."""

    def __init__(self, metadata: VersionedMetadata) -> None:
        self._metadata = metadata
        self._wakers: set[Callable[[], None]] = set()
        self._watcher: asyncio.Task[None] | None = None

    @contextlib.contextmanager
    def waking(self, wake: Callable[[], None]) -> Iterator[None]:
        """Call ``wake`` on every metadata change while the block runs."""
        self._wakers.add(wake)
        if self._watcher is None or self._watcher.done():
            # A clean context: not the starting call's (module invariants).
            self._watcher = asyncio.get_running_loop().create_task(
                self._watch(self._metadata.version),
                name="raftlog-metadata-watch",
                context=contextvars.Context(),
            )
        try:
            yield
        finally:
            self._wakers.discard(wake)

    async def wait_cut_short(self, waiting: Awaitable[object]) -> None:
        """Await ``waiting``, or stop awaiting it (cancelled) at the next
        metadata change; either way return normally."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(None) as cut:

                def wake() -> None:
                    if not cut.expired():  # a second change before the first cut landed
                        cut.reschedule(loop.time())

                with self.waking(wake):
                    await waiting

    async def _watch(self, version: int) -> None:
        metadata = self._metadata
        while self._wakers:
            now = await metadata.wait_changed(version, IDLE_S)
            if now != version:
                version = now
                for wake in tuple(self._wakers):
                    wake()
