"""When a proposal reached each step of its way through a replica: the
marks a trace turns into child spans (propose -> commit -> apply, and the
group-commit sync that made the leader's copy durable) and the metrics turn
into the commit-latency histogram.

A caller that wants the marks of its next proposal sets
``next_proposal_timing`` (a ``ContextVar``) to a fresh ``ProposalTiming``
around the call that proposes (``RaftReplica.propose`` reads it in the
caller's task, when the proposal is submitted); the replica fills it in as
the proposal moves on. Nothing is recorded for a proposal made without it
except what the replica's own counters keep.

Invariants:

- Every mark is ``time.monotonic_ns()`` on this node, or 0 for a step not
  reached (a proposal that failed, or a follower's sync not waited for).
- Marks only grow along the path: proposed <= sync_started <= sync_ended,
  proposed <= committed <= applied, for the steps reached.
- Filling marks never changes what the replica does or answers.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["ProposalTiming", "next_proposal_timing"]


@dataclass(slots=True)
class ProposalTiming:
    proposed_ns: int = 0
    """The proposal entered the replica's inbox (``propose`` was called)."""
    index: int = 0
    """The Raft log index the entry got (0 until appended)."""
    sync_started_ns: int = 0
    """The group-commit sync that wrote the leader's copy of the entry began."""
    sync_ended_ns: int = 0
    """... and ended (the leader's copy is durable)."""
    committed_ns: int = 0
    """The replica learned the entry is committed (a quorum has it)."""
    applied_ns: int = 0
    """The state machine applied it (the caller's answer is ready)."""


next_proposal_timing: ContextVar[ProposalTiming | None] = ContextVar("next_proposal_timing", default=None)
