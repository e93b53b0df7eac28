"""Impossible messages from peers are dropped and counted, never acted on
(raft/screening.py, issue 14).

Each test hands one node a message no correct peer could send it (or an
election message from a non-voter) and checks that ``step`` does not raise,
the node has nothing to do (no Ready), its state is exactly as before, and
``dropped_messages`` counted it under the expected reason.
"""

from __future__ import annotations

import pytest

from raft.node import RaftNode
from raft.screening import (
    BAD_ENTRIES,
    BAD_LOG_TERM,
    BAD_SENDER,
    BAD_SNAPSHOT,
    BAD_TERM,
    BEYOND_LOG,
    FUTURE_TICK,
    MISADDRESSED,
    NEGATIVE_FIELD,
    NOT_A_VOTER,
    TERM_FROM_NOWHERE,
)
from raft.types import (
    CAMPAIGN_TRANSFER,
    ConfChange,
    ConfChangeType,
    ConfState,
    Entry,
    EntryKind,
    Message,
    MessageType,
    Role,
    Snapshot,
    SnapshotMetadata,
)
from tests.raft.harness import Network

MT = MessageType
HUGE = 10**9


def _state(node: RaftNode) -> tuple[object, ...]:
    progress: tuple[object, ...] = ()
    if node.role == Role.LEADER:
        progress = tuple(
            (repr(pr), pr.lease_tick, pr.recent_active)
            for pr in (node.progress(n) for n in sorted(node.tracker.progress))
            if pr is not None
        )
    return (
        node.term,
        node.vote,
        node.commit_index,
        node.first_index,
        node.log.entries(node.first_index, node.last_index + 1),
        node.role,
        node.leader,
        node.effective_conf_state,
        dict(node.tracker.votes),
        progress,
    )


def assert_dropped(node: RaftNode, m: Message, reason: str) -> None:
    """``m`` leaves ``node`` untouched and is counted under ``reason``."""
    assert not node.has_ready()
    before = _state(node)
    counted = node.dropped_messages.get(reason, 0)
    node.step(m)  # must not raise
    assert not node.has_ready(), "the node acted on the message"
    assert _state(node) == before, "the message changed the node's state"
    assert node.dropped_messages.get(reason, 0) == counted + 1, node.dropped_messages


def _replicating(
    check_quorum: bool = True, read_only_lease_based: bool = False
) -> tuple[Network, RaftNode, RaftNode]:
    """Voters 1-3, leader 1, three entries replicated and committed
    everywhere; returns (network, leader, follower 2)."""
    net = Network([1, 2, 3], check_quorum=check_quorum, read_only_lease_based=read_only_lease_based)
    leader = net.elect(1)
    for data in (b"a", b"b", b"c"):
        net.propose(1, data)
    net.deliver()
    assert net.node(2).commit_index == leader.last_index
    return net, leader, net.node(2)


# --- at a leader -------------------------------------------------------------------------------


@pytest.mark.parametrize("past", [1, 2, HUGE])
def test_ack_past_the_leaders_log_is_dropped(past: int) -> None:
    """The reported crash: an acknowledgement of an index the leader never
    had made the next append ask its log for a missing term."""
    _, leader, _ = _replicating()
    ack = Message(MT.APPEND_RESPONSE, to=1, sender=2, term=leader.term, index=leader.last_index + past)
    assert_dropped(leader, ack, BEYOND_LOG)


def test_rejection_past_the_leaders_log_is_dropped() -> None:
    _, leader, _ = _replicating()
    reject = Message(
        MT.APPEND_RESPONSE, to=1, sender=2, term=leader.term, index=leader.last_index + 5, reject=True
    )
    assert_dropped(leader, reject, BEYOND_LOG)


def test_rejection_hint_past_the_rejected_index_is_dropped() -> None:
    _, leader, _ = _replicating()
    index = leader.last_index
    reject = Message(
        MT.APPEND_RESPONSE, to=1, sender=2, term=leader.term, index=index, reject=True, reject_hint=index + 1
    )
    assert_dropped(leader, reject, BEYOND_LOG)


def test_heartbeat_echo_from_the_future_is_dropped() -> None:
    """An echo of a leader tick not reached yet would extend the lease
    indefinitely (lease reads served by a deposed leader)."""
    _, leader, _ = _replicating(check_quorum=True, read_only_lease_based=True)
    echo = Message(MT.HEARTBEAT_RESPONSE, to=1, sender=2, term=leader.term, index=HUGE)
    assert_dropped(leader, echo, FUTURE_TICK)


# --- terms from nowhere, from members ----------------------------------------------------------


def test_timeout_now_with_a_later_term_is_dropped() -> None:
    """TIMEOUT_NOW only goes to a node that already adopted the leader's term."""
    _, leader, follower = _replicating()
    m = Message(MT.TIMEOUT_NOW, to=2, sender=1, term=follower.term + HUGE)
    assert_dropped(follower, m, TERM_FROM_NOWHERE)
    assert leader.role == Role.LEADER


def test_read_index_response_with_a_later_term_is_dropped() -> None:
    _, _, follower = _replicating()
    m = Message(MT.READ_INDEX_RESPONSE, to=2, sender=1, term=follower.term + 1, index=0, context=b"r")
    assert_dropped(follower, m, TERM_FROM_NOWHERE)


def test_vote_grant_with_a_later_term_is_dropped() -> None:
    """A grant echoes the term the candidate asked in, never a later one."""
    net = Network([1, 2, 3], pre_vote=False)
    candidate = net.node(1)
    candidate.campaign()
    net.process(1)
    assert candidate.role == Role.CANDIDATE
    grant = Message(MT.VOTE_RESPONSE, to=1, sender=2, term=candidate.term + 1)
    assert_dropped(candidate, grant, TERM_FROM_NOWHERE)


def test_pre_vote_grant_beyond_the_next_term_is_dropped() -> None:
    net = Network([1, 2, 3], pre_vote=True)
    pre_candidate = net.node(1)
    pre_candidate.campaign()
    net.process(1)
    assert pre_candidate.role == Role.PRE_CANDIDATE
    grant = Message(MT.PRE_VOTE_RESPONSE, to=1, sender=2, term=pre_candidate.term + 2)
    assert_dropped(pre_candidate, grant, TERM_FROM_NOWHERE)


# --- non-voters in elections -------------------------------------------------------------------


@pytest.mark.parametrize("kind", [MT.VOTE, MT.PRE_VOTE])
@pytest.mark.parametrize("context", [b"", CAMPAIGN_TRANSFER])
@pytest.mark.parametrize("check_quorum", [False, True])
def test_vote_request_from_a_stranger_does_not_move_the_term(
    kind: MessageType, context: bytes, check_quorum: bool
) -> None:
    """The attack of issue 14: a made-up id with a huge term and no log.
    (With check-quorum the lease already ignored it, unless it claimed a
    leader transfer.)"""
    _, leader, follower = _replicating(check_quorum=check_quorum)
    for node in (leader, follower):
        m = Message(kind, to=node.id, sender=77, term=node.term + HUGE, context=context)
        assert_dropped(node, m, NOT_A_VOTER)
    assert leader.role == Role.LEADER


def test_removed_node_cannot_depose_the_leader() -> None:
    """Node 4, removed while cut off, campaigns at ever higher terms; its
    log is behind, so its requests are ignored and the leader stays."""
    net = Network([1, 2, 3, 4], pre_vote=False, check_quorum=False)
    leader = net.elect(1)
    net.node(1).propose_conf_change(ConfChange(ConfChangeType.REMOVE_NODE, 4))
    net.process(1)
    net.isolate(4)
    net.deliver()
    net.propose(1, b"after the removal")
    net.deliver()
    removed = net.node(4)
    for _ in range(3):
        removed.campaign()
        net.process(4)
    net.drop_queued()
    assert removed.term > leader.term
    removed.campaign()
    net.process(4)
    requests = [m for m in net.queue if m.type == MT.VOTE and m.to in (1, 2, 3)]
    assert requests
    for m in requests:
        assert_dropped(net.node(m.to), m, NOT_A_VOTER)
    assert leader.role == Role.LEADER


def test_unknown_voter_with_an_up_to_date_log_still_gets_a_vote() -> None:
    """A voter added by an entry this node lacks holds that entry: its log
    is at least as up to date, and its vote request is handled as usual
    (ignoring it left a simulated group without a leader)."""
    net = Network([1, 2, 3], pre_vote=False)
    node = net.node(3)
    assert 9 not in node.effective_conf_state.voters
    term = node.term + 1
    m = Message(MT.VOTE, to=3, sender=9, term=term, index=node.last_index + 2, log_term=node.term)
    node.step(m)
    assert node.term == term and node.vote == 9
    assert not node.dropped_messages


def test_empty_member_ignores_vote_requests_of_non_voters() -> None:
    """A member added with an empty log knows no voters and never votes: a
    vote request from anyone must not raise its term."""
    net = Network([1, 2, 3])
    empty = net.add_member(4).node
    m = Message(MT.VOTE, to=4, sender=1, term=5, index=HUGE, log_term=5)
    assert_dropped(empty, m, NOT_A_VOTER)
    assert empty.term == 0


@pytest.mark.parametrize("kind", [MT.VOTE_RESPONSE, MT.PRE_VOTE_RESPONSE])
def test_vote_response_from_a_non_voter_is_dropped(kind: MessageType) -> None:
    net = Network([1, 2, 3], pre_vote=kind == MT.PRE_VOTE_RESPONSE)
    candidate = net.node(1)
    candidate.campaign()
    net.process(1)
    rejection = Message(kind, to=1, sender=77, term=candidate.term + HUGE, reject=True)
    assert_dropped(candidate, rejection, NOT_A_VOTER)


def test_an_empty_members_term_zero_pre_vote_rejection_is_not_impossible() -> None:
    """The one message sent at term 0 (an empty member rejecting a
    pre-vote) is merely stale, not counted as impossible."""
    net = Network([1, 2, 3], pre_vote=True)
    pre_candidate = net.node(1)
    pre_candidate.campaign()
    net.process(1)
    pre_candidate.step(Message(MT.PRE_VOTE_RESPONSE, to=1, sender=2, term=0, reject=True))
    assert not pre_candidate.dropped_messages


# --- at a follower: appends and snapshots no leader can send -----------------------------------


def _append(follower: RaftNode, entries: tuple[Entry, ...], term: int | None = None) -> Message:
    index = follower.last_index
    return Message(
        MT.APPEND,
        to=follower.id,
        sender=1,
        term=follower.term if term is None else term,
        index=index,
        log_term=follower.term_at(index) or 0,
        entries=entries,
        commit=follower.commit_index,
    )


def test_append_with_a_gap_in_its_entries_is_dropped() -> None:
    _, _, follower = _replicating()
    first, term = follower.last_index + 1, follower.term
    assert_dropped(follower, _append(follower, (Entry(term, first), Entry(term, first + 3))), BAD_ENTRIES)


def test_append_whose_entries_do_not_follow_its_index_is_dropped() -> None:
    _, _, follower = _replicating()
    first, term = follower.last_index + 1, follower.term
    assert_dropped(follower, _append(follower, (Entry(term, first + 1),)), BAD_ENTRIES)


def test_append_with_an_entry_of_a_later_term_is_dropped() -> None:
    _, _, follower = _replicating()
    entry = Entry(follower.term + 1, follower.last_index + 1)
    assert_dropped(follower, _append(follower, (entry,)), BAD_ENTRIES)


def test_append_with_decreasing_entry_terms_is_dropped() -> None:
    _, _, follower = _replicating()
    first, term = follower.last_index + 1, follower.term
    entries = (Entry(term + 1, first), Entry(term, first + 1))
    assert_dropped(follower, _append(follower, entries, term=term + 1), BAD_ENTRIES)


@pytest.mark.parametrize("data", [b"", b"\x00\x01", b"\x09" + bytes(8)])
def test_append_with_an_undecodable_membership_change_is_dropped(data: bytes) -> None:
    """It used to be appended, then fail to decode: half-applied."""
    _, _, follower = _replicating()
    entry = Entry(follower.term, follower.last_index + 1, EntryKind.CONF_CHANGE, data)
    assert_dropped(follower, _append(follower, (entry,)), BAD_ENTRIES)


def _snapshot_message(follower: RaftNode, snapshot: Snapshot | None) -> Message:
    return Message(MT.SNAPSHOT, to=follower.id, sender=1, term=follower.term, snapshot=snapshot)


def test_snapshot_message_without_a_snapshot_is_dropped() -> None:
    _, _, follower = _replicating()
    assert_dropped(follower, _snapshot_message(follower, None), BAD_SNAPSHOT)


@pytest.mark.parametrize(
    "meta",
    [
        SnapshotMetadata(100, 1, ConfState()),  # no voters
        SnapshotMetadata(100, 1, ConfState(frozenset({1, 2}), frozenset({2}))),  # voter and learner
        SnapshotMetadata(100, 1, ConfState(frozenset({0, 1}))),  # node id 0
        SnapshotMetadata(100, 0, ConfState(frozenset({1}))),  # term 0
        SnapshotMetadata(100, HUGE, ConfState(frozenset({1}))),  # a term the leader has not reached
        SnapshotMetadata(0, 0, ConfState(frozenset({1}))),  # index 0
    ],
    ids=["no-voters", "voter-and-learner", "node-0", "term-0", "future-term", "index-0"],
)
def test_snapshot_no_leader_can_have_is_dropped(meta: SnapshotMetadata) -> None:
    _, _, follower = _replicating()
    assert_dropped(follower, _snapshot_message(follower, Snapshot(meta)), BAD_SNAPSHOT)


# --- fields out of range -----------------------------------------------------------------------


@pytest.mark.parametrize("field", ["index", "commit", "log_term", "reject_hint"])
def test_negative_fields_are_dropped(field: str) -> None:
    _, _, follower = _replicating()
    values = {"index": 0, "commit": 0, "log_term": 0, "reject_hint": 0, field: -1}
    m = Message(
        MT.HEARTBEAT if field == "commit" else MT.APPEND,
        to=2,
        sender=1,
        term=follower.term,
        index=values["index"],
        commit=values["commit"],
        log_term=values["log_term"],
        reject_hint=values["reject_hint"],
    )
    assert_dropped(follower, m, NEGATIVE_FIELD)


@pytest.mark.parametrize("term", [0, -1])
def test_term_zero_or_negative_is_dropped(term: int) -> None:
    """Term 0 reaches an empty member (term 0 too) as if current."""
    net = Network([1, 2, 3], check_quorum=True)
    empty = net.add_member(4).node
    assert_dropped(empty, Message(MT.HEARTBEAT, to=4, sender=1, term=term), BAD_TERM)
    _, _, follower = _replicating(check_quorum=True)
    assert_dropped(follower, Message(MT.HEARTBEAT, to=2, sender=1, term=term), BAD_TERM)


@pytest.mark.parametrize("sender", [0, -3, 2])
def test_sender_zero_negative_or_itself_is_dropped(sender: int) -> None:
    _, _, follower = _replicating()
    m = Message(MT.HEARTBEAT, to=2, sender=sender, term=follower.term + 1)
    assert_dropped(follower, m, BAD_SENDER)


def test_vote_request_with_a_log_term_above_its_term_is_dropped() -> None:
    net = Network([1, 2, 3], pre_vote=False)
    follower = net.node(2)
    term = follower.term + 1
    m = Message(MT.VOTE, to=2, sender=3, term=term, index=follower.last_index, log_term=term + 1)
    assert_dropped(follower, m, BAD_LOG_TERM)


@pytest.mark.parametrize(
    "stray",
    [
        {"entries": (Entry(2, 9),)},
        {"snapshot": Snapshot(SnapshotMetadata(9, 2, ConfState(frozenset({1}))))},
    ],
    ids=["entries", "snapshot"],
)
def test_heartbeat_carrying_what_only_an_append_or_snapshot_carries_is_dropped(
    stray: dict[str, object],
) -> None:
    _, _, follower = _replicating()
    m = Message(MT.HEARTBEAT, to=2, sender=1, term=follower.term, **stray)  # type: ignore[arg-type]
    reason = BAD_ENTRIES if "entries" in stray else BAD_SNAPSHOT
    assert_dropped(follower, m, reason)


def test_message_for_another_node_is_counted() -> None:
    _, _, follower = _replicating()
    m = Message(MT.VOTE, to=3, sender=1, term=follower.term + HUGE)
    assert_dropped(follower, m, MISADDRESSED)


def test_drops_are_counted_by_reason() -> None:
    _, leader, _ = _replicating()
    assert leader.dropped_messages == {}
    for past in (1, 2):
        ack = Message(MT.APPEND_RESPONSE, to=1, sender=2, term=leader.term, index=leader.last_index + past)
        leader.step(ack)
    leader.step(Message(MT.VOTE, to=1, sender=77, term=leader.term + 1))
    assert leader.dropped_messages == {BEYOND_LOG: 2, NOT_A_VOTER: 1}
