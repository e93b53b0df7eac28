"""When a proposal reached each step of its way through a replica: the
marks a trace turns into child spans (propose -> commit -> apply, and the
group-commit sync that made the leader's copy durable), the metrics turn
into the commit-latency histogram, and ``observe_stages`` splits into the
stages of one produce call (``STAGES``) for the per-stage histogram.

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
- ``received_ns`` is the caller's own mark (the handler began), set by
  the caller, never by the replica; the stages are consecutive, so the
  stages observed for a call with every mark add up to its ``total``
  (up to the clamping below).

The stages of one produce call (``STAGES``, in path order), each between
two marks, observed only when both are set (not 0):

- ``propose``: received -> proposed (the handler's own work before the
  proposal entered the replica's inbox: lookups, checks);
- ``append``: proposed -> sync_started (waiting for the replica's turn on
  the event loop and for the group-commit queue);
- ``sync``: sync_started -> sync_ended (the leader's own synced write);
- ``replicate``: sync_ended -> committed (waiting for a quorum beyond the
  leader's copy); clamped at 0, since the followers may form a quorum
  before the leader's own sync ends;
- ``apply``: committed -> applied;
- ``reply``: applied -> resumed (the caller's coroutine ran again: the
  event-loop wait between the answer and the caller);
- ``total``: received -> resumed.

Every stage is clamped at 0: only ``replicate`` can be negative when the
invariants above hold, and a histogram must not get a negative value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass

__all__ = ["STAGES", "ProposalTiming", "next_proposal_timing", "observe_stages"]

STAGES: tuple[str, ...] = ("propose", "append", "sync", "replicate", "apply", "reply", "total")
"""The stages of a produce call, in path order (module docstring)."""


@dataclass(slots=True)
class ProposalTiming:
    received_ns: int = 0
    """The caller's handler began (set by the caller, before any lookup)."""
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


def observe_stages(
    timing: ProposalTiming, resumed_ns: int, observers: Sequence[Callable[[float], None]]
) -> None:
    """Hand each stage's seconds (module docstring) to its observer:
    ``observers`` has one per stage, in ``STAGES`` order; a stage with a
    mark missing is skipped. ``resumed_ns``: the caller ran again after
    the proposal's answer (0: not known). On the produce path: plain
    arithmetic and one call per stage, nothing built."""
    propose, append, sync, replicate, apply, reply, total = observers
    received = timing.received_ns
    proposed = timing.proposed_ns
    sync_started = timing.sync_started_ns
    sync_ended = timing.sync_ended_ns
    committed = timing.committed_ns
    applied = timing.applied_ns
    if received and proposed:
        propose(max(0, proposed - received) / 1e9)
    if proposed and sync_started:
        append(max(0, sync_started - proposed) / 1e9)
    if sync_started and sync_ended:
        sync(max(0, sync_ended - sync_started) / 1e9)
    if sync_ended and committed:
        replicate(max(0, committed - sync_ended) / 1e9)
    if committed and applied:
        apply(max(0, applied - committed) / 1e9)
    if applied and resumed_ns:
        reply(max(0, resumed_ns - applied) / 1e9)
    if received and resumed_ns:
        total(max(0, resumed_ns - received) / 1e9)
