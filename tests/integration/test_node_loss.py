"""A node is killed: after the grace period the controller gives its
partitions new replicas on a live node, and those replicas really hold the
data (a second node can then die without losing a record)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from client.admin import Admin
from harness.local_cluster import LocalCluster
from tests.integration.replica_moves import produce_spread, read_all, wait_for_raft

pytestmark = pytest.mark.timeout(180)

DEAD_AFTER_MS = 2000


async def _wait_until_off(admin: Admin, topic: str, node: int, timeout: float = 60.0) -> dict[int, set[int]]:
    """Until no partition is assigned to ``node``; returns group -> members."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        described = await admin.describe_topic(topic)
        placed = {p.raft_group: set(p.replicas) | set(p.learners) for p in described.assignments}
        if all(node not in members for members in placed.values()):
            return placed
        assert asyncio.get_running_loop().time() < deadline, f"node {node} still holds {placed}"
        await asyncio.sleep(0.2)


async def test_a_dead_nodes_partitions_get_new_replicas_that_hold_the_data(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, nodes=4, topics=[], node_dead_after_ms=DEAD_AFTER_MS)
    cluster.start_all()
    try:
        async with Admin(list(cluster.addresses.values()), api_key=cluster.api_key) as admin:
            created = await admin.create_topic("events", 3, 3)
            holders = [set(p.replicas) for p in created.assignments]
            victim = 4  # not a controller voter: the controller keeps its quorum
            assert any(victim in h for h in holders), holders
            first = [f"a{i}".encode() for i in range(60)]
            await produce_spread(cluster, "events", 3, first)

            await asyncio.to_thread(cluster.kill, victim)
            placed = await _wait_until_off(admin, "events", victim)
            assert all(len(members) == 3 for members in placed.values()), placed
            nodes = {n.node_id: n for n in await admin.list_nodes()}
            assert not nodes[victim].alive

            # The leaders move Raft membership to the assignment (the new
            # replica a voter, the dead one gone). Then lose an *original*
            # replica of a moved partition: it keeps a quorum only if its new
            # replica is a real voter holding the log.
            await wait_for_raft(cluster, placed)
            moved = next(h for h in holders if victim in h)
            second = min(moved - {victim})
            await asyncio.to_thread(cluster.kill, second)
            more = [f"b{i}".encode() for i in range(30)]
            await produce_spread(cluster, "events", 3, more)
            seen = await read_all(cluster, "events", 3, len(first) + len(more))
            assert sorted(seen) == sorted(first + more)
            assert len(seen) == len(set(seen))
    finally:
        cluster.close()


async def test_decommission_moves_every_replica_off_a_live_node(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, nodes=4, topics=[], node_dead_after_ms=DEAD_AFTER_MS)
    cluster.start_all()
    try:
        async with Admin(list(cluster.addresses.values()), api_key=cluster.api_key) as admin:
            created = await admin.create_topic("events", 3, 3)
            assert any(4 in p.replicas for p in created.assignments)
            values = [f"v{i}".encode() for i in range(30)]
            await produce_spread(cluster, "events", 3, values)
            await admin.decommission_node(4)
            placed = await _wait_until_off(admin, "events", 4)
            await wait_for_raft(cluster, placed)
            node = next(n for n in await admin.list_nodes() if n.node_id == 4)
            assert node.decommissioning and node.alive and node.replicas == 0
            # Nothing new lands on it.
            later = await admin.create_topic("later", 3, 3)
            assert all(4 not in p.replicas for p in later.assignments)
        # Its data now lives elsewhere: stop it and read everything.
        await asyncio.to_thread(cluster.stop, 4)
        assert sorted(await read_all(cluster, "events", 3, len(values))) == sorted(values)
    finally:
        cluster.close()
