"""``ControllerReplica``: this node's member of the metadata controller,
Raft group 0.

The controller-eligible nodes are its voters; every other node is a learner,
so every node applies the metadata log and answers metadata questions from
its own copy (``state``). Only the group's leader proposes
(``submit``); other nodes' front ends forward admin calls to it.

Invariants:

- ``state`` is the ``ControllerState`` after the applied prefix of the log;
  callers read it synchronously and never keep it across an ``await`` (the
  replica replaces it when a snapshot is installed).
- ``version`` grows every time applied state may have changed;
  ``wait_changed`` wakes every waiter then. Watchers (the reconciler, the
  bootstrap duties) loop on it and re-read ``state``: a missed wake-up
  cannot lose a change.
- The log is compacted behind a snapshot every ``SNAPSHOT_EVERY`` entries;
  the snapshot is the state's own canonical bytes, so a follower restored
  from it equals one that applied every entry.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cluster.controller import ApplyResult, ControllerState
from partitions.raft_replica import RaftReplica

CONTROLLER_GROUP = 0
SNAPSHOT_EVERY = 1024
"""Entries applied after the last snapshot before a new one is taken."""


class ControllerReplica(RaftReplica[ControllerState]):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.version = 0
        self._changed = asyncio.Event()
        self._snapshot_index = 0
        super().__init__(*args, **kwargs)

    def _restore(self, index: int, data: bytes) -> ControllerState:
        # The bootstrap snapshot (index 1) carries no data: an empty state.
        self._snapshot_index = index
        return ControllerState.restore(data, index=index) if data else ControllerState()

    @property
    def state(self) -> ControllerState:
        return self._sm

    @property
    def leader_address(self) -> str:
        """The group's leader's registered address ("" while there is no
        leader, or it is not registered here yet)."""
        node = self._sm.node(self.leader) if self.leader else None
        return node.address if node is not None else ""

    async def submit(self, command: bytes) -> ApplyResult:
        """Propose an encoded command (this replica must lead) and return
        what applying it gave."""
        result: ApplyResult = await self.propose(command)
        return result

    async def wait_changed(self, version: int, timeout: float | None = None) -> int:
        """Wait until ``version`` is behind (or ``timeout`` passes); returns
        the current version."""
        while self.version == version:
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), timeout)
            except TimeoutError:
                break
        return self.version

    async def wait_applied(self, index: int, timeout: float) -> bool:
        """Wait until this replica's metadata has applied ``index`` (or
        ``timeout`` passes); whether it has."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        version = self.version
        while self._sm.applied_index < index:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            version = await self.wait_changed(version, remaining)
        return True

    def _on_applied(self) -> None:
        self._bump()
        if self._sm.applied_index - self._snapshot_index >= SNAPSHOT_EVERY:
            self.request_housekeeping()

    def _bump(self) -> None:
        self.version += 1
        self._changed.set()

    def _on_leader_changed(self) -> None:
        self._bump()  # the bootstrap duties start or stop with leadership

    async def _housekeeping(self) -> None:
        index = self._sm.applied_index
        if index - self._snapshot_index < SNAPSHOT_EVERY:
            return
        await self._snapshot_and_compact(index, self._sm.snapshot())
        self._snapshot_index = index
