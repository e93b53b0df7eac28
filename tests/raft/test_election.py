"""Leader election (Raft paper §5.2).

Rules checked here:
- Election safety: at most one leader per term, and an election ends with
  every node following that leader.
- Election timeouts are randomized in ``[election_tick, 2 * election_tick)``
  so that nodes rarely time out together.
- A node grants at most one vote per term, and that vote is durable: it
  survives a restart.
- A candidate that loses, or that hears from a leader of its term, returns
  to follower; any node that sees a higher term adopts it and steps down.
"""

from __future__ import annotations

from typing import Any

import pytest

from raft.types import Message, MessageType, Role
from tests.raft.harness import Network

MT = MessageType

# The classic protocol, without the pre-vote and check-quorum extensions:
# votes go straight out and a leader yields to any higher term.
CLASSIC: dict[str, Any] = {"pre_vote": False, "check_quorum": False}


def vote_responses(net: Network, sender: int, to: int) -> list[Message]:
    return net.sent_of(MT.VOTE_RESPONSE, sender=sender, to=to)


@pytest.mark.parametrize("seed", range(1, 6))
def test_ticking_elects_exactly_one_leader(seed: int) -> None:
    """Ticking a fresh 5-node group elects one leader; every node ends in
    that leader's term and knows it as leader (election safety)."""
    net = Network([1, 2, 3, 4, 5], seed=seed)
    leaders_by_term: dict[int, set[int]] = {}

    def observe() -> bool:
        for node_id in net.leaders():
            leaders_by_term.setdefault(net.node(node_id).term, set()).add(node_id)
        return bool(net.leaders())

    net.tick_until(observe)
    net.tick_all(3)
    observe()

    assert all(len(ids) == 1 for ids in leaders_by_term.values()), leaders_by_term
    [leader] = net.leaders()
    term = net.node(leader).term
    for node_id in net.members:
        node = net.node(node_id)
        assert (node.term, node.leader) == (term, leader)
        if node_id != leader:
            assert node.role == Role.FOLLOWER


def ticks_until_campaign(seed: int, node_id: int, election_tick: int) -> int:
    net = Network([1, 2, 3], seed=seed, election_tick=election_tick)
    net.isolate(node_id)
    node = net.node(node_id)
    for ticks in range(1, 4 * election_tick):
        net.tick(node_id)
        if node.role != Role.FOLLOWER:
            return ticks
    raise AssertionError(f"node {node_id} never campaigned")


def test_election_timeouts_are_randomized() -> None:
    """An isolated follower campaigns after a timeout in [election_tick,
    2 * election_tick); the timeouts differ between nodes and seeds, which is
    what spreads elections out and avoids endless split votes."""
    election_tick = 10
    timeouts = [
        ticks_until_campaign(seed, node_id, election_tick) for seed in range(1, 9) for node_id in (1, 2, 3)
    ]

    assert all(election_tick <= t < 2 * election_tick for t in timeouts), timeouts
    assert len(set(timeouts)) >= 4, f"timeouts barely vary: {timeouts}"


def test_node_votes_at_most_once_per_term() -> None:
    """Node 3 grants its term-2 vote to node 1 and then refuses node 2, a
    second candidate of the same term; a repeated request from node 1 is
    granted again (the vote is the same)."""
    net = Network([1, 2, 3], **CLASSIC)
    net.node(1).campaign()
    net.node(2).campaign()
    assert net.node(1).term == net.node(2).term == 2
    # Node 3 hears node 1 first, then node 2.
    net.deliver(until_quiet=False, only=lambda m: m.type == MT.VOTE and m.sender == 1 and m.to == 3)
    net.deliver(until_quiet=False, only=lambda m: m.type == MT.VOTE and m.sender == 2 and m.to == 3)

    assert net.node(3).vote == 1
    [to_1] = vote_responses(net, 3, 1)
    [to_2] = vote_responses(net, 3, 2)
    assert not to_1.reject
    assert to_2.reject

    net.node(3).step(Message(MT.VOTE, to=3, sender=1, term=2, index=1, log_term=1))
    net.process(3)
    assert not vote_responses(net, 3, 1)[-1].reject


def test_candidate_that_loses_returns_to_follower() -> None:
    """A candidate whose log is behind is rejected by a majority and goes back
    to follower (in its new term) instead of staying a candidate forever."""
    net = Network([1, 2, 3], **CLASSIC)
    net.elect(1)
    net.isolate(3)
    net.propose(1, b"x")
    net.deliver()
    net.heal()

    net.node(3).campaign()
    assert net.node(3).role == Role.CANDIDATE
    net.deliver(only=lambda m: m.type in (MT.VOTE, MT.VOTE_RESPONSE))

    assert vote_responses(net, 1, 3)[-1].reject
    assert vote_responses(net, 2, 3)[-1].reject
    assert net.node(3).role == Role.FOLLOWER
    assert net.node(3).term == 3


def test_candidate_steps_down_on_append_from_leader_of_its_term() -> None:
    """A candidate that receives an append from a leader of its own term
    recognizes that leader and becomes its follower."""
    net = Network([1, 2, 3], **CLASSIC)
    net.node(1).campaign()
    net.node(3).campaign()
    # Node 1 wins term 2 with node 2's vote; node 3 is a term-2 candidate.
    net.deliver(only=lambda m: m.to != 3 and m.sender != 3)
    assert net.node(1).role == Role.LEADER
    assert net.node(3).role == Role.CANDIDATE
    assert net.node(3).term == 2

    net.deliver()

    assert net.node(3).role == Role.FOLLOWER
    assert net.node(3).leader == 1


def test_higher_term_makes_leader_step_down() -> None:
    """A leader that sees any message with a higher term adopts the term and
    becomes a follower."""
    net = Network([1, 2, 3], **CLASSIC)
    leader = net.elect(1)

    leader.step(Message(MT.HEARTBEAT_RESPONSE, to=1, sender=2, term=7))

    assert leader.role == Role.FOLLOWER
    assert leader.term == 7
    assert leader.vote == 0


def test_partitioned_candidate_with_higher_term_deposes_leader() -> None:
    """Without pre-vote and check-quorum, a node that campaigned alone to a
    higher term deposes the leader with its vote request when it returns."""
    net = Network([1, 2, 3], **CLASSIC)
    net.elect(1)
    net.isolate(3)
    for _ in range(3):
        net.node(3).campaign()
        net.process(3)
    assert net.node(3).term == 5
    net.drop_queued()
    net.heal()

    net.node(3).campaign()
    net.deliver()

    # Node 3's log is as up to date as theirs, so it also wins term 6.
    assert net.node(1).term == 6
    assert net.node(1).role == Role.FOLLOWER
    assert net.leaders() == [3]


@pytest.mark.parametrize("forget", [False, True], ids=["durable-vote", "unsafe-forget-vote"])
def test_vote_survives_restart(forget: bool) -> None:
    """Node 3 votes for node 1 in term 2, crashes and restarts from its
    storage: it still refuses node 2 in term 2. With the test-only hazard
    ``unsafe_forget_vote_on_restart`` it votes twice (the control)."""
    net = Network([1, 2, 3], unsafe_forget_vote_on_restart=forget, **CLASSIC)
    net.node(1).campaign()
    net.deliver(until_quiet=False, only=lambda m: m.type == MT.VOTE and m.to == 3)
    assert net.node(3).vote == 1
    net.drop_queued()

    restarted = net.restart(3)
    assert restarted.term == 2
    net.node(2).campaign()
    assert net.node(2).term == 2
    net.deliver(until_quiet=False, only=lambda m: m.type == MT.VOTE and m.to == 3)

    granted = not vote_responses(net, 3, 2)[-1].reject
    assert granted == forget
    if not forget:
        assert restarted.vote == 1


def test_deposed_leader_learns_the_new_term_from_answers_to_its_appends() -> None:
    """A leader cut off while the others elected a new one keeps sending
    heartbeats of its old term when it returns. The followers answer with
    their newer term (rather than ignoring it), and it steps down at once."""
    net = Network([1, 2, 3], check_quorum=False)  # so node 1 keeps leading while cut off
    old = net.elect(1)
    net.isolate(1)
    net.elect(2)
    assert old.role == Role.LEADER
    assert old.term < net.node(2).term
    net.heal()
    before = len(net.sent_of(MT.APPEND_RESPONSE, to=1))

    net.tick(1)
    net.deliver(only=lambda m: m.sender == 1 or m.to == 1)

    answers = net.sent_of(MT.APPEND_RESPONSE, to=1)[before:]
    assert len(answers) == 2
    assert all(m.term == net.node(2).term for m in answers)
    assert old.role == Role.FOLLOWER
    assert old.term == net.node(2).term


def test_only_a_silent_leader_counts_as_an_election_timeout() -> None:
    """``election_timeouts`` counts the elections a node started because
    its leader went silent: none while heartbeats arrive, none for a
    leadership transfer, one per timeout once the leader is cut off."""
    net = Network([1, 2, 3], seed=3)
    net.elect(1)
    before = {n: net.node(n).election_timeouts for n in (1, 2, 3)}
    net.tick_all(100)  # heartbeats keep followers quiet
    net.node(1).transfer_leader(2)
    net.process(1)
    net.deliver()
    assert net.leader() == 2
    assert {n: net.node(n).election_timeouts for n in (1, 2, 3)} == before
    net.isolate(2)
    net.tick(3, 2 * net.node(3).config.election_tick)
    assert net.node(3).election_timeouts == before[3] + 1


def test_a_groups_first_election_is_not_a_silent_leader() -> None:
    """A new group has never had a leader: the timeouts that elect its
    first one are not counted (``election_timeouts`` counts leaders lost),
    nor is a retry after an election that found no leader."""
    net = Network([1, 2, 3], seed=5)
    net.tick_until(lambda: net.leader() is not None)
    assert {n: net.node(n).election_timeouts for n in (1, 2, 3)} == {1: 0, 2: 0, 3: 0}
    assert sum(net.node(n).leaderless_timeouts for n in (1, 2, 3)) >= 1  # counted apart
    leader = net.leader()
    assert leader is not None
    follower = next(n for n in (1, 2, 3) if n != leader)
    net.isolate(leader)
    net.tick(follower, 2 * net.node(follower).config.election_tick)
    # It had a leader and heard nothing: counted once. Cut off from everyone,
    # its pre-votes fail and its later timeouts find no leader: not counted.
    net.isolate(follower)
    lone_before = net.node(follower).leaderless_timeouts
    net.tick(follower, 6 * net.node(follower).config.election_tick)
    assert net.node(follower).election_timeouts == 1
    assert net.node(follower).leaderless_timeouts > lone_before
