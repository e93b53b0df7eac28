"""A node added to a running cluster: it registers itself, follows the
metadata, receives a fair share of the replicas (which really hold the
data), and the nodes it took them from delete their copies."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from client.admin import Admin
from cluster.replica_dump import read_replica_log
from harness.local_cluster import LocalCluster
from raftlog.internal.v1 import join_pb2, join_pb2_grpc, node_admin_pb2, node_admin_pb2_grpc
from tests.integration.replica_moves import produce_spread, read_all, wait_for_raft

pytestmark = pytest.mark.timeout(240)

JOIN = "/raftlog.internal.v1.ClusterJoin/Join"

PARTITIONS = 6


async def _wait_balanced(admin: Admin, new: int, timeout: float = 90.0) -> dict[int, int]:
    """Until the new node is alive and every node holds within one replica
    of every other; returns node -> replica count."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        nodes = {n.node_id: n for n in await admin.list_nodes()}
        counts = {n: node.replicas for n, node in nodes.items()}
        if new in nodes and nodes[new].alive and max(counts.values()) - min(counts.values()) <= 1:
            return counts
        assert asyncio.get_running_loop().time() < deadline, f"not balanced: {counts}"
        await asyncio.sleep(0.5)


async def _wait_until_retired(cluster: LocalCluster, node: int, group: int, timeout: float = 30.0) -> None:
    """Until ``node`` no longer runs a replica of ``group``."""
    deadline = asyncio.get_running_loop().time() + timeout
    async with grpc.aio.insecure_channel(cluster.addresses[node]) as channel:
        while True:
            stats = await node_admin_pb2_grpc.NodeAdminStub(channel).Stats(
                node_admin_pb2.StatsRequest(groups=[group]), timeout=5, metadata=cluster.node_admin_metadata()
            )
            if not stats.partitions:
                return
            assert asyncio.get_running_loop().time() < deadline, f"node {node} still runs group {group}"
            await asyncio.sleep(0.2)


async def test_a_joining_node_gets_its_share_and_old_copies_are_deleted(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, nodes=3, topics=[])
    cluster.start_all()
    try:
        async with Admin(list(cluster.addresses.values()), api_key=cluster.api_key) as admin:
            created = await admin.create_topic("events", PARTITIONS, 3)
            before = {p.raft_group: set(p.replicas) for p in created.assignments}
            first = [f"a{i}".encode() for i in range(120)]
            await produce_spread(cluster, "events", PARTITIONS, first)

            new = await asyncio.to_thread(cluster.add_node)
            counts = await _wait_balanced(admin, new)
            assert counts[new] >= 2, counts
            described = await admin.describe_topic("events")
            after = {p.raft_group: set(p.replicas) for p in described.assignments}
            moved = {g: before[g] - after[g] for g in after if new in after[g]}
            assert moved, f"no partition of events moved to node {new}: {after}"
            await wait_for_raft(cluster, after)

            # The new replicas are voters that hold the log: lose a node that
            # shared a moved partition with the new one; the partition keeps
            # a quorum only through the new replica.
            group, (old,) = next(iter(moved.items()))
            survivor = min(after[group] - {new})
            await asyncio.to_thread(cluster.kill, survivor)
            more = [f"b{i}".encode() for i in range(60)]
            await produce_spread(cluster, "events", PARTITIONS, more)
            seen = await read_all(cluster, "events", PARTITIONS, len(first) + len(more))
            assert sorted(seen) == sorted(first + more)
            assert len(seen) == len(set(seen))
            await _wait_until_retired(cluster, old, group)
        await asyncio.to_thread(cluster.stop_all)
        # The node the replica moved off removed its copy of the group.
        gone = read_replica_log(old, cluster.data_dir(old), group)
        assert gone.commit_index == 0 and gone.records == [], gone
        kept = read_replica_log(new, cluster.data_dir(new), group)
        assert len(kept.records) >= len(first) // PARTITIONS
    finally:
        cluster.close()


async def test_join_refuses_another_cluster_and_a_taken_node_id(tmp_path: Path) -> None:
    """Asked with the cluster's proof (the harness holds the secret): the
    refusals say what is wrong without naming the cluster or any address."""
    cluster = LocalCluster(tmp_path, nodes=3, topics=[])
    cluster.start_all()
    try:
        cluster_id = next(
            line.split('"')[1]
            for line in cluster.config_path.read_text().splitlines()
            if line.startswith("cluster_id")
        )
        async with Admin(list(cluster.addresses.values()), api_key=cluster.api_key) as admin:
            leader = (await admin.cluster_status()).controller_leader
        async with grpc.aio.insecure_channel(cluster.addresses[leader]) as channel:
            stub = join_pb2_grpc.ClusterJoinStub(channel)

            async def join(request: join_pb2.JoinRequest) -> join_pb2.JoinResponse:
                proof = cluster.internal_metadata(JOIN, node_id=request.node_id)
                response: join_pb2.JoinResponse = await stub.Join(request, timeout=5, metadata=proof)
                return response

            with pytest.raises(grpc.aio.AioRpcError) as wrong_cluster:
                await join(join_pb2.JoinRequest(cluster_id="other", node_id=9, address="127.0.0.1:1"))
            assert wrong_cluster.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "another cluster" in (wrong_cluster.value.details() or "")
            with pytest.raises(grpc.aio.AioRpcError) as taken:
                await join(join_pb2.JoinRequest(cluster_id=cluster_id, node_id=2, address="127.0.0.1:1"))
            assert taken.value.code() == grpc.StatusCode.ALREADY_EXISTS
            assert "node id 2" in (taken.value.details() or "")
            for refusal in (wrong_cluster.value, taken.value):
                text = f"{refusal.details()} {refusal.trailing_metadata()}"
                assert cluster_id not in text
                assert not any(address in text for address in cluster.addresses.values()), text
            # A proof must name the node it asks to register.
            with pytest.raises(grpc.aio.AioRpcError) as not_itself:
                await stub.Join(
                    join_pb2.JoinRequest(cluster_id=cluster_id, node_id=9, address="127.0.0.1:1"),
                    timeout=5,
                    metadata=cluster.internal_metadata(JOIN, node_id=8),
                )
            assert not_itself.value.code() == grpc.StatusCode.PERMISSION_DENIED
            # Asking again for a registration that exists is fine.
            await join(join_pb2.JoinRequest(cluster_id=cluster_id, node_id=2, address=cluster.addresses[2]))
        async with Admin(list(cluster.addresses.values()), api_key=cluster.api_key) as admin:
            assert sorted(n.node_id for n in await admin.list_nodes()) == [1, 2, 3]
    finally:
        cluster.close()
