"""Log replication (Raft paper §5.3).

Rules checked here:
- Proposals are replicated, committed and applied in the same order on
  every node.
- Log matching: a follower holding an uncommitted tail from an old leader
  has it replaced by the current leader's entries, and never applies it.
- Fast conflict back-off: a follower far behind, or holding a long
  conflicting tail, is caught up in a round trip or two rather than one
  rejected append per entry.
- Flow control: in REPLICATE state at most ``max_inflight_msgs`` appends are
  unacknowledged at once; in PROBE state one append at a time.
"""

from __future__ import annotations

import pytest

from raft.errors import NotLeader, TooManyUncommitted
from raft.progress import ProgressState
from raft.types import Message, MessageType, Role
from tests.raft.harness import Network

MT = MessageType


def rejections(net: Network, sender: int) -> list[Message]:
    return [m for m in net.sent_of(MT.APPEND_RESPONSE, sender=sender) if m.reject]


def appends_with_entries(net: Network, sender: int, to: int) -> list[Message]:
    return [m for m in net.sent_of(MT.APPEND, sender=sender, to=to) if m.entries]


def test_proposals_commit_and_apply_in_order_everywhere() -> None:
    """Ten proposals, some batched into one Ready, are applied by every node
    in proposal order, and every log ends identical."""
    net = Network([1, 2, 3])
    leader = net.elect(1)
    data = [f"cmd-{n}".encode() for n in range(10)]
    for n, item in enumerate(data):
        leader.propose(item)
        if n % 3 == 2:
            net.deliver()
    net.deliver()

    for node_id in net.members:
        assert net.applied_data(node_id) == data
        assert net.node(node_id).commit_index == leader.last_index
    assert net.log(1) == net.log(2) == net.log(3)


def test_divergent_uncommitted_tail_is_replaced() -> None:
    """An old leader's entries that never reached a majority are overwritten
    by the new leader's log once the old leader rejoins; nobody applies them."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(1)
    stale_a = net.propose(1, b"stale-a")
    net.propose(1, b"stale-b")
    assert net.node(1).term_at(stale_a) == 2

    net.tick_until(lambda: bool(set(net.leaders()) & {2, 3}))
    new_leader = next(i for i in net.leaders() if i != 1)
    net.propose(new_leader, b"fresh")
    net.deliver()
    net.heal()
    net.tick_until(lambda: net.node(1).commit_index == net.node(new_leader).commit_index)

    assert net.node(1).role == Role.FOLLOWER
    assert net.node(1).term_at(stale_a) == net.node(new_leader).term
    assert net.log(1) == net.log(new_leader)
    for node_id in net.members:
        assert net.applied_data(node_id) == [b"fresh"]


def test_far_behind_follower_catches_up_after_one_rejection() -> None:
    """A new leader knows nothing of follower 3, which missed 100 entries: it
    probes at its own last index. Node 3 rejects with a hint of its last
    index, and the leader jumps straight there (one rejection, not 100)."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(3)
    for n in range(100):
        net.propose(1, f"{n}".encode())
    net.deliver()
    net.node(1).transfer_leader(2)
    net.deliver()
    leader = net.node(2)
    assert leader.role == Role.LEADER
    net.heal()
    before = len(rejections(net, 3))

    net.tick_until(lambda: net.node(3).commit_index == leader.commit_index)

    assert len(rejections(net, 3)) - before == 1
    assert len(net.applied_data(3)) == 100


def test_long_conflicting_tail_is_skipped_by_term() -> None:
    """An old leader holding 50 uncommitted entries of term 2 rejoins a group
    whose log holds 50 entries of term 3 at those indexes, under a term-4
    leader that starts probing at the end of its log. The rejection carries
    the follower's term at the probed index, so the leader skips the whole
    conflicting term at once instead of walking back entry by entry."""
    net = Network([1, 2, 3])
    net.elect(1)
    net.isolate(1)
    for n in range(50):
        net.propose(1, f"stale-{n}".encode())

    net.tick_until(lambda: bool(set(net.leaders()) & {2, 3}))
    term_3_leader = next(i for i in net.leaders() if i != 1)
    for n in range(50):
        net.propose(term_3_leader, f"fresh-{n}".encode())
    net.deliver()
    other = 5 - term_3_leader
    net.node(term_3_leader).transfer_leader(other)
    net.deliver()
    leader = net.node(other)
    assert leader.role == Role.LEADER
    assert leader.term_at(leader.last_index - 1) != net.node(1).term_at(leader.last_index - 1)
    net.heal()
    before = len(rejections(net, 1))

    net.tick_until(lambda: net.node(1).commit_index == leader.commit_index)

    assert 1 <= len(rejections(net, 1)) - before <= 2
    assert net.log(1) == net.log(other)
    assert net.applied_data(1) == [f"fresh-{n}".encode() for n in range(50)]


def test_inflight_window_limits_unacknowledged_appends() -> None:
    """With ``max_inflight_msgs=2`` and follower 2's acks held back, the leader
    sends two appends to it and then pauses; releasing the acks resumes the
    stream and the follower catches up."""
    net = Network([1, 2, 3], max_inflight_msgs=2)
    leader = net.elect(1)
    assert net.progress(1, 2).state == ProgressState.REPLICATE
    before = len(appends_with_entries(net, 1, 2))

    for n in range(5):
        net.propose(1, f"{n}".encode())
        net.deliver(only=lambda m: m.sender != 2)  # node 2's acks stay queued

    assert len(appends_with_entries(net, 1, 2)) - before == 2
    assert net.progress(1, 2).is_paused()
    assert net.node(2).last_index < leader.last_index

    net.deliver()

    assert len(appends_with_entries(net, 1, 2)) - before > 2
    assert net.node(2).last_index == leader.last_index
    assert net.applied_data(2) == [f"{n}".encode() for n in range(5)]


def test_probe_state_sends_one_append_at_a_time() -> None:
    """A follower in PROBE state gets one append and nothing more until it
    answers; its answer moves it to REPLICATE and the rest follows."""
    net = Network([1, 2, 3])
    leader = net.elect(1)
    leader.report_unreachable(2)
    assert net.progress(1, 2).state == ProgressState.PROBE
    before = len(net.sent_of(MT.APPEND, sender=1, to=2))

    for n in range(3):
        net.propose(1, f"{n}".encode())
        net.deliver(only=lambda m: m.sender != 2)  # node 2's answer stays queued

    assert len(net.sent_of(MT.APPEND, sender=1, to=2)) - before == 1
    assert net.node(3).last_index == leader.last_index

    net.deliver()

    assert net.progress(1, 2).state == ProgressState.REPLICATE
    assert net.node(2).last_index == leader.last_index
    assert net.applied_data(2) == [b"0", b"1", b"2"]


def test_only_the_leader_accepts_proposals() -> None:
    """A follower refuses a proposal with NotLeader, naming the leader it
    knows; a node that knows no leader names none."""
    net = Network([1, 2, 3])
    with pytest.raises(NotLeader) as no_leader:
        net.node(2).propose(b"x")
    assert no_leader.value.leader == 0

    net.elect(1)
    with pytest.raises(NotLeader) as follower:
        net.node(2).propose(b"x")
    assert follower.value.leader == 1
    assert net.node(2).last_index == net.node(1).last_index


def test_uncommitted_bytes_limit_applies_backpressure() -> None:
    """With ``max_uncommitted_size`` the leader refuses proposals while the
    uncommitted entries exceed the budget, accepts again once they commit,
    and always accepts one proposal when nothing is uncommitted (however
    large), so progress is possible."""
    net = Network([1, 2, 3], max_uncommitted_size=10)
    leader = net.elect(1)
    net.isolate(2)
    net.isolate(3)
    net.propose(1, b"12345678")
    with pytest.raises(TooManyUncommitted):
        leader.propose(b"abc")

    net.heal()
    net.tick_all()
    assert net.applied_data(1) == [b"12345678"]
    net.propose(1, b"x" * 50)  # over the budget, but alone
    with pytest.raises(TooManyUncommitted):
        leader.propose(b"y")
    net.deliver()
    net.propose(1, b"y")
    net.deliver()
    assert net.applied_data(2) == [b"12345678", b"x" * 50, b"y"]


def test_without_commit_broadcast_followers_learn_the_commit_from_later_messages() -> None:
    """``broadcast_commit=False``: committing sends nothing by itself; the
    followers learn the commit index from the next append (carried with new
    entries) or, with no new entries, from the next heartbeat."""
    net = Network([1, 2, 3], broadcast_commit=False)
    leader = net.elect(1)
    net.deliver()
    sent_before = len(net.sent)
    first = leader.propose(b"a")
    net.deliver()
    assert leader.commit_index == first
    # One append with the entry per follower and no empty append after the
    # commit: the followers still hold their old commit index.
    appends = [m for m in net.sent[sent_before:] if m.type == MT.APPEND]
    assert len(appends) == 2 and all(m.entries for m in appends)
    assert all(net.node(n).commit_index < first for n in (2, 3))
    assert b"a" not in net.applied_data(2)

    second = leader.propose(b"b")
    net.deliver()
    # The append of "b" told them "a" is committed.
    assert all(net.node(n).commit_index >= first for n in (2, 3))
    assert net.applied_data(2) == [b"a"]

    net.tick_all(leader.config.heartbeat_tick)
    net.deliver()
    assert all(net.node(n).commit_index == second for n in (2, 3))
    assert net.applied_data(3) == [b"a", b"b"]


def test_with_commit_broadcast_followers_hear_of_the_commit_at_once() -> None:
    """The default: an empty append carries each new commit index."""
    net = Network([1, 2, 3])
    leader = net.elect(1)
    net.deliver()
    sent_before = len(net.sent)
    index = leader.propose(b"a")
    net.deliver()
    assert all(net.node(n).commit_index == index for n in (2, 3))
    appends = [m for m in net.sent[sent_before:] if m.type == MT.APPEND]
    assert len(appends) == 4 and sum(1 for m in appends if not m.entries) == 2
    assert net.applied_data(2) == [b"a"]
