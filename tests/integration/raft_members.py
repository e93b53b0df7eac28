"""What each partition group's Raft leader says its membership is, for
tests that move replicas (node loss, decommission, join)."""

from __future__ import annotations

import asyncio

import grpc

from client.local_cluster import LocalCluster
from raftlog.internal.v1 import node_admin_pb2, node_admin_pb2_grpc


async def raft_members(cluster: LocalCluster) -> dict[int, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Each partition group's (voters, learners) as its leader reports them."""
    found = {}
    for node in list(cluster.processes):
        async with grpc.aio.insecure_channel(cluster.addresses[node]) as channel:
            stats = await node_admin_pb2_grpc.NodeAdminStub(channel).Stats(
                node_admin_pb2.StatsRequest(), timeout=5
            )
        for r in stats.partitions:
            if r.role == "LEADER":
                found[r.group] = (tuple(r.voters), tuple(r.learners))
    return found


async def wait_for_raft(cluster: LocalCluster, groups: dict[int, set[int]], timeout: float = 60.0) -> None:
    """Until every group's leader has exactly the assigned voters."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        members = await raft_members(cluster)
        if all(
            g in members and set(members[g][0]) == want and not members[g][1] for g, want in groups.items()
        ):
            return
        assert asyncio.get_running_loop().time() < deadline, f"Raft membership {members}, wanted {groups}"
        await asyncio.sleep(0.2)
