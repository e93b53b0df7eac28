"""No election a healthy leader did not ask for, under flat-out produce (issue 20).

A 3-node ``LocalCluster`` (RF 3, 16 partitions) takes 1 KiB records from
the SDK's ``Producer`` as fast as it accepts them for ``LOAD_S`` seconds
(``RAFTLOG_ELECTION_LOAD_S``, default 20; the bench runs the same load).
No node fails, so every election timeout any node counts during the run
(NodeAdmin ``Stats.election_timeouts``: a follower that heard nothing from
its leader for an election timeout) is spurious: a heartbeat, a vote or an
acknowledgement that waited too long somewhere, typically behind megabytes
of appends in the Raft transport (cluster/transport/peer_link.py's control
lane is what keeps it from waiting), or a leader replica busy with its own
synced write while its node is plainly alive (the transport's ``on_heard``
feeds ``RaftNode.heard_from_node`` through the replica host for that), or
ticks stepped before leader messages that arrived first (the replica
driver queues ticks in its inbox).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from client import Producer
from harness.local_cluster import LocalCluster, TopicSpec
from raftlog.internal.v1 import node_admin_pb2, node_admin_pb2_grpc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

PARTITIONS = 16
RECORD = b"v" * 1024
LOAD_S = float(os.environ.get("RAFTLOG_ELECTION_LOAD_S", "20"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("elections"), topics=[TopicSpec("load", partitions=PARTITIONS)])
    c.start_all()
    yield c
    c.close()


async def _stats(cluster: LocalCluster) -> dict[int, node_admin_pb2.NodeStats]:
    """Every node's NodeAdmin summary, asked with the harness's node proof."""

    async def ask(node: int) -> node_admin_pb2.NodeStats:
        async with grpc.aio.insecure_channel(cluster.addresses[node]) as channel:
            stats: node_admin_pb2.NodeStats = await node_admin_pb2_grpc.NodeAdminStub(channel).Stats(
                node_admin_pb2.StatsRequest(summary_only=True),
                timeout=10,
                metadata=cluster.node_admin_metadata(),
            )
        return stats

    answers = await asyncio.gather(*(ask(n) for n in cluster.node_ids))
    return dict(zip(cluster.node_ids, answers, strict=True))


async def _wait_for_leaders(cluster: LocalCluster, groups: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            led = sum(s.leaders for s in (await _stats(cluster)).values())
        except grpc.aio.AioRpcError:
            led = -1  # a node still starting
        if led >= groups:
            return
        assert time.monotonic() < deadline, f"{led} of {groups} groups have a leader after {timeout:g} s"
        await asyncio.sleep(0.2)


async def test_flat_out_produce_starts_no_election(cluster: LocalCluster) -> None:
    # The load topic's partitions plus the cluster's own groups (offsets,
    # audit): wait until every group has settled on a leader first.
    await _wait_for_leaders(cluster, PARTITIONS)
    await asyncio.sleep(1.0)
    before = {n: s.election_timeouts for n, s in (await _stats(cluster)).items()}
    acked = failed = 0
    stop = False

    def done(future: asyncio.Future[Any]) -> None:
        nonlocal acked, failed
        if future.cancelled() or future.exception() is not None:
            failed += 0 if stop else 1
        else:
            acked += 1

    producer = Producer([cluster.addresses[n] for n in cluster.node_ids], api_key=cluster.api_key)

    async def pump() -> None:
        sent = 0
        while not stop:
            (await producer.send("load", RECORD)).add_done_callback(done)
            sent += 1
            if sent % 256 == 0:
                await asyncio.sleep(0)  # let the producer's own tasks run

    task = asyncio.create_task(pump())
    started = time.monotonic()
    try:
        await asyncio.sleep(LOAD_S)
    finally:
        stop = True
        await task
        elapsed = time.monotonic() - started
        await producer.close(timeout_s=0)
    after = {n: s.election_timeouts for n, s in (await _stats(cluster)).items()}
    elections = {n: after[n] - before[n] for n in after}
    mb_s = acked * len(RECORD) / elapsed / 1e6
    print(
        f"\n{acked} records acked ({mb_s:.1f} MB/s) in {elapsed:.1f} s; election timeouts per node: {elections}"
    )
    # The load really was flat out (a run that barely produced proves nothing).
    assert mb_s > 2, f"only {mb_s:.1f} MB/s acknowledged"
    assert failed == 0, f"{failed} records failed"
    assert elections == {n: 0 for n in after}, f"elections under load (node: count): {elections}"
