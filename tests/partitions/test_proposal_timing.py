"""ProposalTiming marks (partitions/proposal_timing.py), the commit-latency
histogram and the group-commit histograms the replica and writer keep for
the node's metrics, on an in-process three-host cluster."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from partitions.latency_buckets import Buckets
from partitions.log_bytes import LogBytes
from partitions.proposal_timing import ProposalTiming, next_proposal_timing
from partitions.replica import ProduceResult, Replica
from partitions.replica_errors import NotLeaderError
from raft.types import Entry
from tests.partitions.replica_cluster import InProcessCluster, batch

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[InProcessCluster]:
    c = InProcessCluster(tmp_path)
    await c.start()
    yield c
    await c.close()


async def _produce_timed(replica: Replica, values: list[bytes]) -> tuple[ProduceResult, ProposalTiming]:
    timing = ProposalTiming()
    token = next_proposal_timing.set(timing)
    try:
        result = await replica.produce(batch(values))
    finally:
        next_proposal_timing.reset(token)
    return result, timing


async def test_marks_are_filled_in_order(cluster: InProcessCluster) -> None:
    leader = await cluster.leader()
    before = time.monotonic_ns()
    result, timing = await _produce_timed(leader, [b"a", b"b"])
    after = time.monotonic_ns()
    assert result.base_offset == 0
    assert timing.index == leader.status().last_index  # the entry just appended
    marks = [timing.proposed_ns, timing.sync_started_ns, timing.sync_ended_ns]
    assert before <= timing.proposed_ns
    assert all(m > 0 for m in marks) and marks == sorted(marks), timing
    assert 0 < timing.proposed_ns <= timing.committed_ns <= timing.applied_ns <= after, timing


async def test_every_proposal_gets_its_own_marks(cluster: InProcessCluster) -> None:
    leader = await cluster.leader()
    answers = await asyncio.gather(*(_produce_timed(leader, [bytes([i])]) for i in range(5)))
    indexes = [timing.index for _, timing in answers]
    assert len(set(indexes)) == 5
    for _, timing in answers:
        assert timing.sync_ended_ns >= timing.sync_started_ns >= timing.proposed_ns > 0
        assert timing.applied_ns >= timing.committed_ns >= timing.proposed_ns


async def test_unreached_steps_stay_zero(cluster: InProcessCluster) -> None:
    leader = await cluster.leader()
    follower = next(r for r in cluster.replicas() if not r.is_leader)
    timing = ProposalTiming()
    token = next_proposal_timing.set(timing)
    try:
        with pytest.raises(NotLeaderError):
            await follower.produce(batch([b"x"]))
    finally:
        next_proposal_timing.reset(token)
    assert timing == ProposalTiming()  # refused before it was submitted
    # Cut the leader off: the proposal is submitted and appended, never committed.
    others = [n for n in cluster.node_ids if n != leader.node_id]
    for n in others:
        cluster.cut.add((leader.node_id, n))
    timing = ProposalTiming()
    token = next_proposal_timing.set(timing)
    try:
        task = asyncio.ensure_future(leader.produce(batch([b"lost"])))
    finally:
        next_proposal_timing.reset(token)
    await cluster.wait_until(lambda: timing.sync_ended_ns > 0, what="the leader's own write")
    await asyncio.sleep(0.1)
    assert timing.proposed_ns > 0 and timing.index > 0
    assert timing.committed_ns == 0 and timing.applied_ns == 0
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def test_nothing_recorded_without_the_context_var(cluster: InProcessCluster) -> None:
    leader = await cluster.leader()
    untouched = ProposalTiming()
    token = next_proposal_timing.set(untouched)
    next_proposal_timing.reset(token)  # set and unset: the replica must not see it
    await leader.produce(batch([b"plain"]))
    assert untouched == ProposalTiming()
    assert next_proposal_timing.get() is None
    # A task started under the variable keeps its own context; one started
    # outside does not see it.
    timing = ProposalTiming()
    plain = asyncio.ensure_future(leader.produce(batch([b"outside"])))
    token = next_proposal_timing.set(timing)
    try:
        await plain
    finally:
        next_proposal_timing.reset(token)
    assert timing == ProposalTiming()


async def test_answers_are_identical_with_and_without_timing(tmp_path: Path) -> None:
    answers: list[list[tuple[int, int, bool]]] = []
    for run, timed in enumerate((False, True)):
        cluster = InProcessCluster(tmp_path / f"run{run}")
        await cluster.start()
        try:
            leader = await cluster.leader()
            results = []
            for i in range(6):
                if timed:
                    result, _ = await _produce_timed(leader, [b"v%d" % i] * (i + 1))
                else:
                    result = await leader.produce(batch([b"v%d" % i] * (i + 1)))
                results.append((result.base_offset, result.last_offset, result.duplicate))
            read = leader.read(0, 1 << 20)
            answers.append([*results, (read.high_watermark, len(read.batches), False)])
        finally:
            await cluster.close()
    assert answers[0] == answers[1]


async def test_commit_latency_and_group_commit_histograms_grow(cluster: InProcessCluster) -> None:
    leader = await cluster.leader()
    host = cluster.hosts[leader.node_id]
    latency_before = host.counters.commit_latency.snapshot().count
    writer = host.writer
    syncs_before = writer.batch_writes.snapshot().count
    for i in range(4):
        await leader.produce(batch([bytes([i])]))
    latency = host.counters.commit_latency.snapshot()
    assert latency.count - latency_before == 4  # one per proposal, timed or not
    assert 0 < latency.total < 10
    assert writer.batch_writes.snapshot().count > syncs_before
    assert writer.sync_seconds.snapshot().count == writer.stats().syncs
    assert writer.batch_bytes.snapshot().count == writer.stats().syncs


def test_buckets_count_by_upper_bound() -> None:
    buckets = Buckets((1.0, 2.0, 5.0))
    for value in (0.5, 1.0, 1.5, 5.0, 7.0):
        buckets.observe(value)
    snapshot = buckets.snapshot()
    assert snapshot.counts == (2, 1, 1, 1)  # le=1 holds 1.0 itself
    assert snapshot.cumulative() == [("1.0", 2), ("2.0", 3), ("5.0", 4), ("+Inf", 5)]
    assert snapshot.total == pytest.approx(15.0)
    with pytest.raises(ValueError, match="strictly increasing"):
        Buckets((1.0, 1.0))


def _entries(first: int, count: int, size: int, term: int = 1) -> list[Entry]:
    return [Entry(index=i, term=term, data=b"x" * size) for i in range(first, first + count)]


def test_log_bytes_exact_in_the_window_and_estimated_below() -> None:
    sizes = LogBytes(keep_at_most=4)
    sizes.record(_entries(1, 3, 84))  # 100 bytes each with the 16-byte overhead
    assert sizes.bytes_after(0, 3) == (300, False)
    assert sizes.bytes_after(2, 3) == (100, False)
    # A new leader overwrites index 3 and appends a larger entry.
    sizes.record(_entries(3, 2, 184, term=2))
    assert sizes.bytes_after(2, 4) == (400, False)
    for start in range(5, 20):
        sizes.record(_entries(start, 1, 84))
    assert sizes.needs_trim()  # 19 records, more than twice keep_at_most
    sizes.trim(floor=18)
    assert len(sizes) == 2  # nobody asks below the floor
    sizes.record(_entries(20, 1, 84))
    sizes.trim(floor=5)
    assert len(sizes) == 3
    for start in range(21, 25):
        sizes.record(_entries(start, 1, 84))
    sizes.trim(floor=5)
    assert len(sizes) == 4  # keep_at_most, however low the floor: 21..24
    assert sizes.bytes_after(22, 24) == (200, False)
    below, estimated = sizes.bytes_after(15, 24)
    assert estimated and below == 900  # 9 entries at the window's average
    sizes.reset()
    assert sizes.bytes_after(0, 5) == (0, True)
