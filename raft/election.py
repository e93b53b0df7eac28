"""Elections: the election timer, (pre-)campaigns, votes, and a
candidate's handling of messages. A mixin of ``RaftNode`` (raft/node.py);
its state is declared in raft/node_base.py.

Invariants:
- Election safety: a node grants at most one vote per term. It grants a
  ``VOTE`` only if it has not voted this term and follows no leader, or
  already voted for that same candidate; the vote is part of the hard state
  and the grant is sent after the Ready that records it is persisted.
- Election restriction: it votes only for a candidate whose log is at least
  as up to date as its own (§5.4.1), and never while its own log is empty
  (it cannot know what is committed).
- A pre-vote changes neither term nor vote: it asks whether an election at
  the next term could be won, and the real campaign starts only after a
  quorum of grants (or at once for a leadership transfer).
- Only a voter without an unstable snapshot campaigns (``_promotable``),
  and a leader never does.
- With check-quorum, a node that heard from a live leader within an
  election timeout (or restarted with lease reads on) is ``_in_lease``:
  ``RaftNode.step`` ignores vote requests then, except a transfer's, and
  with lease reads ``campaign()`` is ignored too, so a leader's lease holds.
"""

from __future__ import annotations

from raft.node_base import _FROM_LEADER, _VOTE_RESPONSE_TYPE, MT, NodeBase
from raft.tracker import VoteResult
from raft.types import CAMPAIGN_TRANSFER, NO_NODE, Message, Role


class ElectionMixin(NodeBase):
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
