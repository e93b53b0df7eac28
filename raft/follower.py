"""The follower: appends, heartbeats and snapshots from its leader, and
what it passes on to or gets back from that leader (reads, transfers, the
order to campaign). A mixin of ``RaftNode`` (raft/node.py); its state is
declared in raft/node_base.py.

Invariants:
- Any message from the leader of the current term restarts the election
  timer and names that leader.
- Log matching: an append is accepted only if this node holds the entry
  before it, with the same term; a conflicting uncommitted tail is replaced,
  a committed entry never is (an append from before the commit index is
  answered with the commit index and writes nothing).
- The commit index only grows, and never past the last entry held here.
- A rejection carries a hint (an index and its term) so the leader can skip
  a whole term of conflicting entries per round trip.
- A snapshot replaces the log only if it is ahead of the commit index and
  its last entry is not already held; the membership is reset with it.
"""

from __future__ import annotations

from raft.node_base import _FROM_LEADER, MT, NodeBase
from raft.types import NO_NODE, Message, ReadState


class FollowerMixin(NodeBase):
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
