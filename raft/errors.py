"""The Raft core's exceptions: one small tree under ``RaftError``.

Callers catch ``ProposalDropped`` (retry elsewhere or later) and the storage
errors; anything else is a programming error.
"""

from __future__ import annotations


class RaftError(Exception):
    """Base of every error raised by the Raft core."""


class ProposalDropped(RaftError):
    """The proposal was not appended; nothing about it was recorded."""


class NotLeader(ProposalDropped):
    """This node is not the leader. ``leader`` is the known leader or 0."""

    def __init__(self, leader: int) -> None:
        super().__init__(f"not the leader (known leader: {leader or 'none'})")
        self.leader = leader


class LeaderTransferInProgress(ProposalDropped):
    """The leader is handing over; proposals wait for the new leader."""


class ConfChangePending(ProposalDropped):
    """A membership change is already in flight (one at a time)."""


class InvalidConfChange(ProposalDropped):
    """The change makes no sense for the current membership."""


class TooManyUncommitted(ProposalDropped):
    """Backpressure: uncommitted entries exceed the configured budget."""


class StorageError(RaftError):
    """Base of the errors a ``Storage`` may raise to the core."""


class Compacted(StorageError):
    """The requested index lies before the first index kept in the log."""


class Unavailable(StorageError):
    """The requested index lies beyond the last index in storage."""


class SnapshotTemporarilyUnavailable(StorageError):
    """The snapshot is being built; the core will retry later."""


class UsageError(RaftError):
    """The core was driven against its contract (e.g. step between ready
    and advance)."""
