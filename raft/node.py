"""``RaftNode``: one member of one Raft group, as a pure state machine.

Inputs are method calls (``tick``, ``step``, ``propose``, ``read_index``,
``transfer_leader``, ``propose_conf_change``, ``campaign``, reports); outputs
come out of ``ready()`` as one ``Ready`` and are acknowledged with
``advance()``. Nothing here does I/O, reads a clock or uses global
randomness: given the same storage, the same seeded ``random.Random`` and the
same inputs, a node produces the same outputs.

Invariants (the Raft paper's, in this code's words):
- Election safety: a node grants at most one vote per term, and the vote is
  durable before the grant leaves (storage contract, raft/storage.py).
- A leader never overwrites or deletes entries in its log; it appends.
- Commit only by counting replicas of an entry of the leader's current term
  (§5.4.2); older entries are committed indirectly.
- Log matching: an append is accepted only if the follower holds the entry
  before it, with the same term; conflicting uncommitted tails are replaced.
- Election restriction: votes only for candidates whose log is at least as
  up to date (§5.4.1).
- Membership is one change at a time, effective when appended
  (raft/membership.py explains why that is safe).
- Applied <= committed <= last index; entries are applied only once they are
  persisted locally.
- A peer's message never makes ``step`` raise or corrupt state: one no
  correct peer could send, or a non-voter's attempt to raise our term in an
  election, is dropped and counted in ``dropped_messages``
  (raft/screening.py).
"""

from __future__ import annotations

import random

from raft.config import RaftConfig
from raft.errors import (
    Compacted,
    ConfChangePending,
    LeaderTransferInProgress,
    NotLeader,
    SnapshotTemporarilyUnavailable,
    TooManyUncommitted,
    UsageError,
)
from raft.log import RaftLog
from raft.membership import MembershipLog, decode_conf_change, encode_conf_change, validate_conf_change
from raft.progress import Progress, ProgressState
from raft.read_only import ReadOnly
from raft.ready import Ready
from raft.screening import MISADDRESSED, defect, defect_for
from raft.storage import Storage
from raft.tracker import ProgressTracker, VoteResult
from raft.types import (
    CAMPAIGN_TRANSFER,
    NO_NODE,
    ConfChange,
    ConfState,
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


class RaftNode:
    def __init__(
        self, config: RaftConfig, storage: Storage, rng: random.Random, applied: int | None = None
    ) -> None:
        config.validate()
        self.config = config
        self.id = config.id
        self._rng = rng
        self.log = RaftLog(storage, applied)

        hard_state, conf = storage.initial_state()
        self.term = hard_state.term
        self.vote = NO_NODE if config.unsafe_forget_vote_on_restart else hard_state.vote
        self._membership = MembershipLog(storage.first_index() - 1, conf)
        for entry in storage.conf_entries(storage.first_index()):
            self._membership.append(entry.index, decode_conf_change(entry.data))
        self.tracker = ProgressTracker(config.max_inflight_msgs)
        self.tracker.set_conf(self._membership.current, self.log.last_index() + 1)

        self.role = Role.FOLLOWER
        self.leader = NO_NODE
        self._election_elapsed = 0
        self._leader_silent = 0  # ticks since this group's leader last spoke (heard_from_node)
        self._heartbeat_elapsed = 0
        self._randomized_timeout = config.election_tick
        self.election_timeouts = 0
        """Elections this node started because the leader it followed went
        silent (not transfers, not a group's first election, not retries of
        an election that found no leader): with every node up, each one is
        a spurious election."""
        self.transfer_campaigns = 0
        """Elections this node started because the leader handed it
        leadership (a ``TIMEOUT_NOW``)."""
        self.requested_campaigns = 0
        """Elections started by a ``campaign()`` call that was not ignored."""
        self.leaderless_timeouts = 0
        """Elections this node started when its timer ran out while it knew
        no leader: a group's first election, or a retry after one that
        found no leader (not counted in ``election_timeouts``)."""
        # Lease reads: ticks this node has led for, and whether this term's
        # lease was given away by a TIMEOUT_NOW (the transferee's campaign
        # overrides followers' leases, so it may win at any moment).
        self._leader_ticks = 0
        self._lease_forfeited = False
        # With lease reads, a restarted node behaves as if it had just heard
        # from a leader: it may have acknowledged a lease before it crashed,
        # and must not vote until that lease has run out. (Bootstrap puts a
        # group at term 1 with no leader, so a node at term <= 1 never
        # acknowledged one.)
        self._boot_quiet = config.read_only_lease_based and hard_state.term > 1
        self._lead_transferee = NO_NODE
        self._uncommitted_bytes = 0
        self._read_only = ReadOnly()
        # Reads asked before this leader committed an entry of its term: its
        # commit index may still be behind the previous leader's.
        self._reads_waiting_for_commit: list[tuple[bytes, int]] = []
        self._broadcast_pending = False

        self._messages: list[Message] = []
        self._messages_after_persist: list[Message] = []
        self._read_states: list[ReadState] = []
        self._prev_hard_state = hard_state
        self._prev_soft_state = SoftState()
        self._pending_ready: Ready | None = None
        self.dropped_messages: dict[str, int] = {}
        """Messages ``step`` refused, by reason (raft/screening.py): never
        acted on, never a reason to raise."""
        self._become_follower(self.term, NO_NODE)

    # ------------------------------------------------------------------
    # observation
    # ------------------------------------------------------------------

    @property
    def commit_index(self) -> int:
        return self.log.committed

    @property
    def applied_index(self) -> int:
        return self.log.applied

    @property
    def last_index(self) -> int:
        return self.log.last_index()

    @property
    def first_index(self) -> int:
        return self.log.first_index()

    @property
    def conf_state(self) -> ConfState:
        """Membership as of the applied index: what a snapshot taken now
        must record."""
        return self._membership.at(self.log.applied)

    def conf_state_at(self, index: int) -> ConfState:
        """Membership once the log is applied up to ``index`` (for a snapshot
        taken at an index before the applied one). Valid for indexes from the
        first index - 1 on."""
        return self._membership.at(index)

    @property
    def effective_conf_state(self) -> ConfState:
        """Membership in force now: the latest configuration in the log."""
        return self._membership.current

    @property
    def committed_conf_state(self) -> ConfState:
        """Membership as of the commit index: unlike the effective one, a
        change counted here can never be undone by a truncation."""
        return self._membership.at(self.log.committed)

    @property
    def lead_transferee(self) -> int:
        return self._lead_transferee

    def term_at(self, index: int) -> int | None:
        return self.log.term_or_none(index)

    def progress(self, node: int) -> Progress | None:
        """The leader's replication state for ``node`` (None elsewhere)."""
        return self.tracker.progress.get(node) if self.role == Role.LEADER else None

    def soft_state(self) -> SoftState:
        return SoftState(leader=self.leader, role=self.role)

    def hard_state(self) -> HardState:
        return HardState(term=self.term, vote=self.vote, commit=self.log.committed)

    # ------------------------------------------------------------------
    # inputs
    # ------------------------------------------------------------------

    def tick(self) -> None:
        self._check_not_in_ready()
        if self.role == Role.LEADER:
            self._tick_leader()
        else:
            self._tick_election()

    def campaign(self) -> None:
        """Start an election now (as if the election timeout had passed).

        With lease reads this is ignored while this node has heard from a
        live leader within an election timeout: the leader's lease counts on
        this node neither voting nor campaigning then (use
        ``transfer_leader`` to move leadership safely)."""
        self._check_not_in_ready()
        if self.config.read_only_lease_based and self.role != Role.LEADER and self._in_lease():
            return
        if self._hup(transfer=False):
            self.requested_campaigns += 1

    def propose(self, data: bytes) -> int:
        """Append ``data`` as a new entry; returns its index. Raises a
        ``ProposalDropped`` subclass when it cannot be appended here."""
        self._check_can_propose(len(data))
        return self._append_new(EntryKind.NORMAL, data)

    def propose_conf_change(self, change: ConfChange) -> int:
        self._check_can_propose(0)
        if self._membership.last_change_index > self.log.committed:
            raise ConfChangePending("a membership change is still being committed")
        if self.log.term_or_none(self.log.committed) != self.term:
            raise ConfChangePending("the leader has not yet committed an entry of its term")
        validate_conf_change(self._membership.current, change)
        return self._append_new(EntryKind.CONF_CHANGE, encode_conf_change(change))

    def read_index(self, context: bytes) -> None:
        """Ask for a linearizable read; the answer arrives as a ``ReadState``
        with the same ``context`` in a later Ready. Contexts must be unique."""
        self._check_not_in_ready()
        if self.role == Role.LEADER:
            self._handle_read_index(context, self.id)
        elif self.leader != NO_NODE:
            self._send(
                Message(MT.READ_INDEX, to=self.leader, sender=self.id, term=self.term, context=context)
            )
        else:
            raise NotLeader(NO_NODE)

    def transfer_leader(self, to: int) -> None:
        """Hand leadership to voter ``to`` (ignored if it is not a voter)."""
        self._check_not_in_ready()
        if self.role == Role.LEADER:
            self._handle_transfer(to)
        elif self.leader != NO_NODE:
            self._send(Message(MT.TRANSFER_LEADER, to=self.leader, sender=self.id, term=self.term, index=to))
        else:
            raise NotLeader(NO_NODE)

    def report_unreachable(self, peer: int) -> None:
        """The transport failed to deliver to ``peer``: stop streaming to it."""
        pr = self.progress(peer)
        if pr is not None and pr.state == ProgressState.REPLICATE:
            pr.become_probe()

    def heard_from_node(self, node: int) -> None:
        """The host heard from the node of member ``node`` (a batch, a ping,
        an acknowledgement: any traffic, of any group). Liveness only, and
        only with ``leader_node_grace_ticks``:

        - a follower whose leader is ``node`` restarts its election timer,
          as long as the leader itself spoke in this group within
          ``leader_node_grace_ticks`` ticks (so it also keeps refusing
          votes, ``_in_lease``: no less safe than a heartbeat would be);
        - a leader (with check-quorum) counts ``node`` as recently active.
        """
        grace = self.config.leader_node_grace_ticks
        if not grace or node == self.id:
            return
        if self.role == Role.FOLLOWER:
            if node == self.leader and self._leader_silent < grace:
                self._election_elapsed = 0
        elif self.role == Role.LEADER:
            pr = self.tracker.progress.get(node)
            if pr is not None:
                pr.recent_active = True

    def report_snapshot(self, peer: int, ok: bool) -> None:
        """The transport finished (or failed) sending a snapshot to ``peer``."""
        pr = self.progress(peer)
        if pr is None or pr.state != ProgressState.SNAPSHOT:
            return
        if not ok:
            pr.pending_snapshot = 0
        pr.become_probe()
        pr.probe_sent = True  # wait for its answer or a heartbeat response

    def step(self, m: Message) -> None:
        """Handle a message from a peer. A message no correct peer could
        send, or an election message from a non-voter, is dropped and
        counted in ``dropped_messages`` (raft/screening.py says which and
        why); a peer's message never makes this raise."""
        self._check_not_in_ready()
        reason = self._screen(m)
        if reason is not None:
            self.dropped_messages[reason] = self.dropped_messages.get(reason, 0) + 1
            return
        if m.term > self.term:
            if m.type in _VOTE_REQUESTS and self._in_lease() and m.context != CAMPAIGN_TRANSFER:
                return  # we heard from a live leader recently: ignore
            if m.type == MT.PRE_VOTE:
                pass  # a pre-vote never changes our term
            elif m.type == MT.PRE_VOTE_RESPONSE and not m.reject:
                pass  # granted for the term we are about to campaign in
            elif m.type in _FROM_LEADER:
                self._become_follower(m.term, m.sender)
            else:
                self._become_follower(m.term, NO_NODE)
        elif m.term < self.term:
            if (self.config.check_quorum or self.config.pre_vote) and m.type in (MT.APPEND, MT.HEARTBEAT):
                # A deposed leader that cannot hear the new one: tell it our
                # term so it steps down (and pre-vote cannot deadlock on it).
                self._reply(m, MT.APPEND_RESPONSE)
            elif m.type == MT.PRE_VOTE:
                self._reply(m, MT.PRE_VOTE_RESPONSE, reject=True)
            return

        if m.type in _VOTE_REQUESTS:
            self._handle_vote_request(m)
        elif self.role == Role.LEADER:
            self._step_leader(m)
        elif self.role == Role.FOLLOWER:
            self._step_follower(m)
        else:
            self._step_candidate(m)

    def _screen(self, m: Message) -> str | None:
        if m.to != self.id:
            return MISADDRESSED
        return defect(m) or defect_for(
            m,
            self_id=self.id,
            term=self.term,
            role=self.role,
            last_index=self.log.last_index(),
            leader_ticks=self._leader_ticks,
            voters=self._membership.current.voters,
            could_grant=self._could_grant,
        )

    def _could_grant(self, last_index: int, last_term: int) -> bool:
        """Could a candidate whose log ends at (last_index, last_term) get
        our vote, as far as logs go? (An empty log never votes.)"""
        return self.log.last_index() > 0 and self.log.is_up_to_date(last_index, last_term)

    # ------------------------------------------------------------------
    # outputs
    # ------------------------------------------------------------------

    def has_ready(self) -> bool:
        return bool(
            self._broadcast_pending
            or self._messages
            or self._messages_after_persist
            or self._read_states
            or self.log.has_unstable()
            or self.hard_state() != self._prev_hard_state
            or self.soft_state() != self._prev_soft_state
            or self.log.has_next_committed_entries()
        )

    def ready(self) -> Ready:
        self._check_not_in_ready()
        if self._broadcast_pending:
            self._broadcast_pending = False
            self._broadcast_append()
        hard_state = self.hard_state()
        soft_state = self.soft_state()
        prev = self._prev_hard_state
        entries = self.log.unstable_entries()
        snapshot = self.log.unstable_snapshot()
        vote_changed = hard_state.term != prev.term or hard_state.vote != prev.vote
        ready = Ready(
            hard_state=hard_state if hard_state != prev else None,
            soft_state=soft_state if soft_state != self._prev_soft_state else None,
            entries=entries,
            snapshot=snapshot,
            must_sync=bool(entries) or snapshot is not None or vote_changed,
            messages=tuple(self._messages),
            messages_after_persist=tuple(self._messages_after_persist),
            committed_entries=tuple(
                self.log.next_committed_entries(self.config.max_committed_size_per_ready)
            ),
            read_states=tuple(self._read_states),
        )
        self._messages.clear()
        self._messages_after_persist.clear()
        self._read_states.clear()
        self._pending_ready = ready
        return ready

    def advance(self, ready: Ready) -> None:
        """Everything in ``ready`` is persisted, sent and applied."""
        if ready is not self._pending_ready:
            raise UsageError("advance() must be given the Ready returned by the last ready()")
        self._pending_ready = None
        if ready.hard_state is not None:
            self._prev_hard_state = ready.hard_state
        if ready.soft_state is not None:
            self._prev_soft_state = ready.soft_state
        if ready.snapshot is not None:
            self.log.stable_snapshot_to(ready.snapshot.metadata.index)
        if ready.entries:
            last = ready.entries[-1]
            self.log.stable_to(last.index, last.term)
            if self.role == Role.LEADER:
                # The leader's own copy counts only once it is durable (§10.2.1).
                me = self.tracker.progress.get(self.id)
                if me is not None and me.maybe_update(self.log.stable_last_index()) and self._maybe_commit():
                    self._broadcast_pending = self._broadcast_pending or self.config.broadcast_commit
        if ready.committed_entries:
            self.log.applied_to(ready.committed_entries[-1].index)
            self._membership.compact(self.log.first_index())
            if self.role == Role.LEADER and self._uncommitted_bytes:
                applied = sum(len(e.data) for e in ready.committed_entries)
                self._uncommitted_bytes = max(0, self._uncommitted_bytes - applied)

    # ------------------------------------------------------------------
    # roles
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

    def _become_pre_candidate(self) -> None:
        # Neither term nor vote changes: nothing to persist, nothing promised.
        self.tracker.votes = {}
        self.role = Role.PRE_CANDIDATE
        self.leader = NO_NODE
        self._randomized_timeout = self._rng.randrange(
            self.config.election_tick, 2 * self.config.election_tick
        )

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader = self.id
        me = self.tracker.progress.get(self.id)
        if me is not None:
            me.match = self.log.stable_last_index()
            me.become_replicate()
            me.recent_active = True
        # An empty entry of our term: committing it commits everything before
        # it (§5.4.2) and unlocks reads and membership changes.
        self._append_new(EntryKind.NORMAL, b"")

    def _in_lease(self) -> bool:
        """Has this node heard from a live leader within an election timeout
        (or just restarted with lease reads on)? Then it ignores votes."""
        return (
            self.config.check_quorum
            and (self.leader != NO_NODE or self._boot_quiet)
            and self._election_elapsed < self.config.election_tick
        )

    def _promotable(self) -> bool:
        return self.id in self._membership.current.voters and self.log.unstable_snapshot() is None

    # ------------------------------------------------------------------
    # elections
    # ------------------------------------------------------------------

    def _tick_election(self) -> None:
        self._election_elapsed += 1
        self._leader_silent += 1
        if self._election_elapsed >= self.config.election_tick:
            self._boot_quiet = False
        if self._promotable() and self._election_elapsed >= self._randomized_timeout:
            self._election_elapsed = 0
            if self.leader != NO_NODE:
                # A leader this node followed went silent.
                self.election_timeouts += 1
            else:
                # No leader was lost: a group's first election, or a retry
                # after an election that found none.
                self.leaderless_timeouts += 1
            self._hup(transfer=False)

    def _hup(self, transfer: bool) -> bool:
        """Start an election if this node may; whether it did."""
        if self.role == Role.LEADER or not self._promotable():
            return False
        if self.config.pre_vote and not transfer:
            self._campaign(pre=True, transfer=False)
        else:
            self._campaign(pre=False, transfer=transfer)
        return True

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if pre:
            self._become_pre_candidate()
            vote_type, term = MT.PRE_VOTE, self.term + 1
        else:
            self._become_candidate()
            vote_type, term = MT.VOTE, self.term
        self.tracker.record_vote(self.id, True)
        if self.tracker.tally() == VoteResult.WON:  # a single-voter group
            if pre:
                self._campaign(pre=False, transfer=transfer)
            else:
                self._become_leader()
            return
        last_index = self.log.last_index()
        last_term = self.log.last_term()
        context = CAMPAIGN_TRANSFER if transfer else b""
        for peer in sorted(self._membership.current.voters):
            if peer != self.id:
                self._send(
                    Message(
                        vote_type,
                        to=peer,
                        sender=self.id,
                        term=term,
                        index=last_index,
                        log_term=last_term,
                        context=context,
                    )
                )

    def _handle_vote_request(self, m: Message) -> None:
        # A member with an empty log (not even the bootstrap snapshot) was
        # added to a running group and has heard nothing from its leader
        # yet, or its data was lost or deleted (a node reuses the id, a
        # removal is reverted). Either way it knows no entry, so it cannot
        # tell whether a candidate lacks a committed one: it never votes
        # until a leader has given it a log (and with it everything
        # committed).
        can_vote = self.log.last_index() > 0 and (
            self.vote == m.sender
            or (self.vote == NO_NODE and self.leader == NO_NODE)
            or (m.type == MT.PRE_VOTE and m.term > self.term)
        )
        response = _VOTE_RESPONSE_TYPE[m.type]
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            self._send(Message(response, to=m.sender, sender=self.id, term=m.term))
            if m.type == MT.VOTE:
                self._election_elapsed = 0
                self.vote = m.sender
        else:
            self._reply(m, response, reject=True)

    def _step_candidate(self, m: Message) -> None:
        if m.type in _FROM_LEADER:
            self._become_follower(m.term, m.sender)
            self._step_follower(m)
            return
        expected = MT.PRE_VOTE_RESPONSE if self.role == Role.PRE_CANDIDATE else MT.VOTE_RESPONSE
        if m.type != expected:
            return
        self.tracker.record_vote(m.sender, not m.reject)
        result = self.tracker.tally()
        if result == VoteResult.WON:
            if self.role == Role.PRE_CANDIDATE:
                self._campaign(pre=False, transfer=False)
            else:
                self._become_leader()
        elif result == VoteResult.LOST:
            self._become_follower(self.term, NO_NODE)

    # ------------------------------------------------------------------
    # follower
    # ------------------------------------------------------------------

    def _step_follower(self, m: Message) -> None:
        if m.type in _FROM_LEADER:
            self._election_elapsed = 0
            self._leader_silent = 0
            self.leader = m.sender
            if m.type == MT.APPEND:
                self._handle_append(m)
            elif m.type == MT.HEARTBEAT:
                self._handle_heartbeat(m)
            else:
                self._handle_snapshot(m)
        elif m.type == MT.TIMEOUT_NOW:
            if self._hup(transfer=True):
                self.transfer_campaigns += 1
        elif m.type == MT.READ_INDEX_RESPONSE:
            self._read_states.append(ReadState(m.index, m.context))
        elif m.type == MT.TRANSFER_LEADER and self.leader != NO_NODE:
            self._send(
                Message(MT.TRANSFER_LEADER, to=self.leader, sender=self.id, term=self.term, index=m.index)
            )

    def _handle_append(self, m: Message) -> None:
        if m.index < self.log.committed:
            self._reply(m, MT.APPEND_RESPONSE, index=self.log.committed)
            return
        accepted, last_new, written = self.log.maybe_append(m.index, m.log_term, m.commit, m.entries)
        if accepted:
            if written:
                self._on_entries_written(written, m.entries[written - m.index - 1 :])
            self._reply(m, MT.APPEND_RESPONSE, index=last_new)
            return
        hint_index, hint_term = self.log.find_conflict_by_term(
            min(m.index, self.log.last_index()), m.log_term
        )
        self._reply(
            m, MT.APPEND_RESPONSE, index=m.index, reject=True, reject_hint=hint_index, log_term=hint_term
        )

    def _handle_heartbeat(self, m: Message) -> None:
        self.log.commit_to(min(m.commit, self.log.last_index()))
        self._reply(m, MT.HEARTBEAT_RESPONSE, index=m.index, context=m.context)

    def _handle_snapshot(self, m: Message) -> None:
        assert m.snapshot is not None
        meta = m.snapshot.metadata
        if meta.index <= self.log.committed:
            index = self.log.committed
        elif self.log.matches(meta.index, meta.term):
            # We already hold that prefix: just learn that it is committed.
            self.log.commit_to(meta.index)
            index = self.log.committed
        else:
            self.log.restore(m.snapshot)
            self._membership.reset(meta.index, meta.conf_state)
            self.tracker.set_conf(meta.conf_state, meta.index + 1)
            index = meta.index
        self._reply(m, MT.APPEND_RESPONSE, index=index)

    def _on_entries_written(self, first: int, entries: tuple[Entry, ...]) -> None:
        """Keep the membership in step with a log rewritten from ``first``."""
        changed = self._membership.truncate_from(first)
        for entry in entries:
            if entry.kind == EntryKind.CONF_CHANGE:
                self._membership.append(entry.index, decode_conf_change(entry.data))
                changed = True
        if changed:
            self.tracker.set_conf(self._membership.current, self.log.last_index() + 1)

    # ------------------------------------------------------------------
    # leader
    # ------------------------------------------------------------------

    def _check_can_propose(self, size: int) -> None:
        self._check_not_in_ready()
        if self.role != Role.LEADER:
            raise NotLeader(self.leader)
        if self._lead_transferee != NO_NODE:
            raise LeaderTransferInProgress(f"leadership is moving to node {self._lead_transferee}")
        limit = self.config.max_uncommitted_size
        if limit is not None and self._uncommitted_bytes > 0 and self._uncommitted_bytes + size > limit:
            raise TooManyUncommitted(f"{self._uncommitted_bytes} uncommitted bytes (limit {limit})")

    def _append_new(self, kind: EntryKind, data: bytes) -> int:
        index = self.log.last_index() + 1
        entry = Entry(term=self.term, index=index, kind=kind, data=data)
        self.log.append((entry,))
        self._uncommitted_bytes += len(data)
        if kind == EntryKind.CONF_CHANGE:
            self._on_entries_written(index, (entry,))
        # Coalesced: one append per follower per Ready, however many proposals.
        self._broadcast_pending = True
        return index

    def _tick_leader(self) -> None:
        self._leader_ticks += 1
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self.config.election_tick:
            self._election_elapsed = 0
            if self.config.check_quorum:
                if not self.tracker.quorum_active(self.id):
                    self._become_follower(self.term, NO_NODE)
                    return
                for node, pr in self.tracker.progress.items():
                    pr.recent_active = node == self.id
            self._lead_transferee = NO_NODE  # a transfer that took this long failed
        if self._heartbeat_elapsed >= self.config.heartbeat_tick:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()

    def _step_leader(self, m: Message) -> None:
        pr = self.tracker.progress.get(m.sender)
        if m.type == MT.READ_INDEX:
            self._handle_read_index(m.context, m.sender)
            return
        if m.type == MT.TRANSFER_LEADER:
            self._handle_transfer(m.index)
            return
        if pr is None:
            return
        if m.type == MT.APPEND_RESPONSE:
            pr.recent_active = True
            self._handle_append_response(m, pr)
        elif m.type == MT.HEARTBEAT_RESPONSE:
            pr.recent_active = True
            self._handle_heartbeat_response(m, pr)

    def _handle_append_response(self, m: Message, pr: Progress) -> None:
        if m.reject:
            next_probe = m.reject_hint
            if m.log_term > 0:
                next_probe, _ = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
            if pr.maybe_decrease_to(m.index, next_probe):
                if pr.state == ProgressState.REPLICATE:
                    pr.become_probe()
                self._send_append(m.sender)
            return
        was_paused = pr.is_paused()
        if not pr.maybe_update(m.index):
            return
        if pr.state == ProgressState.PROBE:
            pr.become_replicate()
        elif pr.state == ProgressState.SNAPSHOT and (
            pr.match + 1 >= self.log.first_index() or pr.match >= pr.pending_snapshot
        ):
            # Caught up to the snapshot: probe from here (a newer compaction
            # simply leads to the next snapshot).
            pr.become_probe()
            pr.become_replicate()
        elif pr.state == ProgressState.REPLICATE:
            pr.inflights.free_le(m.index)
        if self._maybe_commit():
            if self.role != Role.LEADER:
                return  # we committed our own removal and stepped down
            if self.config.broadcast_commit:
                self._broadcast_pending = True  # tell everyone, once per Ready
        elif was_paused:
            self._send_append(m.sender)
        while self._send_append(m.sender, send_if_empty=False):
            pass
        if m.sender == self._lead_transferee and pr.match == self.log.last_index():
            self._send_timeout_now(m.sender)

    def _handle_heartbeat_response(self, m: Message, pr: Progress) -> None:
        pr.probe_sent = False
        pr.lease_tick = max(pr.lease_tick, m.index)
        if pr.state == ProgressState.REPLICATE and pr.inflights.full():
            pr.inflights.free_first_one()  # an append may have been lost
        elif pr.state == ProgressState.SNAPSHOT:
            pr.snapshot_wait += 1
            if pr.snapshot_wait >= self.config.election_tick:
                pr.become_probe()  # the snapshot was probably lost: retry
        if pr.match < self.log.last_index():
            self._send_append(m.sender)
        if m.context:
            acks = self._read_only.recv_ack(m.sender, m.context)
            if acks is not None and len(acks & self._membership.current.voters) >= self.tracker.quorum():
                for request in self._read_only.advance(m.context):
                    self._answer_read(request.index, request.context, request.requester)

    def _maybe_commit(self) -> bool:
        index = self.tracker.committed_index()
        if self.config.unsafe_commit_previous_term:
            committed = self.log.commit_to(min(index, self.log.last_index()))
        else:
            committed = self.log.maybe_commit(index, self.term)
        if not committed:
            return False
        if self._reads_waiting_for_commit and self.log.term_or_none(self.log.committed) == self.term:
            waiting, self._reads_waiting_for_commit = self._reads_waiting_for_commit, []
            for context, requester in waiting:
                self._handle_read_index(context, requester)
        conf = self._membership
        if self.id not in conf.current.voters and conf.last_change_index <= self.log.committed:
            # Our removal is committed: tell the others it is, then step down.
            self._broadcast_append()
            self._become_follower(self.term, NO_NODE)
        return True

    def _send_append(self, to: int, send_if_empty: bool = True) -> bool:
        pr = self.tracker.progress[to]
        if pr.is_paused():
            return False
        prev_index = pr.next - 1
        last = self.log.last_index()
        try:
            prev_term = self.log.term(prev_index)
            entries = self.log.entries(pr.next, last + 1, self.config.max_size_per_msg)
        except Compacted:
            return self._send_snapshot(to, pr)
        if not entries and not send_if_empty:
            return False
        self._send(
            Message(
                MT.APPEND,
                to=to,
                sender=self.id,
                term=self.term,
                index=prev_index,
                log_term=prev_term,
                entries=tuple(entries),
                commit=self.log.committed,
            )
        )
        pr.sent_entries(entries[-1].index if entries else None)
        return True

    def _send_snapshot(self, to: int, pr: Progress) -> bool:
        if not pr.recent_active:
            return False  # do not ship a snapshot to a node that may be down
        try:
            snapshot = self.log.storage.snapshot()
        except SnapshotTemporarilyUnavailable:
            return False
        pr.become_snapshot(snapshot.metadata.index)
        self._send(Message(MT.SNAPSHOT, to=to, sender=self.id, term=self.term, snapshot=snapshot))
        return True

    def _broadcast_append(self) -> None:
        for peer in self.tracker.peers(self.id):
            self._send_append(peer)

    def _broadcast_heartbeat(self) -> None:
        context = self._read_only.last_pending_context() or b""
        for peer in self.tracker.peers(self.id):
            pr = self.tracker.progress[peer]
            self._send(
                Message(
                    MT.HEARTBEAT,
                    to=peer,
                    sender=self.id,
                    term=self.term,
                    commit=min(pr.match, self.log.committed),
                    index=self._leader_ticks,
                    context=context,
                )
            )

    def _handle_read_index(self, context: bytes, requester: int) -> None:
        if self._membership.current.voters == frozenset((self.id,)):
            self._answer_read(self.log.committed, context, requester)
        elif self.log.term_or_none(self.log.committed) != self.term:
            self._reads_waiting_for_commit.append((context, requester))
        elif self.config.read_only_lease_based and self._lease_valid():
            self._answer_read(self.log.committed, context, requester)
        elif self._read_only.add_request(self.log.committed, context, requester, self.id):
            self._broadcast_heartbeat()

    def _lease_valid(self) -> bool:
        """Can no other node have become leader yet? A follower that
        acknowledged a heartbeat sent at leader tick ``s`` refuses votes for
        ``election_tick`` of its own ticks after receiving it, which is at
        least ``election_tick - 1`` of ours if clocks run at the same rate;
        one more tick covers the part of the current tick already gone."""
        if self._lease_forfeited:
            return False
        ticks = sorted(
            (self._leader_ticks if v == self.id else self.tracker.progress[v].lease_tick)
            for v in self._membership.current.voters
        )
        start = ticks[-self.tracker.quorum()]
        return start >= 0 and self._leader_ticks - start <= self.config.election_tick - 2

    def _answer_read(self, index: int, context: bytes, requester: int) -> None:
        if requester == self.id:
            self._read_states.append(ReadState(index, context))
        else:
            self._send(
                Message(
                    MT.READ_INDEX_RESPONSE,
                    to=requester,
                    sender=self.id,
                    term=self.term,
                    index=index,
                    context=context,
                )
            )

    def _handle_transfer(self, to: int) -> None:
        if to == self.id or to not in self._membership.current.voters or to == self._lead_transferee:
            return
        self._lead_transferee = to
        self._election_elapsed = 0  # the transfer must finish within an election timeout
        if self.tracker.progress[to].match == self.log.last_index():
            self._send_timeout_now(to)
        else:
            self._send_append(to)

    def _send_timeout_now(self, to: int) -> None:
        self._lease_forfeited = True
        self._send(Message(MT.TIMEOUT_NOW, to=to, sender=self.id, term=self.term))

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
