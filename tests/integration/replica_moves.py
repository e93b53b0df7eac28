"""Helpers for tests that move replicas (node loss, decommission, join):
write and read back a topic's values across its partitions, and what each
partition group's Raft leader says its membership is."""

from __future__ import annotations

import asyncio

import grpc

from client import Consumer, Producer
from harness.local_cluster import LocalCluster
from raftlog.internal.v1 import node_admin_pb2, node_admin_pb2_grpc


async def produce_spread(cluster: LocalCluster, topic: str, partitions: int, values: list[bytes]) -> None:
    """Send ``values`` round-robin over the partitions, acknowledged."""
    async with Producer(list(cluster.addresses.values()), api_key=cluster.api_key, linger_ms=2) as producer:
        for i, value in enumerate(values):
            await producer.send(topic, value, partition=i % partitions)
        await producer.flush()


async def read_all(cluster: LocalCluster, topic: str, partitions: int, expected: int) -> list[bytes]:
    """Every value of the topic from the start, through the running nodes
    (stops at ``expected`` values or after 30 s)."""
    live = [a for n, a in cluster.addresses.items() if n in cluster.processes]
    async with Consumer(live, api_key=cluster.api_key) as consumer:
        consumer.assign([(topic, p) for p in range(partitions)])
        await consumer.seek_to_beginning()
        seen: list[bytes] = []
        deadline = asyncio.get_running_loop().time() + 30
        while len(seen) < expected and asyncio.get_running_loop().time() < deadline:
            seen += [r.value or b"" for r in await consumer.poll(1.0)]
        return seen


async def raft_members(cluster: LocalCluster) -> dict[int, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Each partition group's (voters, learners) as its leader reports them."""
    found = {}
    for node in list(cluster.processes):
        async with grpc.aio.insecure_channel(cluster.addresses[node]) as channel:
            stats = await node_admin_pb2_grpc.NodeAdminStub(channel).Stats(
                node_admin_pb2.StatsRequest(), timeout=5, metadata=cluster.node_admin_metadata()
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
