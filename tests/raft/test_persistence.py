"""The storage contract between the core and its driver (raft/storage.py,
raft/ready.py; Raft paper §5.1 "updated on stable storage before responding
to RPCs" and thesis §10.2.1 for the leader's own write).

Rules checked here:
- Messages that promise something about this node's disk (vote grants,
  candidacy, append and heartbeat acknowledgements) come out in
  ``Ready.messages_after_persist``; a leader's appends and heartbeats and
  pre-votes promise nothing and come out in ``Ready.messages``.
- ``Ready.must_sync`` is true when entries, term or vote change and false
  when only the commit index moved.
- A leader counts its own copy of an entry only after ``advance`` reports it
  persisted; entries are handed out for applying only once persisted.
- Driving the node between ``ready()`` and ``advance()`` is a usage error.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from raft.errors import UsageError
from raft.ready import Ready
from raft.types import CAMPAIGN_TRANSFER, ConfChange, ConfChangeType, Entry, Message, MessageType, Role
from tests.raft.harness import Network

MT = MessageType


def types(messages: tuple[Message, ...]) -> set[MessageType]:
    return {m.type for m in messages}


def follower_ready(unsafe: bool, message: Callable[[Network], Message]) -> Ready:
    """Node 2's Ready after stepping ``message`` in a group led by node 1."""
    net = Network([1, 2, 3], unsafe_ack_before_persist=unsafe)
    net.elect(1)
    net.tick_all()
    node = net.node(2)
    node.step(message(net))
    return node.ready()


def append_from_leader(net: Network) -> Message:
    leader = net.node(1)
    return Message(
        MT.APPEND,
        to=2,
        sender=1,
        term=leader.term,
        index=leader.last_index,
        log_term=leader.term,
        entries=(Entry(term=leader.term, index=leader.last_index + 1, data=b"z"),),
        commit=leader.commit_index,
    )


def heartbeat_from_leader(net: Network) -> Message:
    return Message(MT.HEARTBEAT, to=2, sender=1, term=net.node(1).term, commit=net.node(1).commit_index)


def vote_request(net: Network) -> Message:
    # A leader-transfer campaign: node 2 does not ignore it despite its lease.
    node = net.node(3)
    return Message(
        MT.VOTE,
        to=2,
        sender=3,
        term=node.term + 1,
        index=node.last_index,
        log_term=node.term,
        context=CAMPAIGN_TRANSFER,
    )


@pytest.mark.parametrize(
    ("message", "ack"),
    [
        (append_from_leader, MT.APPEND_RESPONSE),
        (heartbeat_from_leader, MT.HEARTBEAT_RESPONSE),
        (vote_request, MT.VOTE_RESPONSE),
    ],
    ids=["append", "heartbeat", "vote"],
)
@pytest.mark.parametrize("unsafe", [False, True], ids=["contract", "unsafe-ack-before-persist"])
def test_acknowledgements_wait_for_persistence(
    message: Callable[[Network], Message], ack: MessageType, unsafe: bool
) -> None:
    """A follower's append/heartbeat acknowledgement and a vote grant are
    released only after the Ready is persisted. The test-only hazard
    ``unsafe_ack_before_persist`` releases them at once (the control)."""
    rd = follower_ready(unsafe, message)
    after, before = types(rd.messages_after_persist), types(rd.messages)
    if unsafe:
        assert ack in before
        assert ack not in after
    else:
        assert ack in after
        assert ack not in before


def test_leader_appends_and_heartbeats_go_out_before_persisting() -> None:
    """The leader's appends and heartbeats promise nothing about its disk, so
    they leave in ``messages``, in the same Ready as the entries to write."""
    net = Network([1, 2, 3])
    leader = net.elect(1)
    leader.propose(b"a")
    rd = leader.ready()
    assert [e.data for e in rd.entries] == [b"a"]
    assert types(rd.messages) == {MT.APPEND}
    assert rd.messages_after_persist == ()
    net.handle_ready(1, rd)

    leader.tick()
    rd = leader.ready()
    assert types(rd.messages) == {MT.HEARTBEAT}
    assert rd.messages_after_persist == ()
    net.handle_ready(1, rd)


def test_candidacy_waits_for_persistence_but_pre_vote_does_not() -> None:
    """A candidate's vote requests carry its own durable vote for itself:
    they wait for the persist. Pre-vote requests change no state and do not."""
    net = Network([1, 2, 3])
    node = net.node(1)
    node.campaign()
    rd = node.ready()
    net.handle_ready(1, rd)
    assert node.role == Role.PRE_CANDIDATE
    assert types(rd.messages) == {MT.PRE_VOTE}
    assert rd.messages_after_persist == ()
    assert rd.hard_state is None  # nothing to persist for a pre-vote

    net = Network([1, 2, 3], pre_vote=False)
    node = net.node(1)
    node.campaign()
    rd = node.ready()
    assert rd.hard_state is not None
    assert (rd.hard_state.term, rd.hard_state.vote) == (2, 1)
    assert types(rd.messages_after_persist) == {MT.VOTE}
    assert MT.VOTE not in types(rd.messages)


def test_must_sync_when_entries_term_or_vote_change() -> None:
    """New entries, a new term and a new vote all need a synced write."""
    rd = follower_ready(False, append_from_leader)
    assert rd.entries
    assert rd.must_sync

    rd = follower_ready(False, vote_request)
    assert not rd.entries
    assert rd.hard_state is not None and rd.hard_state.vote == 3
    assert rd.must_sync

    net = Network([1, 2, 3])
    node = net.node(2)
    node.step(Message(MT.HEARTBEAT, to=2, sender=1, term=5))
    rd = node.ready()
    assert not rd.entries
    assert rd.hard_state is not None and (rd.hard_state.term, rd.hard_state.vote) == (5, 0)
    assert rd.must_sync


def test_no_sync_when_only_commit_changes() -> None:
    """A Ready whose only durable change is the commit index does not need a
    sync: losing it in a crash is harmless."""
    net = Network([1, 2, 3])
    leader = net.elect(1)
    leader.propose(b"a")
    net.process(1)
    # Node 2 stores the entry; the leader commits it with node 3's ack.
    net.deliver(until_quiet=False, only=lambda m: m.type == MT.APPEND)
    net.deliver(only=lambda m: m.to != 2)
    assert leader.commit_index > net.node(2).commit_index
    follower = net.node(2)
    committed_before = follower.commit_index

    follower.step(Message(MT.HEARTBEAT, to=2, sender=1, term=leader.term, commit=leader.commit_index))
    rd = follower.ready()

    assert rd.hard_state is not None
    assert rd.hard_state.commit == leader.commit_index > committed_before
    assert rd.entries == ()
    assert not rd.must_sync


def test_single_node_leader_commits_only_after_advance() -> None:
    """A single-node leader is its own majority, but its entry is committed
    only after the Ready carrying it has been advanced (persisted)."""
    net = Network([1])
    node = net.elect(1)
    commit_before = node.commit_index

    index = node.propose(b"a")
    rd = node.ready()
    assert [e.index for e in rd.entries] == [index]
    assert node.commit_index == commit_before < index
    assert all(e.index != index for e in rd.committed_entries)
    net.handle_ready(1, rd)

    assert node.commit_index == index
    rd = node.ready()
    assert [e.data for e in rd.committed_entries] == [b"a"]


def test_leader_own_progress_moves_only_on_advance() -> None:
    """In a group, the leader's own match index moves to a new entry only when
    ``advance`` reports it persisted."""
    net = Network([1, 2, 3])
    leader = net.elect(1)
    me = leader.progress(1)
    assert me is not None
    index = leader.propose(b"a")
    rd = leader.ready()
    assert me.match == index - 1
    net.handle_ready(1, rd)
    assert me.match == index


def test_follower_applies_only_persisted_entries() -> None:
    """A follower receiving entries together with a commit index covering
    them does not hand them out for applying in the same Ready: they must be
    on disk first. They come out in the Ready after ``advance``."""
    net = Network([1, 2, 3])
    leader = net.elect(1)
    index = leader.propose(b"a")
    net.process(1)
    net.deliver(until_quiet=False, only=lambda m: m.type == MT.APPEND and m.to == 3)
    net.deliver(only=lambda m: m.to != 2 and m.sender != 2)  # commit with node 3
    assert leader.commit_index == index
    follower = net.node(2)
    [append] = [m for m in net.queue if m.type == MT.APPEND and m.to == 2 and m.entries]
    follower.step(
        Message(
            MT.APPEND,
            to=2,
            sender=1,
            term=append.term,
            index=append.index,
            log_term=append.log_term,
            entries=append.entries,
            commit=leader.commit_index,
        )
    )

    rd = follower.ready()
    assert follower.commit_index == index
    assert [e.index for e in rd.entries] == [index]
    assert all(e.index != index for e in rd.committed_entries)
    net.handle_ready(2, rd)
    rd = follower.ready()
    assert [e.data for e in rd.committed_entries] == [b"a"]


def test_driving_the_node_between_ready_and_advance_raises() -> None:
    """``step``, ``tick``, ``propose``, ``campaign`` and a second ``ready``
    between ``ready()`` and ``advance()`` raise UsageError; so does advancing
    a Ready that is not the last one handed out."""
    net = Network([1, 2, 3])
    leader = net.elect(1)
    leader.propose(b"a")
    rd = leader.ready()

    heartbeat_response = Message(MT.HEARTBEAT_RESPONSE, to=1, sender=2, term=leader.term)
    calls: list[Callable[[], object]] = [
        lambda: leader.step(heartbeat_response),
        leader.tick,
        lambda: leader.propose(b"b"),
        leader.campaign,
        leader.ready,
        lambda: leader.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 9)),
        lambda: leader.read_index(b"r"),
        lambda: leader.transfer_leader(2),
    ]
    for call in calls:
        with pytest.raises(UsageError):
            call()
    with pytest.raises(UsageError):
        leader.advance(Ready())

    net.handle_ready(1, rd)
    leader.step(heartbeat_response)  # fine again
    assert leader.last_index == rd.entries[-1].index


def test_committed_entries_come_in_bounded_batches() -> None:
    """``max_committed_size_per_ready`` bounds each Ready's committed entries
    (yet never to zero); the batches together hand out every entry once, in
    order."""
    entry_size = Entry(term=2, index=3, data=b"0").size()
    net = Network([1], max_committed_size_per_ready=2 * entry_size)
    node = net.elect(1)
    for n in range(5):
        node.propose(f"{n}".encode())

    batches: list[list[bytes]] = []
    while node.has_ready():
        rd = node.ready()
        batches.append([e.data for e in rd.committed_entries if e.data])
        net.handle_ready(1, rd)

    assert all(len(batch) <= 2 for batch in batches)
    assert [data for batch in batches for data in batch] == [f"{n}".encode() for n in range(5)]
    assert node.applied_index == node.commit_index == node.last_index
