"""Screening messages from peers: what ``RaftNode.step`` drops before acting.

A peer's message is input the core does not control: a buggy or
impersonated peer, or bytes that decode to nonsense, must never make
``step`` raise, corrupt the log or the leader's progress, or stop the
process. ``RaftNode.step`` asks this module first and drops (and counts in
``RaftNode.dropped_messages``, by reason) every message it rejects. Dropping
is always safe: Raft survives any message being lost.

Two kinds of reasons:

- *Impossible* (``IMPOSSIBLE``): no correct peer can ever send it to this
  node in its current state, so dropping it never changes how a correct
  cluster behaves. Each check below says why the message is impossible. Most
  look at the message alone (``defect``); three need this node's state
  (``defect_for``): an append acknowledged or rejected past a leader's last
  index (the leader never truncates its log in its own term), a heartbeat
  echo of a leader tick that has not happened yet, and a term "from nowhere"
  -- a message type that only ever carries a term its receiver already had
  (TIMEOUT_NOW, READ_INDEX_RESPONSE, a granted vote) carrying a later one.
- *Policy* (``NOT_A_VOTER``): a node that is not a voter in this node's
  latest configuration must not push this node's term up by asking for
  votes. A vote or pre-vote request from a non-voter with a later term is
  ignored, term included, unless we could grant it as far as logs go (ours
  is not empty -- an empty log never votes -- and the candidate's is at
  least as up to date). Vote and pre-vote *responses* from a non-voter are
  ignored at any term (its vote never counted anyway,
  ``ProgressTracker.tally``). So a removed node, whose log falls behind as
  soon as the group commits past its removal, cannot depose leaders and
  inflate terms however often it campaigns (Raft thesis §4.2.3; with
  check-quorum the lease in ``RaftNode._in_lease`` also covers the moments
  right after a removal), and neither can an id the group never had that
  does not claim a current log.
  Why not ignore non-voters outright: a voter this node does not know yet
  (added by an entry it lacks) may need its vote. A lagging voter that
  ignored every unknown candidate left a 4-voter group without a leader in
  the simulator (seed 140, liveness: the node with the longest log had just
  removed itself, and the lagging voter's vote was the one missing). Such a
  candidate holds an entry this node lacks, so whenever this node could
  grant it, its log is at least as up to date and the exception lets it
  through. etcd answers every candidate; we differ only where the answer
  would be a rejection at a term a non-voter brought, and ignoring is safe
  (it is losing a message): we would have rejected anyway.

What screening does *not* do: a message that is possible but forged --
say, an append, or a vote request with a huge term and a log it claims to
have, from a real member or a made-up id -- is indistinguishable here from a
real one and is obeyed (Raft must accept a higher term from a member, and a
candidate with a current log may be a voter this node does not know yet).
Leader messages (APPEND, HEARTBEAT, SNAPSHOT) are accepted from any sender,
member or not: a member just added, or one that missed the change adding the
current leader, must be able to catch up from a leader it does not know yet.
Values that are merely out of date are not impossible either and stay
harmless as before: a heartbeat's commit past our log is clamped to it, a
stale rejection is recognised by ``Progress.maybe_decrease_to``. Messages
for a group this node does not host never reach the core (the partitions
layer drops them). Keeping forgers off the wire is the transport's job
(authentication of node-to-node traffic, built separately); the core's job
is only never to crash or corrupt its state on any input, and never to let
a non-voter with a stale or empty log move its term.

Invariant: every function here is pure (no state, no I/O) and returns
``None`` for every message a correct peer can send.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Set

from raft.membership import decode_conf_change
from raft.types import EntryKind, Message, MessageType, Role, Snapshot

MT = MessageType

# --- reasons (the keys of RaftNode.dropped_messages) ------------------------

MISADDRESSED = "misaddressed"
"""``to`` is not this node (a transport bug or a message for another node)."""
BAD_SENDER = "bad-sender"
"""The sender id is not positive, or is this node's own id."""
BAD_TERM = "bad-term"
"""A negative term, or term 0 on a message only a node past bootstrap sends."""
NEGATIVE_FIELD = "negative-field"
"""A negative index, log term, commit or reject hint."""
BAD_ENTRIES = "bad-entries"
"""Entries that do not continue the append's previous index one by one, with
terms out of order or above the message's, an undecodable membership change,
or entries on a message type that carries none."""
BAD_SNAPSHOT = "bad-snapshot"
"""A SNAPSHOT without a snapshot, one a leader cannot have (index or term out
of range, a membership no group can have), or a snapshot on another type."""
BAD_LOG_TERM = "bad-log-term"
"""A log term above the message's term where it names an entry of the
sender's log (no log holds an entry of a term its owner has not reached)."""
BEYOND_LOG = "beyond-log"
"""At a leader: an append acknowledged or rejected past its last index, or a
rejection hint past the rejected index."""
FUTURE_TICK = "future-tick"
"""At a leader: a heartbeat response echoing a tick it has not reached."""
TERM_FROM_NOWHERE = "term-from-nowhere"
"""A type that only carries a term its receiver already had, with a later one."""
NOT_A_VOTER = "not-a-voter"
"""Policy: an election message from a node that is not a voter here (for a
vote request: with a later term and a log not as up to date as ours)."""

IMPOSSIBLE = frozenset(
    {
        MISADDRESSED,
        BAD_SENDER,
        BAD_TERM,
        NEGATIVE_FIELD,
        BAD_ENTRIES,
        BAD_SNAPSHOT,
        BAD_LOG_TERM,
        BEYOND_LOG,
        FUTURE_TICK,
        TERM_FROM_NOWHERE,
    }
)

_VOTE_RESPONSES = frozenset({MT.VOTE_RESPONSE, MT.PRE_VOTE_RESPONSE})
_VOTE_REQUESTS = frozenset({MT.VOTE, MT.PRE_VOTE})
# Types whose ``log_term`` is the term of an entry in the sender's log. (In
# an APPEND_RESPONSE it is set only on a rejection, else 0.)
_LOG_TERM_IS_AN_ENTRY = frozenset({MT.APPEND, MT.APPEND_RESPONSE, MT.VOTE, MT.PRE_VOTE})


def defect(m: Message) -> str | None:
    """Why no correct peer could send ``m`` to anyone; None if one could."""
    if m.sender <= 0:
        return BAD_SENDER
    # Bootstrap puts every group at term 1, and a node adopts a message's
    # term before answering it. The one message sent at term 0 is an empty
    # new member's (term 0, never heard from a leader) pre-vote rejection.
    if m.term < 0 or (m.term == 0 and m.type != MT.PRE_VOTE_RESPONSE):
        return BAD_TERM
    if m.index < 0 or m.log_term < 0 or m.commit < 0 or m.reject_hint < 0:
        return NEGATIVE_FIELD
    if m.log_term > m.term and m.type in _LOG_TERM_IS_AN_ENTRY:
        return BAD_LOG_TERM
    if m.type == MT.APPEND:
        return _append_defect(m)
    if m.entries:
        return BAD_ENTRIES
    if m.type == MT.SNAPSHOT:
        return _snapshot_defect(m.snapshot, m.term)
    if m.snapshot is not None:
        return BAD_SNAPSHOT
    if m.type == MT.APPEND_RESPONSE and m.reject and m.reject_hint > m.index:
        # The follower looks for its hint at or below the rejected index.
        return BEYOND_LOG
    return None


def defect_for(
    m: Message,
    *,
    self_id: int,
    term: int,
    role: Role,
    last_index: int,
    leader_ticks: int,
    voters: Set[int],
    could_grant: Callable[[int, int], bool],
) -> str | None:
    """Why ``m`` is impossible (or, for ``NOT_A_VOTER``, unwanted) at a node
    in this state; None if it is fine. Call after ``defect``.
    ``could_grant(index, log_term)``: could a candidate whose log ends there
    get our vote as far as logs go (ours is not empty, and theirs is at
    least as up to date: ``RaftLog.is_up_to_date``)?"""
    if m.sender == self_id:
        return BAD_SENDER
    if m.sender not in voters and (
        m.type in _VOTE_RESPONSES
        or (m.type in _VOTE_REQUESTS and m.term > term and not could_grant(m.index, m.log_term))
    ):
        return NOT_A_VOTER
    if m.term > term and _carries_a_known_term(m, term):
        return TERM_FROM_NOWHERE
    if role == Role.LEADER and m.term == term:
        # Answers to this leadership: everything it sent is within its log
        # (a leader only appends) and its tick count.
        if m.type == MT.APPEND_RESPONSE and m.index > last_index:
            return BEYOND_LOG
        if m.type == MT.HEARTBEAT_RESPONSE and m.index > leader_ticks:
            return FUTURE_TICK
    return None


def _carries_a_known_term(m: Message, term: int) -> bool:
    """Only a term its receiver had when it asked can ride on ``m`` (called
    for ``m.term > term``; a node's term never goes down)."""
    if m.type == MT.TIMEOUT_NOW:
        # The leader sends it once the target matched its log, i.e. after
        # the target adopted the leader's term (and made it durable).
        return True
    if m.type == MT.READ_INDEX_RESPONSE:
        return True  # answered at the term the request was sent in
    if m.type == MT.VOTE_RESPONSE and not m.reject:
        return True  # a grant echoes the candidate's term
    # A granted pre-vote echoes the term the pre-candidate would campaign
    # in: its term then plus one.
    return m.type == MT.PRE_VOTE_RESPONSE and not m.reject and m.term > term + 1


def _append_defect(m: Message) -> str | None:
    """Entries must continue ``m.index`` one index at a time, with terms
    from ``m.log_term`` up to ``m.term`` never decreasing (log matching lets
    nothing else exist in a leader's log)."""
    previous_term = m.log_term
    expected_index = m.index + 1
    for entry in m.entries:
        if entry.index != expected_index or entry.term < max(previous_term, 1) or entry.term > m.term:
            return BAD_ENTRIES
        if entry.kind == EntryKind.CONF_CHANGE and not _decodable(entry.data):
            return BAD_ENTRIES
        previous_term = entry.term
        expected_index += 1
    if m.snapshot is not None:
        return BAD_SNAPSHOT
    return None


def _decodable(data: bytes) -> bool:
    try:
        decode_conf_change(data)
    except (struct.error, ValueError):
        return False
    return True


def _snapshot_defect(snapshot: Snapshot | None, term: int) -> str | None:
    """A leader only sends a snapshot it has: of an index >= 1 (bootstrap
    writes one at index 1), a term between 1 and its own, and a membership
    with at least one voter, positive ids and no node both voter and
    learner."""
    if snapshot is None:
        return BAD_SNAPSHOT
    meta = snapshot.metadata
    conf = meta.conf_state
    if meta.index < 1 or not 1 <= meta.term <= term:
        return BAD_SNAPSHOT
    if not conf.voters or conf.voters & conf.learners or min(conf.all_nodes()) <= 0:
        return BAD_SNAPSHOT
    return None
