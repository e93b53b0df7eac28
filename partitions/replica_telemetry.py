"""``ReplicaTelemetry``: what a ``RaftReplica`` (partitions/raft_replica.py)
records about itself for the node's metrics and traces, kept apart from
what it does.

The replica owns one and calls it from its owner task; the telemetry
collector (cluster/telemetry/node_collector.py) reads it at scrape time,
through the replica's accessors (``follower_lag``, ``elections_started``,
``dropped_messages``) and the host's shared ``ReplicaCounters``.

Invariants:

- Recording never changes what the replica does or answers: nothing here
  decides, refuses or reorders anything, and a failure to record cannot
  happen (additions, a bisect, array appends).
- Costs on the hot path: one ``time.monotonic_ns()`` per proposal when it
  is submitted and one per Ready that commits a waiting proposal (both
  taken by the replica itself, so that an untimed proposal pays no call
  here); one ``Buckets.observe`` per proposal of this leader's term when
  it applies (``ReplicaCounters.commit_latency``: propose -> the Ready
  that says it committed); ``record_sizes`` once per Ready that stores
  entries (``LogBytes``, so a leader can tell its followers' lag in
  bytes). The replica reaches all of it through one attribute,
  ``_telemetry``.
- A proposal submitted with ``next_proposal_timing`` set
  (partitions/proposal_timing.py) gets its marks filled: index, the
  group-commit sync that wrote the leader's copy (``write_marked``, which
  the replica uses instead of a plain write only while ``timed`` > 0),
  committed and applied. ``timed`` counts the waiting proposals that carry
  marks; it is 0 whenever the replica has none waiting.
- Elections by reason, peers' messages the core dropped and snapshots sent
  are counters, read at scrape time (the first two from the ``RaftNode``,
  as copies a reader never sees change).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from partitions.group_commit import sync_marks
from partitions.latency_buckets import LATENCY_BOUNDS_S, Buckets
from partitions.log_bytes import LogBytes
from partitions.proposal_timing import ProposalTiming
from partitions.raft_storage import PreparedWrite
from raft.node import RaftNode
from raft.types import Entry, Role

if TYPE_CHECKING:
    from partitions.raft_replica import _Waiting

__all__ = ["ReplicaCounters", "ReplicaTelemetry"]


@dataclass(slots=True)
class ReplicaCounters:
    """Counters shared by the replicas of one host (mutable, event loop only)."""

    synced_entries: int = 0
    """Raft entries in writes that asked for a sync; divided by the writer's
    syncs it gives the record batches one fsync carries."""
    snapshots_sent: int = 0
    """Snapshots the replicas here sent to followers, as leaders."""
    commit_latency: Buckets = field(default_factory=lambda: Buckets(LATENCY_BOUNDS_S))
    """Seconds from a leader's proposal to the Ready saying it committed."""


class ReplicaTelemetry:
    """One replica's recording (module docstring). ``node`` is the
    replica's Raft core, read only; ``counters`` is shared by the host."""

    __slots__ = ("_node", "_node_id", "counters", "log_bytes", "timed")

    def __init__(self, node: RaftNode, node_id: int, counters: ReplicaCounters) -> None:
        self._node = node
        self._node_id = node_id
        self.counters = counters
        self.log_bytes = LogBytes()
        self.timed = 0
        """Waiting proposals with a ``ProposalTiming`` (0: skip the marks)."""

    # --- the owner task ------------------------------------------------------

    def snapshot_sent(self) -> None:
        self.counters.snapshots_sent += 1

    def snapshot_installed(self) -> None:
        """The entries before the snapshot are gone: so is their record."""
        self.log_bytes.reset()

    def record_sizes(self, entries: Sequence[Entry]) -> None:
        """Entries just stored. Past its bound the record keeps what the
        slowest follower still lacks (a leader's), else the newest."""
        sizes = self.log_bytes
        sizes.record(entries)
        if sizes.needs_trim():
            node = self._node
            floor = node.last_index
            if node.role == Role.LEADER:
                for peer in node.effective_conf_state.all_nodes():
                    progress = node.progress(peer)
                    if peer != self._node_id and progress is not None:
                        floor = min(floor, progress.match)
            sizes.trim(floor)

    async def write_marked(
        self,
        write: Callable[[PreparedWrite], Awaitable[None]],
        prepared: PreparedWrite,
        entries: Sequence[Entry],
        pending: Mapping[int, _Waiting],
    ) -> None:
        """``write(prepared)`` of a Ready appending ``entries``, some of
        them timed proposals': the writer reports when the batch carrying
        it was written, and each timed proposal among the entries gets
        those marks."""
        marks = [0, 0]
        token = sync_marks.set(marks)
        try:
            await write(prepared)
        finally:
            sync_marks.reset(token)
        for entry in entries:
            waiting = pending.get(entry.index)
            timing = waiting[3] if waiting is not None else None
            if timing is not None:
                timing.sync_started_ns, timing.sync_ended_ns = marks

    @staticmethod
    def mark_applied(timing: ProposalTiming, future: asyncio.Future[Any]) -> None:
        """A timed proposal of this term was answered: applied, if the
        answer is a result (a refusal is not an apply)."""
        if future.done() and not future.cancelled() and future.exception() is None:
            timing.applied_ns = time.monotonic_ns()

    # --- scrape time ---------------------------------------------------------

    def elections_started(self) -> dict[str, int]:
        node = self._node
        return {
            "election_timeout": node.election_timeouts,
            "leader_transfer": node.transfer_campaigns,
            "campaign": node.requested_campaigns,
            "no_leader": node.leaderless_timeouts,
        }

    def dropped_messages(self) -> dict[str, int]:
        return dict(self._node.dropped_messages)

    def follower_lag(self) -> list[tuple[int, int, int]]:
        node = self._node
        if node.role != Role.LEADER:
            return []
        last = node.last_index
        lags: list[tuple[int, int, int]] = []
        for peer in node.effective_conf_state.all_nodes():
            if peer == self._node_id:
                continue
            progress = node.progress(peer)
            if progress is None:
                continue
            entries = max(0, last - progress.match)
            size = self.log_bytes.bytes_after(progress.match, last)[0] if entries else 0
            lags.append((peer, entries, size))
        return lags
