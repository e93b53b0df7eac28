"""Log compaction and snapshots (Raft paper §7).

Rules checked here:
- After the leader compacts its log, a follower that needs the discarded
  entries is sent the snapshot, installs it and catches up from there.
- A follower that already holds the snapshot's prefix does not throw its
  log away: it only learns that the prefix is committed.
- A snapshot lost in transit is retried (after ``election_tick`` heartbeat
  answers without progress, or at once on ``report_snapshot(ok=False)``).
"""

from __future__ import annotations

from raft.progress import ProgressState
from raft.types import Message, MessageType, Snapshot, SnapshotMetadata
from tests.raft.harness import Network

MT = MessageType
ELECTION_TICK = 10


def compact_leader(net: Network, leader_id: int) -> Snapshot:
    """Snapshot the leader's state machine at its applied index and drop
    the log up to there."""
    member = net.members[leader_id]
    node = member.node
    data = b",".join(net.applied_data(leader_id))
    snapshot = member.storage.create_snapshot(node.applied_index, node.conf_state, data)
    member.storage.compact(node.applied_index)
    assert node.first_index == node.applied_index + 1
    return snapshot


def lagging_follower_and_compacted_leader() -> tuple[Network, Snapshot]:
    """Node 1 leads, node 3 missed five entries that node 1 has compacted."""
    net = Network([1, 2, 3], election_tick=ELECTION_TICK)
    net.elect(1)
    net.isolate(3)
    for n in range(5):
        net.propose(1, f"{n}".encode())
    net.deliver()
    snapshot = compact_leader(net, 1)
    assert net.node(3).last_index < snapshot.metadata.index
    return net, snapshot


def tick_until_snapshot_queued(net: Network, leader_id: int) -> None:
    """Tick the leader, delivering everything but snapshots, until one is
    queued."""
    while not any(m.type == MT.SNAPSHOT for m in net.queue):
        net.tick(leader_id)
        net.deliver(only=lambda m: m.type != MT.SNAPSHOT)


def test_lagging_follower_is_sent_the_snapshot_and_catches_up() -> None:
    """Node 3 needs entries the leader compacted: it gets a SNAPSHOT, installs
    it (its log now starts after the snapshot), and later entries replicate
    to it as usual. It never applies the compacted entries one by one."""
    net, snapshot = lagging_follower_and_compacted_leader()
    net.heal()

    net.tick_until(lambda: bool(net.sent_of(MT.SNAPSHOT, sender=1, to=3)))
    net.deliver()
    net.propose(1, b"after")
    net.deliver()
    net.tick_all()

    follower = net.node(3)
    assert net.members[3].storage.snapshot() == snapshot
    assert follower.first_index == snapshot.metadata.index + 1
    assert net.applied_data(3) == [b"after"]
    assert follower.commit_index == net.node(1).commit_index
    assert net.log(3) == net.log(1)
    assert net.progress(1, 3).state == ProgressState.REPLICATE


def test_follower_holding_the_prefix_only_advances_its_commit() -> None:
    """A snapshot whose last entry the follower already holds (same index and
    term) is not installed: the follower keeps its log, moves its commit index
    to the snapshot's and answers with it."""
    net = Network([1, 2, 3])
    leader = net.elect(1)
    net.propose(1, b"a")
    # Node 2 stores the entry but never hears that it was committed.
    net.deliver(until_quiet=False, only=lambda m: m.type == MT.APPEND)
    net.isolate(2)
    net.deliver()
    follower = net.node(2)
    assert follower.last_index == leader.commit_index > follower.commit_index
    first_before = follower.first_index
    snapshot = compact_leader(net, 1)

    follower.step(Message(MT.SNAPSHOT, to=2, sender=1, term=leader.term, snapshot=snapshot))
    rd = follower.ready()

    assert rd.snapshot is None
    assert follower.first_index == first_before
    assert follower.commit_index == snapshot.metadata.index
    [answer] = [m for m in rd.messages_after_persist if m.type == MT.APPEND_RESPONSE]
    assert (answer.index, answer.reject) == (snapshot.metadata.index, False)
    net.handle_ready(2, rd)
    assert net.applied_data(2) == [b"a"]


def test_follower_with_a_conflicting_log_installs_the_snapshot() -> None:
    """A snapshot whose last entry the follower holds with a different term
    (or not at all) replaces the follower's whole log."""
    net = Network([1, 2, 3])
    follower = net.node(2)
    snapshot = Snapshot(SnapshotMetadata(index=7, term=3, conf_state=follower.effective_conf_state), b"state")

    follower.step(Message(MT.SNAPSHOT, to=2, sender=1, term=3, snapshot=snapshot))
    rd = follower.ready()

    assert rd.snapshot == snapshot
    assert rd.must_sync
    net.handle_ready(2, rd)
    assert (follower.first_index, follower.last_index, follower.commit_index) == (8, 7, 7)
    assert follower.applied_index == 7


def test_lost_snapshot_is_retried() -> None:
    """The snapshot to node 3 is lost. The leader waits (one snapshot in
    flight) through ``election_tick - 1`` heartbeat answers, then gives up on
    it and sends a new one, which gets node 3 caught up."""
    net, snapshot = lagging_follower_and_compacted_leader()
    net.heal()
    leader = net.node(1)

    tick_until_snapshot_queued(net, 1)
    assert net.drop(lambda m: m.type == MT.SNAPSHOT)
    assert net.progress(1, 3).state == ProgressState.SNAPSHOT

    for _ in range(ELECTION_TICK - 1):
        net.tick(1)
        net.deliver()
    assert len(net.sent_of(MT.SNAPSHOT, to=3)) == 1
    assert net.node(3).first_index < snapshot.metadata.index

    net.tick_until(lambda: len(net.sent_of(MT.SNAPSHOT, to=3)) == 2, max_ticks=5)
    net.deliver()
    assert net.node(3).first_index == snapshot.metadata.index + 1
    assert net.node(3).commit_index == leader.commit_index


def test_failed_snapshot_report_returns_follower_to_probe() -> None:
    """``report_snapshot(ok=False)`` moves the follower back to PROBE, paused
    until its next heartbeat answer, which triggers a fresh snapshot."""
    net, _ = lagging_follower_and_compacted_leader()
    net.heal()
    leader = net.node(1)
    tick_until_snapshot_queued(net, 1)
    net.drop(lambda m: m.type == MT.SNAPSHOT)
    progress = leader.progress(3)
    assert progress is not None and progress.state == ProgressState.SNAPSHOT

    leader.report_snapshot(3, ok=False)

    assert progress.state == ProgressState.PROBE
    assert progress.pending_snapshot == 0
    assert progress.is_paused()
    net.tick_all()
    assert len(net.sent_of(MT.SNAPSHOT, to=3)) == 2


def test_successful_snapshot_report_resumes_after_the_snapshot() -> None:
    """``report_snapshot(ok=True)`` moves the follower to PROBE just past the
    snapshot, waiting for its acknowledgement."""
    net, snapshot = lagging_follower_and_compacted_leader()
    net.heal()
    leader = net.node(1)
    tick_until_snapshot_queued(net, 1)
    progress = leader.progress(3)
    assert progress is not None and progress.state == ProgressState.SNAPSHOT

    leader.report_snapshot(3, ok=True)

    assert progress.state == ProgressState.PROBE
    assert progress.next == snapshot.metadata.index + 1
    net.deliver()
    assert progress.state == ProgressState.REPLICATE
    assert progress.match == leader.last_index
