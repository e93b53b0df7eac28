"""What every part of ``RaftNode`` shares: its state, typed once, and the
plumbing and role changes they all use.

``RaftNode`` (raft/node.py) is one object assembled from mixins, each a slice
of the same state machine rather than a component of its own: the election
(raft/election.py), the follower's side (raft/follower.py) and the leader's
(raft/leader.py). They read and write the attributes declared here, which
``RaftNode.__init__`` sets, and call one another's methods directly: a
mixin method costs the same per message as it did in one class, where a
wrapper would add a call.

Invariants:
- Every attribute of the node is declared here, once, with its type; only
  ``RaftNode.__init__`` and methods of the node's classes assign them.
- A message that promises something about this node's disk (a vote, a vote
  grant, an append or heartbeat response) leaves only in
  ``messages_after_persist``, after the Ready that produced it is persisted
  (raft/storage.py, rule 3); only the test hazard
  ``unsafe_ack_before_persist`` lets it out earlier.
- After construction the term changes only in ``_reset``, and a new term
  clears the vote with it. ``_reset`` also drops everything a leader keeps
  for its term (progress, pending reads, a transfer, the lease,
  uncommitted bytes), so none of it outlives the term it was built in.
- The membership follows the log: appending or rewriting entries goes
  through ``_on_entries_written``, which keeps ``_membership`` and the
  tracker's configuration in step (a snapshot resets both with the log).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from raft.config import RaftConfig
from raft.errors import UsageError
from raft.log import RaftLog
from raft.membership import MembershipLog, decode_conf_change
from raft.read_only import ReadOnly
from raft.ready import Ready
from raft.tracker import ProgressTracker
from raft.types import (
    NO_NODE,
    Entry,
    EntryKind,
    HardState,
    Message,
    MessageType,
    ReadState,
    Role,
    SoftState,
)

MT = MessageType

# Messages that promise something about this node's disk: they leave only
# after the Ready that produced them is persisted (raft/storage.py, rule 3).
_AFTER_PERSIST = frozenset({MT.VOTE, MT.VOTE_RESPONSE, MT.APPEND_RESPONSE, MT.HEARTBEAT_RESPONSE})
_FROM_LEADER = frozenset({MT.APPEND, MT.HEARTBEAT, MT.SNAPSHOT})
_VOTE_RESPONSE_TYPE = {MT.VOTE: MT.VOTE_RESPONSE, MT.PRE_VOTE: MT.PRE_VOTE_RESPONSE}
_VOTE_REQUESTS = frozenset(_VOTE_RESPONSE_TYPE)


class NodeBase:
    """The state of one ``RaftNode``; ``RaftNode.__init__`` says what each
    public counter means."""

    # Configuration and the durable parts.
    config: RaftConfig
    id: int
    _rng: random.Random
    log: RaftLog
    term: int
    vote: int
    _membership: MembershipLog
    tracker: ProgressTracker

    # Role and timers (ticks).
    role: Role
    leader: int
    _election_elapsed: int
    _leader_silent: int
    _heartbeat_elapsed: int
    _randomized_timeout: int
    _boot_quiet: bool

    # Counters of elections started, by cause.
    election_timeouts: int
    transfer_campaigns: int
    requested_campaigns: int
    leaderless_timeouts: int

    # The leader's state for its term (cleared by _reset).
    _leader_ticks: int
    _lease_forfeited: bool
    _lead_transferee: int
    _uncommitted_bytes: int
    _read_only: ReadOnly
    _reads_waiting_for_commit: list[tuple[bytes, int]]
    _broadcast_pending: bool

    # Outputs waiting for the next Ready, and what the last one reported.
    _messages: list[Message]
    _messages_after_persist: list[Message]
    _read_states: list[ReadState]
    _prev_hard_state: HardState
    _prev_soft_state: SoftState
    _pending_ready: Ready | None
    dropped_messages: dict[str, int]

    if TYPE_CHECKING:
        # Defined by one mixin, called by another (declared for mypy only,
        # so nothing stands between a call and the real method at run time).
        def _become_leader(self) -> None: ...  # raft/leader.py
        def _hup(self, transfer: bool) -> bool: ...  # raft/election.py
        def _step_follower(self, m: Message) -> None: ...  # raft/follower.py

    # ------------------------------------------------------------------
    # plumbing
    # ------------------------------------------------------------------

    def _send(self, m: Message) -> None:
        if m.type in _AFTER_PERSIST and not self.config.unsafe_ack_before_persist:
            self._messages_after_persist.append(m)
        else:
            self._messages.append(m)

    def _reply(
        self,
        m: Message,
        kind: MessageType,
        *,
        index: int = 0,
        reject: bool = False,
        reject_hint: int = 0,
        log_term: int = 0,
        context: bytes = b"",
    ) -> None:
        """Answer ``m``'s sender at our current term."""
        self._send(
            Message(
                kind,
                to=m.sender,
                sender=self.id,
                term=self.term,
                index=index,
                reject=reject,
                reject_hint=reject_hint,
                log_term=log_term,
                context=context,
            )
        )

    def _check_not_in_ready(self) -> None:
        if self._pending_ready is not None:
            raise UsageError("ready() was called and advance() has not been yet")

    # ------------------------------------------------------------------
    # roles and membership
    # ------------------------------------------------------------------

    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NO_NODE
        self.leader = NO_NODE
        self._election_elapsed = 0
        self._leader_silent = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = self._rng.randrange(
            self.config.election_tick, 2 * self.config.election_tick
        )
        self._lead_transferee = NO_NODE
        self._leader_ticks = 0
        self._lease_forfeited = False
        self.tracker.votes = {}
        self.tracker.reset_progress(self.log.last_index() + 1)
        self._read_only = ReadOnly()
        self._reads_waiting_for_commit = []
        self._uncommitted_bytes = 0
        self._broadcast_pending = False

    def _become_follower(self, term: int, leader: int) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader = leader

    def _on_entries_written(self, first: int, entries: tuple[Entry, ...]) -> None:
        """Keep the membership in step with a log rewritten from ``first``."""
        changed = self._membership.truncate_from(first)
        for entry in entries:
            if entry.kind == EntryKind.CONF_CHANGE:
                self._membership.append(entry.index, decode_conf_change(entry.data))
                changed = True
        if changed:
            self.tracker.set_conf(self._membership.current, self.log.last_index() + 1)
