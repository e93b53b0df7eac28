"""Per-follower replication state on the leader: ``Progress`` and ``Inflights``.

A follower is in one of three states:
- PROBE: we do not know where its log matches ours; send one append at a
  time and wait (``probe_sent``) for its answer or a heartbeat response.
- REPLICATE: logs match up to ``match``; stream appends optimistically,
  at most ``max_inflight`` unacknowledged messages (flow control).
- SNAPSHOT: it needs a snapshot; send nothing until it reports back (or the
  snapshot is deemed lost after ``snapshot_wait`` heartbeat rounds).

Invariant: ``match < next``; ``match`` only grows while this leader leads.
"""

from __future__ import annotations

import enum
from collections import deque


class ProgressState(enum.IntEnum):
    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Inflights:
    """Last indexes of the append messages sent but not yet acknowledged."""

    __slots__ = ("_capacity", "_queue")

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._queue: deque[int] = deque()

    def full(self) -> bool:
        return len(self._queue) >= self._capacity

    def add(self, last_index: int) -> None:
        self._queue.append(last_index)

    def free_le(self, index: int) -> None:
        """An acknowledgement up to ``index`` frees every message it covers."""
        queue = self._queue
        while queue and queue[0] <= index:
            queue.popleft()

    def free_first_one(self) -> None:
        if self._queue:
            self._queue.popleft()

    def reset(self) -> None:
        self._queue.clear()

    def __len__(self) -> int:
        return len(self._queue)


class Progress:
    __slots__ = (
        "inflights",
        "is_learner",
        "lease_tick",
        "match",
        "next",
        "pending_snapshot",
        "probe_sent",
        "recent_active",
        "snapshot_wait",
        "state",
    )

    def __init__(self, next_index: int, max_inflight: int, is_learner: bool = False) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_wait = 0
        self.recent_active = False
        # The leader's tick count when it sent the newest heartbeat this
        # follower acknowledged (-1: none); the basis of lease reads.
        self.lease_tick = -1
        self.is_learner = is_learner
        self.inflights = Inflights(max_inflight)

    def _reset_state(self, state: ProgressState) -> None:
        self.state = state
        self.probe_sent = False
        self.pending_snapshot = 0
        self.snapshot_wait = 0
        self.inflights.reset()

    def become_probe(self) -> None:
        if self.state == ProgressState.SNAPSHOT:
            pending = self.pending_snapshot
            self._reset_state(ProgressState.PROBE)
            self.next = max(self.match + 1, pending + 1)
        else:
            self._reset_state(ProgressState.PROBE)
            self.next = self.match + 1

    def become_replicate(self) -> None:
        self._reset_state(ProgressState.REPLICATE)
        self.next = self.match + 1

    def become_snapshot(self, snapshot_index: int) -> None:
        self._reset_state(ProgressState.SNAPSHOT)
        self.pending_snapshot = snapshot_index

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to ``index``: returns whether match grew."""
        updated = self.match < index
        if updated:
            self.match = index
            self.probe_sent = False
        self.next = max(self.next, index + 1)
        return updated

    def maybe_decrease_to(self, rejected: int, match_hint: int) -> bool:
        """A rejection of the append whose previous index was ``rejected``.
        Returns False when the rejection is stale (out of order)."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False
            self.next = self.match + 1
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, match_hint + 1), self.match + 1)
        self.probe_sent = False
        return True

    def sent_entries(self, last_index: int | None) -> None:
        """Record an append that carried entries up to ``last_index`` (None
        when it carried none)."""
        if self.state == ProgressState.REPLICATE:
            if last_index is not None:
                self.next = last_index + 1
                self.inflights.add(last_index)
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True

    def is_paused(self) -> bool:
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return self.inflights.full()
        return True

    def __repr__(self) -> str:
        return (
            f"Progress(match={self.match}, next={self.next}, state={self.state.name}, "
            f"paused={self.is_paused()}, inflight={len(self.inflights)})"
        )
