"""Committing entries from previous terms (Raft paper §5.4.2, Figure 8).

A leader may only commit an entry by counting replicas if the entry is of
its *current* term. An entry of an earlier term that sits on a majority can
still be overwritten by a later leader; it becomes committed only indirectly,
when an entry of the current term after it commits (which is why every new
leader appends an empty entry).

The Figure 8 scenario is rebuilt here with five nodes (S1..S5; index 1 is the
bootstrap entry, index 2 the term-2 leader's empty entry, so the paper's
index 2 is index 3 here):

(a) S1 leads term 2 and replicates "x" at index 3 to S2 only.
(b) S1 and S2 are cut off; S5 wins term 3 with votes of S3, S4 and appends
    its empty entry at index 3 (term 3) but replicates it to nobody.
(c) S5 is cut off (S2 stays cut off); S1 restarts, campaigns once alone
    (term 3) and wins term 4 with S3 and S4. It appends its own empty entry
    (index 4, term 4) and replicates "x" (index 3, term 2) to S3 and S4 but
    not yet index 4. "x" is now on a majority (S1, S3, S4).
(d) If S1 crashes now, S5 can win term 5 (with S2, S3, S4: its last term 3
    beats their 2) and overwrite index 3 everywhere.
(e) If instead S1 replicates index 4 to a majority, both 3 and 4 commit.

So at (c) S1 must not commit index 3. The test-only hazard
``unsafe_commit_previous_term`` makes it commit anyway: the negative control
shows the scenario really does lose a committed (and applied) entry.
"""

from __future__ import annotations

from raft.types import Entry, Message, MessageType, Role
from tests.raft.harness import Network

MT = MessageType
S1, S2, S3, S4, S5 = 1, 2, 3, 4, 5


def elect_without_replication(net: Network, node_id: int) -> None:
    """``node_id`` wins on votes alone; its appends are discarded."""
    net.node(node_id).campaign()
    net.deliver(only=lambda m: m.type in (MT.VOTE, MT.VOTE_RESPONSE))
    assert net.node(node_id).role == Role.LEADER
    net.drop_queued()


def figure_8_c(unsafe: bool) -> Network:
    """Build Figure 8 up to (c). Appends of index 4 to S3 and S4 stay queued."""
    net = Network(
        [S1, S2, S3, S4, S5],
        pre_vote=False,
        check_quorum=False,
        max_size_per_msg=1,  # one entry per append, as in the paper's figure
        unsafe_commit_previous_term=unsafe,
    )
    # (a)
    net.elect(S1)
    net.partition([S1, S2], [S3, S4, S5])
    net.propose(S1, b"x")
    net.deliver()
    assert net.node(S1).commit_index == 2
    # (b)
    net.heal()
    net.isolate(S1)
    net.isolate(S2)
    elect_without_replication(net, S5)
    assert (net.node(S5).term, net.node(S5).term_at(3)) == (3, 3)
    # (c): S1 restarts, campaigns once alone (term 3), then wins term 4.
    net.heal()
    net.partition([S1, S3, S4], [S2], [S5])
    net.restart(S1)
    net.node(S1).campaign()
    net.drop(lambda m: m.sender == S1)
    elect_without_replication(net, S1)
    assert net.node(S1).term == 4

    def holds_index_3(m: Message) -> bool:
        return m.type == MT.APPEND and net.node(m.to).last_index >= 3

    net.node(S1).tick()  # heartbeats, then probes and appends
    net.deliver(only=lambda m: not holds_index_3(m))
    for node_id in (S1, S3, S4):
        assert net.node(node_id).term_at(3) == 2
    assert net.node(S1).term_at(4) == 4
    assert net.node(S3).last_index == net.node(S4).last_index == 3
    return net


def applied_by_index(net: Network) -> dict[int, set[tuple[int, bytes]]]:
    """index -> the distinct (term, data) applied there by any node."""
    seen: dict[int, set[tuple[int, bytes]]] = {}
    for member in net.members.values():
        for entry in member.applied:
            seen.setdefault(entry.index, set()).add((entry.term, entry.data))
    return seen


def crash_s1_and_elect_s5(net: Network) -> None:
    """Figure 8 (d): S1 crashes with its queued appends; S5 restarts and wins
    term 5."""
    net.drop_queued()
    net.heal()
    net.isolate(S1)
    net.restart(S5)
    net.node(S5).campaign()  # term 4: S3 and S4 already voted for S1
    net.deliver()
    net.node(S5).campaign()  # term 5
    net.deliver()
    assert net.leader() == S5
    assert net.node(S5).term == 5


def test_leader_does_not_commit_previous_term_entry_by_counting_replicas() -> None:
    """At Figure 8 (c) "x" (term 2) is on S1, S3, S4, a majority, yet the
    term-4 leader S1 does not commit it; so when S5 later overwrites index 3,
    no node had applied "x" there and all applied logs agree."""
    net = figure_8_c(unsafe=False)
    assert net.node(S1).commit_index == 2
    assert b"x" not in net.applied_data(S1)

    crash_s1_and_elect_s5(net)

    for node_id in (S2, S3, S4, S5):
        assert net.node(node_id).term_at(3) == 3
        assert net.node(node_id).commit_index >= 4
    assert all(len(versions) == 1 for versions in applied_by_index(net).values())


def test_counting_previous_term_replicas_loses_an_applied_entry() -> None:
    """Negative control: with ``unsafe_commit_previous_term`` S1 commits and
    applies "x" at index 3 in (c); S5 then commits a different entry at index
    3 in (d). Two nodes applied different entries at the same index."""
    net = figure_8_c(unsafe=True)
    assert net.node(S1).commit_index == 3
    assert net.applied_data(S1) == [b"x"]

    crash_s1_and_elect_s5(net)

    at_3 = applied_by_index(net)[3]
    assert at_3 == {(2, b"x"), (3, b"")}


def test_current_term_entry_commits_earlier_entries_indirectly() -> None:
    """Figure 8 (e): once S1's own term-4 entry reaches a majority, committing
    it commits "x" at index 3 too, and every node applies "x" there."""
    net = figure_8_c(unsafe=False)
    assert net.node(S1).commit_index == 2

    net.deliver()  # the queued appends of index 4 reach S3 and S4

    assert net.node(S1).commit_index == 4
    net.heal()
    net.tick_all(2)
    for node_id in net.members:
        assert net.node(node_id).commit_index == 4
        applied = [e for e in net.members[node_id].applied if e.index == 3]
        assert applied == [Entry(term=2, index=3, data=b"x")]


def test_new_leader_empty_entry_commits_earlier_term_entries() -> None:
    """A leader elected over an uncommitted entry of an earlier term commits
    it through the empty entry it appends on election, with no new proposal."""
    net = Network([1, 2, 3])
    net.elect(1)
    index = net.propose(1, b"y")
    # The entry reaches node 2, but its acknowledgement is lost.
    net.deliver(only=lambda m: m.type == MT.APPEND and m.to == 2)
    net.drop_queued()
    assert net.node(2).term_at(index) == 2
    assert max(net.node(i).commit_index for i in net.members) < index

    net.node(1).transfer_leader(2)
    net.deliver()

    leader = net.node(2)
    assert leader.role == Role.LEADER
    assert leader.term_at(leader.last_index) == leader.term == 3
    assert leader.commit_index == leader.last_index > index
    net.tick_all(2)
    for node_id in net.members:
        assert net.applied_data(node_id) == [b"y"]
