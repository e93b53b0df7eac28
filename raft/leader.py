"""The leader: proposals, replication and commit, linearizable reads
(ReadIndex and lease) and handing leadership over. A mixin of ``RaftNode``
(raft/node.py); its state is declared in raft/node_base.py.

Invariants:
- A leader never overwrites or deletes entries in its log; it appends. Its
  first entry of a term is an empty one, whose commit commits everything
  before it (§5.4.2).
- It commits only by counting replicas of an entry of its current term
  (``RaftLog.maybe_commit``; only the test hazard
  ``unsafe_commit_previous_term`` counts older ones), and its own copy
  counts only once it is durable (§10.2.1, ``RaftNode.advance``).
- Appends are coalesced: a proposal sets ``_broadcast_pending`` and the next
  Ready sends one append per follower, however many proposals came in.
- A follower gets no more appends in flight than its ``Progress`` allows,
  and a snapshot only if it was active recently (it may be down).
- With other voters, a read waits until this leader has committed an entry
  of its term (its commit index may lag the previous leader's before that),
  then is answered once a quorum acknowledged a heartbeat sent after it was
  asked or, with lease reads, at once while ``_lease_valid`` says no other
  node can have become leader. A single voter answers at once.
- While leadership moves, proposals are refused; a transfer not done within
  an election timeout is abandoned, and the ``TIMEOUT_NOW`` that completes
  one gives up the lease for the rest of the term.
- With check-quorum, a leader that has not heard from a quorum within an
  election timeout steps down.
"""

from __future__ import annotations

from raft.errors import (
    Compacted,
    LeaderTransferInProgress,
    NotLeader,
    SnapshotTemporarilyUnavailable,
    TooManyUncommitted,
)
from raft.node_base import MT, NodeBase
from raft.progress import Progress, ProgressState
from raft.types import NO_NODE, Entry, EntryKind, Message, ReadState, Role


class LeaderMixin(NodeBase):
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
