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

Layout: ``RaftNode`` is this file's inputs and outputs on top of mixins
that are slices of the same object, each with its own invariants: the
election (raft/election.py), the follower (raft/follower.py), the leader
(raft/leader.py), and the state and plumbing they share
(raft/node_base.py).
"""

from __future__ import annotations

import random

from raft.config import RaftConfig
from raft.election import ElectionMixin
from raft.errors import ConfChangePending, NotLeader, UsageError
from raft.follower import FollowerMixin
from raft.leader import LeaderMixin
from raft.log import RaftLog
from raft.membership import MembershipLog, decode_conf_change, encode_conf_change, validate_conf_change
from raft.node_base import _FROM_LEADER, _VOTE_REQUESTS, MT
from raft.progress import Progress, ProgressState
from raft.read_only import ReadOnly
from raft.ready import Ready
from raft.screening import MISADDRESSED, defect, defect_for
from raft.storage import Storage
from raft.tracker import ProgressTracker
from raft.types import (
    CAMPAIGN_TRANSFER,
    NO_NODE,
    ConfChange,
    ConfState,
    EntryKind,
    HardState,
    Message,
    ReadState,
    Role,
    SoftState,
)


class RaftNode(LeaderMixin, ElectionMixin, FollowerMixin):
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
                if (
                    me is not None
                    and me.maybe_update(self.log.stable_last_index())
                    and self._maybe_commit()
                    and self.config.broadcast_commit
                ):
                    self._broadcast_pending = True  # tell everyone, once per Ready
        if ready.committed_entries:
            self.log.applied_to(ready.committed_entries[-1].index)
            self._membership.compact(self.log.first_index())
            if self.role == Role.LEADER and self._uncommitted_bytes:
                applied = sum(len(e.data) for e in ready.committed_entries)
                self._uncommitted_bytes = max(0, self._uncommitted_bytes - applied)
