"""Forged messages: an attacker on the network sends what no peer could.

The nemesis's ``forge`` fault (raft/sim/faults.py) delivers, straight to a
live node, messages built against that node's state at the moment of
delivery so that each one is impossible there (raft/raft/screening.py):
acknowledgements past a leader's log, heartbeat echoes from the future,
vote requests with absurd terms from ids the group never had, grants and
TIMEOUT_NOWs at terms from nowhere, appends with broken entries, snapshots
no leader can have, negative fields, zero or own sender ids, messages
addressed to someone else (the simulator has one group: a message for
another group or node reaching this one is this last kind).

What the checker demands (``Cluster.inject``): the node neither raises nor
acts -- its drop counter grows by exactly one, it has no Ready, and its
term, vote, commit, log, role, leader and (as a leader) every follower's
progress are as before. And the other way round: in a run without hazards a
genuine message is never dropped as impossible (``Cluster._deliver``).

Only messages the core must refuse are forged. A forgery that *could* come
from a correct peer (an append with a huge term claiming a member as
sender) is obeyed by design; stopping it is authentication's job, and
injecting it here would only report the resulting, expected, damage.

Invariant: every random choice comes from the ``random.Random`` handed in.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from raft.node import RaftNode
from raft.screening import IMPOSSIBLE
from raft.types import (
    CAMPAIGN_TRANSFER,
    ConfState,
    Entry,
    EntryKind,
    Message,
    MessageType,
    Role,
    Snapshot,
    SnapshotMetadata,
)

MT = MessageType
HUGE = 10**9
# Ids the simulated group never hands out (it uses 1 .. 2 * nodes + 2).
STRANGERS = range(10_000, 11_000)
_AT_A_LEADER = ("ack-past-log", "future-tick", "reject-past-log")


def impossible_drops(raft: RaftNode) -> int:
    """How many messages ``raft`` dropped as impossible (not by policy)."""
    return sum(count for reason, count in raft.dropped_messages.items() if reason in IMPOSSIBLE)


def observable_state(raft: RaftNode) -> tuple[object, ...]:
    """Everything a dropped message must leave as it was."""
    progress: tuple[str, ...] = ()
    if raft.role == Role.LEADER:
        progress = tuple(repr(raft.progress(n)) for n in sorted(raft.tracker.progress))
    return (
        raft.term,
        raft.vote,
        raft.commit_index,
        raft.last_index,
        raft.term_at(raft.last_index),
        raft.first_index,
        raft.role,
        raft.leader,
        raft.effective_conf_state,
        progress,
    )


class Forger:
    """Builds one impossible message for a node, of a kind chosen at random."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        kinds: list[tuple[str, Callable[[RaftNode, int], Message | None]]] = [
            ("ack-past-log", self._ack_past_log),
            ("reject-past-log", self._reject_past_log),
            ("hint-past-index", self._hint_past_index),
            ("future-tick", self._future_tick),
            ("stranger-vote", self._stranger_vote),
            ("stranger-vote-response", self._stranger_vote_response),
            ("grant-from-nowhere", self._grant_from_nowhere),
            ("timeout-now-from-nowhere", self._timeout_now_from_nowhere),
            ("read-response-from-nowhere", self._read_response_from_nowhere),
            ("bad-entries", self._bad_entries),
            ("bad-snapshot", self._bad_snapshot),
            ("bad-log-term", self._bad_log_term),
            ("negative-field", self._negative_field),
            ("bad-term", self._bad_term),
            ("bad-sender", self._bad_sender),
            ("misaddressed", self._misaddressed),
            ("stray-fields", self._stray_fields),
        ]
        self.kinds = dict(kinds)

    def forge(self, raft: RaftNode, peer: int) -> tuple[str, Message]:
        """An impossible message for ``raft`` claiming to come from ``peer``
        (another id of the cluster) where the kind needs a real sender."""
        rng = self._rng
        if raft.role == Role.LEADER and rng.random() < 0.5:
            kind = rng.choice(_AT_A_LEADER)  # else rare: leaders do not last under the nemesis
        else:
            kind = rng.choice(sorted(self.kinds))
        m = self.kinds[kind](raft, peer)
        if m is None:  # a leader-only kind, and this node does not lead
            kind = "hint-past-index"
            m = self._hint_past_index(raft, peer)
        assert m is not None
        return kind, m

    # --- at a leader ---

    def _ack_past_log(self, raft: RaftNode, peer: int) -> Message | None:
        if raft.role != Role.LEADER:
            return None
        index = raft.last_index + self._rng.choice((1, 2, self._rng.randint(3, HUGE)))
        return Message(MT.APPEND_RESPONSE, to=raft.id, sender=peer, term=raft.term, index=index)

    def _reject_past_log(self, raft: RaftNode, peer: int) -> Message | None:
        if raft.role != Role.LEADER:
            return None
        index = raft.last_index + self._rng.randint(1, HUGE)
        return Message(
            MT.APPEND_RESPONSE,
            to=raft.id,
            sender=peer,
            term=raft.term,
            index=index,
            reject=True,
            reject_hint=self._rng.randint(0, raft.last_index),
        )

    def _future_tick(self, raft: RaftNode, peer: int) -> Message | None:
        if raft.role != Role.LEADER:
            return None
        index = HUGE + self._rng.randint(0, HUGE)  # no simulated leader gets that old
        return Message(MT.HEARTBEAT_RESPONSE, to=raft.id, sender=peer, term=raft.term, index=index)

    # --- anywhere ---

    def _hint_past_index(self, raft: RaftNode, peer: int) -> Message:
        index = self._rng.randint(0, raft.last_index)
        return Message(
            MT.APPEND_RESPONSE,
            to=raft.id,
            sender=peer,
            term=raft.term,
            index=index,
            reject=True,
            reject_hint=index + self._rng.randint(1, HUGE),
        )

    def _stranger_vote(self, raft: RaftNode, peer: int) -> Message:
        rng = self._rng
        # A log claim that is not as up to date as any non-empty log: the
        # one case in which a non-voter's vote request is ignored.
        return Message(
            rng.choice((MT.VOTE, MT.PRE_VOTE)),
            to=raft.id,
            sender=rng.choice(STRANGERS),
            term=raft.term + rng.randint(1, HUGE),
            context=CAMPAIGN_TRANSFER if rng.random() < 0.5 else b"",
        )

    def _stranger_vote_response(self, raft: RaftNode, peer: int) -> Message:
        rng = self._rng
        return Message(
            rng.choice((MT.VOTE_RESPONSE, MT.PRE_VOTE_RESPONSE)),
            to=raft.id,
            sender=rng.choice(STRANGERS),
            term=raft.term + rng.choice((0, 1, rng.randint(2, HUGE))),
            reject=rng.random() < 0.5,
        )

    def _grant_from_nowhere(self, raft: RaftNode, peer: int) -> Message:
        rng = self._rng
        kind = rng.choice((MT.VOTE_RESPONSE, MT.PRE_VOTE_RESPONSE))
        ahead = 1 if kind == MT.VOTE_RESPONSE else 2
        term = raft.term + rng.choice((ahead, rng.randint(ahead, HUGE)))
        return Message(kind, to=raft.id, sender=peer, term=term)

    def _timeout_now_from_nowhere(self, raft: RaftNode, peer: int) -> Message:
        term = raft.term + self._rng.choice((1, self._rng.randint(1, HUGE)))
        return Message(MT.TIMEOUT_NOW, to=raft.id, sender=peer, term=term)

    def _read_response_from_nowhere(self, raft: RaftNode, peer: int) -> Message:
        rng = self._rng
        return Message(
            MT.READ_INDEX_RESPONSE,
            to=raft.id,
            sender=peer,
            term=raft.term + rng.randint(1, HUGE),
            index=rng.randint(0, HUGE),
            context=b"forged",
        )

    def _bad_entries(self, raft: RaftNode, peer: int) -> Message:
        rng = self._rng
        term = max(raft.term, 1) + rng.choice((0, HUGE))
        index = rng.randint(0, raft.last_index)
        log_term = raft.term_at(index) or 0
        first = index + 1
        how = rng.randrange(5)
        entries: tuple[Entry, ...]
        if how == 0:  # a gap
            entries = (Entry(term, first), Entry(term, first + rng.randint(2, 5)))
        elif how == 1:  # an entry of a term the leader has not reached
            entries = (Entry(term + rng.randint(1, HUGE), first),)
        elif how == 2:  # terms going down
            entries = (Entry(term, first), Entry(max(term - 1, 0), first + 1))
        elif how == 3:  # an index that does not follow the previous one
            entries = (Entry(term, first + rng.choice((-1, 1, HUGE))),)
        else:  # a membership change that does not decode
            entries = (Entry(term, first, EntryKind.CONF_CHANGE, rng.choice((b"", b"\x07", b"\x09" * 9))),)
        return Message(
            MT.APPEND,
            to=raft.id,
            sender=peer,
            term=term,
            index=index,
            log_term=log_term,
            entries=entries,
            commit=rng.randint(0, HUGE),
        )

    def _bad_snapshot(self, raft: RaftNode, peer: int) -> Message:
        rng = self._rng
        term = max(raft.term, 1) + rng.choice((0, 1, HUGE))
        index = raft.last_index + rng.randint(1, 100)
        voters = frozenset({peer, raft.id})
        how = rng.randrange(6)
        snapshot: Snapshot | None
        if how == 0:
            snapshot = None
        elif how == 1:
            snapshot = Snapshot(SnapshotMetadata(0, 0, ConfState(voters)))
        elif how == 2:  # of a term the leader has not reached
            snapshot = Snapshot(SnapshotMetadata(index, term + rng.randint(1, HUGE), ConfState(voters)))
        elif how == 3:
            snapshot = Snapshot(SnapshotMetadata(index, 0, ConfState(voters)))
        elif how == 4:  # a group without voters
            snapshot = Snapshot(SnapshotMetadata(index, term, ConfState(frozenset(), voters)))
        else:  # a node both voter and learner, or node id 0
            learners = rng.choice((frozenset({peer}), frozenset({0})))
            snapshot = Snapshot(SnapshotMetadata(index, term, ConfState(voters, learners)))
        return Message(MT.SNAPSHOT, to=raft.id, sender=peer, term=term, snapshot=snapshot)

    def _bad_log_term(self, raft: RaftNode, peer: int) -> Message:
        rng = self._rng
        kind = rng.choice((MT.VOTE, MT.PRE_VOTE, MT.APPEND))
        term = max(raft.term, 1) + rng.choice((0, 1, HUGE))
        return Message(
            kind,
            to=raft.id,
            sender=peer,
            term=term,
            index=raft.last_index,
            log_term=term + rng.randint(1, HUGE),
        )

    def _negative_field(self, raft: RaftNode, peer: int) -> Message:
        rng = self._rng
        kind = rng.choice(list(MT))
        negative = -rng.choice((1, HUGE))
        term = max(raft.term, 1)
        where = rng.randrange(4)
        return Message(
            kind,
            to=raft.id,
            sender=peer,
            term=term,
            index=negative if where == 0 else 0,
            log_term=negative if where == 1 else 0,
            commit=negative if where == 2 else 0,
            reject_hint=negative if where == 3 else 0,
        )

    def _bad_term(self, raft: RaftNode, peer: int) -> Message:
        rng = self._rng
        kind = rng.choice([t for t in MT if t != MT.PRE_VOTE_RESPONSE])
        term = rng.choice((0, -1, -HUGE))
        return Message(kind, to=raft.id, sender=peer, term=term, commit=raft.last_index + 1)

    def _bad_sender(self, raft: RaftNode, peer: int) -> Message:
        rng = self._rng
        sender = rng.choice((0, -1, raft.id))
        kind = rng.choice((MT.VOTE, MT.APPEND_RESPONSE, MT.HEARTBEAT, MT.HEARTBEAT_RESPONSE, MT.READ_INDEX))
        return Message(kind, to=raft.id, sender=sender, term=raft.term + rng.choice((0, HUGE)))

    def _misaddressed(self, raft: RaftNode, peer: int) -> Message:
        rng = self._rng
        to = rng.choice((peer, rng.choice(STRANGERS), 0))
        kind = rng.choice((MT.VOTE, MT.APPEND, MT.HEARTBEAT, MT.TIMEOUT_NOW))
        return Message(kind, to=to, sender=peer, term=raft.term + HUGE)

    def _stray_fields(self, raft: RaftNode, peer: int) -> Message:
        rng = self._rng
        term = max(raft.term, 1)
        if rng.random() < 0.5:  # entries only ride on an APPEND
            kind = rng.choice((MT.HEARTBEAT, MT.APPEND_RESPONSE, MT.SNAPSHOT, MT.VOTE))
            return Message(
                kind, to=raft.id, sender=peer, term=term, entries=(Entry(term, raft.last_index + 1),)
            )
        kind = rng.choice((MT.HEARTBEAT, MT.APPEND, MT.APPEND_RESPONSE))
        snapshot = Snapshot(SnapshotMetadata(raft.last_index + 5, term, ConfState(frozenset({peer}))))
        return Message(kind, to=raft.id, sender=peer, term=term, snapshot=snapshot)


def deliver_forged(raft: RaftNode, m: Message) -> str | None:
    """Step ``m`` into ``raft``; what went wrong if it was not simply dropped
    (None if it was). Exceptions propagate to the caller."""
    before = observable_state(raft)
    dropped = sum(raft.dropped_messages.values())
    raft.step(m)
    if sum(raft.dropped_messages.values()) != dropped + 1:
        return "was not dropped"
    if raft.has_ready():
        return "was dropped but left a Ready"
    if observable_state(raft) != before:
        return "was dropped but changed the node's state"
    return None


def forgeable_peer(rng: random.Random, ids: Sequence[int], target: int) -> int:
    """A sender id for a forgery at ``target``: another node of the cluster."""
    others = [n for n in ids if n != target]
    return rng.choice(others) if others else target + 1
