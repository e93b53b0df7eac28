"""Linearizable reads by ReadIndex and by lease (Raft thesis §6.4).

Rules checked here:
- A ReadIndex read on the leader records the commit index and is answered
  only after a quorum acknowledged a heartbeat sent after the read arrived;
  a follower's read is forwarded to the leader and answered the same way.
- A new leader answers reads only once it has committed an entry of its
  term (before that its commit index may lag the previous leader's).
- Lease-based reads are answered at once, without a heartbeat round.
- A leader cut off from the majority never answers a ReadIndex read, so a
  deposed leader cannot serve a stale value.
"""

from __future__ import annotations

from raft.types import Message, MessageType, ReadState, Role
from tests.raft.harness import Network

MT = MessageType
ELECTION_TICK = 10


def reads(net: Network, node_id: int) -> list[ReadState]:
    return net.members[node_id].read_states


def test_leader_read_is_answered_after_a_heartbeat_quorum() -> None:
    """The read waits for the heartbeat round it triggers, then reports the
    commit index from when it was asked."""
    net = Network([1, 2, 3])
    leader = net.elect(1)
    net.propose(1, b"a")
    net.deliver()
    commit = leader.commit_index

    leader.read_index(b"r1")
    net.process(1)
    assert reads(net, 1) == []
    heartbeats = [m for m in net.queue if m.type == MT.HEARTBEAT]
    assert {m.to for m in heartbeats} == {2, 3}
    assert all(m.context == b"r1" for m in heartbeats)

    net.deliver()

    assert reads(net, 1) == [ReadState(commit, b"r1")]


def test_read_waits_for_a_quorum_of_acknowledgements() -> None:
    """In a group of five, the leader plus one heartbeat answer is not a
    quorum: no answer. The second answer makes three: answered."""
    net = Network([1, 2, 3, 4, 5])
    leader = net.elect(1)
    leader.read_index(b"r")
    net.process(1)
    net.deliver(until_quiet=False, only=lambda m: m.type == MT.HEARTBEAT)
    responses = [m for m in net.queue if m.type == MT.HEARTBEAT_RESPONSE]
    assert len(responses) == 4

    net.deliver(until_quiet=False, only=lambda m: m is responses[0])
    assert reads(net, 1) == []
    net.deliver(until_quiet=False, only=lambda m: m is responses[1])
    assert reads(net, 1) == [ReadState(leader.commit_index, b"r")]


def test_follower_read_is_forwarded_and_answered() -> None:
    """Node 2's read goes to leader 1, which confirms its leadership and
    answers node 2 with its commit index."""
    net = Network([1, 2, 3])
    leader = net.elect(1)
    net.propose(1, b"a")
    net.deliver()

    net.node(2).read_index(b"f")
    net.deliver()

    assert net.sent_of(MT.READ_INDEX, sender=2, to=1)
    assert net.sent_of(MT.READ_INDEX_RESPONSE, sender=1, to=2)
    assert reads(net, 2) == [ReadState(leader.commit_index, b"f")]
    assert reads(net, 1) == []


def test_new_leader_delays_reads_until_it_commits_in_its_term() -> None:
    """Node 2 becomes leader while the previous leader's last entry is
    committed only on node 1. Until its own empty entry commits, node 2 sends
    no read heartbeat and answers nothing; then it answers with an index that
    covers that entry."""
    net = Network([1, 2, 3])
    net.elect(1)
    index = net.propose(1, b"a")
    net.deliver(until_quiet=False, only=lambda m: m.type == MT.APPEND)
    net.deliver(only=lambda m: m.to == 1)
    assert net.node(1).commit_index == index > net.node(2).commit_index

    net.node(1).transfer_leader(2)
    net.deliver(only=lambda m: m.type not in (MT.APPEND, MT.HEARTBEAT))
    leader = net.node(2)
    assert leader.role == Role.LEADER
    assert leader.commit_index < index

    leader.read_index(b"early")
    net.process(2)
    assert not [m for m in net.queue if m.context == b"early"]
    assert reads(net, 2) == []

    net.deliver()

    assert leader.term_at(leader.commit_index) == leader.term
    [answer] = reads(net, 2)
    assert answer.context == b"early"
    assert answer.index == leader.commit_index > index


def test_lease_based_read_is_answered_at_once() -> None:
    """With ``read_only_lease_based`` the leader answers from its lease, with
    no heartbeat round, once a quorum acknowledged a recent heartbeat."""
    net = Network([1, 2, 3], read_only_lease_based=True)
    leader = net.elect(1)
    net.tick_all(1)  # one heartbeat round, acknowledged: the lease starts
    sent_before = len(net.sent)

    leader.read_index(b"lease")
    net.process(1)

    assert reads(net, 1) == [ReadState(leader.commit_index, b"lease")]
    assert len(net.sent) == sent_before


def test_isolated_leader_never_answers_a_read() -> None:
    """Leader 1 is cut off; nodes 2 and 3 elect a new leader and commit a
    write. The read asked at node 1 is never answered, neither while it is
    cut off nor after it rejoins: it cannot return the stale value."""
    net = Network([1, 2, 3], election_tick=ELECTION_TICK)
    old = net.elect(1)
    net.isolate(1)
    old.read_index(b"stale?")
    net.process(1)

    net.tick_until(lambda: bool(set(net.leaders()) & {2, 3}))
    new_leader = next(i for i in net.leaders() if i != 1)
    net.propose(new_leader, b"newer")
    net.deliver()
    net.tick_all(3 * ELECTION_TICK)
    assert old.role != Role.LEADER  # check-quorum deposed it
    net.heal()
    net.tick_all(3 * ELECTION_TICK)

    assert reads(net, 1) == []
    assert net.applied_data(1) == [b"newer"]


def test_reads_are_answered_in_order_by_a_later_round() -> None:
    """Two reads in a row: the acknowledgement of the later round confirms
    both, and they are answered in the order asked."""
    net = Network([1, 2, 3])
    leader = net.elect(1)
    leader.read_index(b"first")
    net.process(1)
    net.drop(lambda m: m.type == MT.HEARTBEAT)
    net.propose(1, b"a")
    net.deliver()
    leader.read_index(b"second")
    net.deliver()

    assert [r.context for r in reads(net, 1)] == [b"first", b"second"]
    assert reads(net, 1)[0].index <= reads(net, 1)[1].index


def test_stale_heartbeat_answer_does_not_confirm_a_read() -> None:
    """A heartbeat answer carrying another context does not count for a read."""
    net = Network([1, 2, 3])
    leader = net.elect(1)
    leader.read_index(b"r")
    net.process(1)
    net.drop(lambda m: m.type == MT.HEARTBEAT)

    for peer in (2, 3):
        leader.step(Message(MT.HEARTBEAT_RESPONSE, to=1, sender=peer, term=leader.term, context=b"other"))
    net.process(1)

    assert reads(net, 1) == []


def isolate_after_handing_over(net: Network) -> int:
    """Leader 1 starts a transfer to node 2 and is cut off right after its
    TIMEOUT_NOW got out. Node 2 wins with node 3 and commits a write; node 1
    has not heard of any of it. Returns the write's index."""
    net.elect(1)
    net.node(1).transfer_leader(2)
    net.process(1)
    net.deliver(until_quiet=False, only=lambda m: m.type == MT.TIMEOUT_NOW)
    net.isolate(1)
    net.deliver()
    assert net.leader() == 2
    index = net.propose(2, b"w")
    net.deliver()
    assert net.node(2).commit_index >= index
    assert net.node(1).role == Role.LEADER
    return index


def test_read_index_after_a_handover_is_not_answered() -> None:
    """With ReadIndex, the old leader of a completed transfer cannot confirm
    its leadership, so it never answers (no stale read)."""
    net = Network([1, 2, 3])
    isolate_after_handing_over(net)

    net.node(1).read_index(b"r")
    net.process(1)
    net.tick(1, 2 * ELECTION_TICK)

    assert reads(net, 1) == []


def answered_reads_cover(net: Network, node_id: int, index: int) -> bool:
    return all(r.index >= index for r in reads(net, node_id))


def test_lease_read_after_a_handover_is_not_stale() -> None:
    """Lease reads must stay linearizable across a leadership transfer: once
    the transferee has won (the TIMEOUT_NOW campaign overrides the followers'
    lease) and committed a write, the old leader must not answer a read with
    an older index."""
    net = Network([1, 2, 3], read_only_lease_based=True)
    write = isolate_after_handing_over(net)

    net.node(1).read_index(b"r")
    net.process(1)

    assert answered_reads_cover(net, 1, write)


def test_lease_read_is_not_stale_with_synchronized_clocks() -> None:
    """With every node ticking in lock step (no clock drift at all), a leader
    cut off from the group must stop serving lease reads before the others
    can elect a new leader and commit a write."""
    net = Network([1, 2, 3], election_tick=ELECTION_TICK, read_only_lease_based=True)
    old = net.elect(1)
    net.tick_all(ELECTION_TICK)  # the leader's quorum check runs, then acks arrive
    net.isolate(1)
    net.tick_all(ELECTION_TICK)  # nodes 2 and 3 have not heard from it for a timeout
    if not set(net.leaders()) & {2, 3}:
        net.node(2).campaign()
        net.deliver()
    new_leader = next(i for i in net.leaders() if i != 1)
    write = net.propose(new_leader, b"w")
    net.deliver()
    assert net.node(new_leader).commit_index >= write

    if old.role == Role.LEADER:
        old.read_index(b"r")
        net.process(1)

    assert answered_reads_cover(net, 1, write)


def test_lease_read_without_a_fresh_lease_takes_a_heartbeat_round() -> None:
    """A leader that has no acknowledged heartbeat yet (or whose lease has
    run out) falls back to a ReadIndex round instead of trusting the lease."""
    net = Network([1, 2, 3], read_only_lease_based=True)
    leader = net.elect(1)

    leader.read_index(b"no-lease-yet")
    net.process(1)
    assert reads(net, 1) == []
    assert any(m.type == MT.HEARTBEAT and m.context == b"no-lease-yet" for m in net.queue)

    net.deliver()
    assert reads(net, 1) == [ReadState(leader.commit_index, b"no-lease-yet")]


def test_restarted_node_with_lease_reads_refuses_votes_for_a_timeout() -> None:
    """A node may have acknowledged the leader's lease just before it
    crashed; after a restart it must not help elect anyone else until that
    lease has run out, or the old leader could serve a stale lease read."""
    net = Network([1, 2, 3], election_tick=ELECTION_TICK, read_only_lease_based=True)
    leader = net.elect(1)
    net.tick_all(1)
    restarted = net.restart(3)
    ask = Message(
        MT.VOTE, to=3, sender=2, term=leader.term + 1, index=leader.last_index, log_term=leader.term
    )

    restarted.step(ask)
    net.process(3)
    assert restarted.term == leader.term
    assert not [m for m in net.sent_of(MT.VOTE_RESPONSE) if m.to == 2]

    for _ in range(ELECTION_TICK):
        restarted.tick()
    net.process(3)
    restarted.step(ask)
    net.process(3)
    assert restarted.vote == 2


def test_forced_campaign_is_ignored_while_the_lease_holds() -> None:
    """Found by the simulator (seed 1994): a follower told to campaign()
    while it still honours the leader's lease would vote for itself and let
    a new leader commit while the old one serves lease reads. With lease
    reads on, campaign() waits until the lease has run out."""
    net = Network([1, 2, 3], election_tick=ELECTION_TICK, read_only_lease_based=True)
    leader = net.elect(1)
    net.tick_all(1)

    net.node(2).campaign()
    assert net.node(2).role == Role.FOLLOWER and net.node(2).term == leader.term

    for _ in range(ELECTION_TICK):
        net.node(2).tick()
    net.drop_queued()
    net.node(2).campaign()
    assert net.node(2).role != Role.FOLLOWER
