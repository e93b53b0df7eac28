"""Issue 13, acceptance: with 5 nodes and replication factor 3, a node that
holds no replica of a partition still routes it. Through such a node N,
``Produce``, ``Fetch`` and ``ListOffsets`` are forwarded to the leader (or
answer NOT_LEADER with the leader's address, and must when the caller asks
not to be forwarded), and ``DescribeTopic`` and ``GetMetadata`` report the
partition's real leader, not 0.

The real leader is what the replicas themselves say (NodeAdmin: the one
replica whose role is LEADER). Leader balancing is slowed to ten minutes so
that leadership stays put once elected; each check still gives N a few
seconds to hear a leader's announcement. The last test kills a leader and
restarts nodes: N must learn the new leader (a higher term) and, restarted
with nothing in memory, every leader again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from client.admin import Admin
from client.auth import authorized_channel
from cluster.frontend.grpc_errors import error_info
from harness.local_cluster import LocalCluster
from raftlog.internal.v1 import node_admin_pb2, node_admin_pb2_grpc
from raftlog.v1 import admin_pb2, admin_pb2_grpc, log_pb2, log_pb2_grpc, metadata_pb2, metadata_pb2_grpc
from raftlog.v1.record_batch import Record, encode_batch

pytestmark = pytest.mark.timeout(180)

TOPIC = "routed"
PARTITIONS = 5
NO_FORWARD = (("raftlog-no-forward", "1"),)
SETTLE_S = 5.0
"""How long N may take to learn a leader it does not host (announcements
leave within 100 ms of a change, and every second in any case)."""


@dataclass
class Routed:
    cluster: LocalCluster
    # partition -> (raft group, replicas), filled by the first test.
    partitions: dict[int, tuple[int, tuple[int, ...]]] = field(default_factory=dict)

    def outsider(self, partition: int) -> int:
        """A node that holds no replica of ``partition``."""
        _, replicas = self.partitions[partition]
        return min(set(self.cluster.node_ids) - set(replicas))


@pytest.fixture(scope="module")
def routed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Routed]:
    root: Path = tmp_path_factory.mktemp("routing")
    cluster = LocalCluster(root, nodes=5, topics=[], leader_balance_ms=600_000)
    cluster.start_all()
    try:
        yield Routed(cluster)
    finally:
        cluster.close()


async def _ready(routed: Routed) -> dict[int, int]:
    """Create the topic once (RF 3 of 5 nodes); wait until every partition
    has a leader; returns partition -> leader node."""
    cluster = routed.cluster
    if not routed.partitions:
        async with Admin(list(cluster.addresses.values()), api_key=cluster.api_key) as admin:
            created = await admin.create_topic(TOPIC, PARTITIONS, 3)
        for a in created.assignments:
            assert len(a.replicas) == 3, a
            routed.partitions[a.partition] = (a.raft_group, tuple(a.replicas))
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        leaders = await _real_leaders(routed)
        if len(leaders) == PARTITIONS:
            return leaders
        assert asyncio.get_running_loop().time() < deadline, f"partitions without a leader: {leaders}"
        await asyncio.sleep(0.2)


async def _real_leaders(routed: Routed) -> dict[int, int]:
    """partition -> the node whose replica says it leads (only partitions
    with exactly one such replica)."""
    cluster = routed.cluster
    by_group = {group: p for p, (group, _) in routed.partitions.items()}
    claims: dict[int, list[int]] = {}
    for node, address in cluster.addresses.items():
        if node not in cluster.processes:  # stopped by the failover test
            continue
        async with grpc.aio.insecure_channel(address) as channel:
            stats = await node_admin_pb2_grpc.NodeAdminStub(channel).Stats(
                node_admin_pb2.StatsRequest(groups=list(by_group)),
                timeout=5,
                metadata=cluster.node_admin_metadata(),
            )
        for replica in stats.partitions:
            if replica.role == "LEADER" and replica.group in by_group:
                claims.setdefault(by_group[replica.group], []).append(node)
    return {p: nodes[0] for p, nodes in claims.items() if len(nodes) == 1}


Call = Callable[[grpc.aio.Channel, tuple[tuple[str, str], ...]], Awaitable[Any]]


async def _through_outsiders(routed: Routed, call: Callable[[int], Call]) -> None:
    """For every partition, ``call(partition)`` through a node that holds
    no replica of it: once as a client would (forwarded, or NOT_LEADER with
    the leader's address), once with ``raftlog-no-forward`` (NOT_LEADER with
    the leader's address, nothing else will do)."""
    leaders = await _ready(routed)
    cluster = routed.cluster
    for partition in range(PARTITIONS):
        outsider = routed.outsider(partition)
        leader_address = cluster.addresses[leaders[partition]]
        async with authorized_channel(cluster.addresses[outsider], cluster.api_key) as channel:
            for metadata, must_redirect in (((), False), (NO_FORWARD, True)):
                deadline = asyncio.get_running_loop().time() + SETTLE_S
                while True:
                    answer = await _outcome(call(partition)(channel, metadata))
                    ok = answer == leader_address or (answer == "forwarded" and not must_redirect)
                    if ok or asyncio.get_running_loop().time() > deadline:
                        break
                    await asyncio.sleep(0.1)
                assert ok, (
                    f"partition {partition} through node {outsider} (replicas "
                    f"{routed.partitions[partition][1]}, leader {leaders[partition]}"
                    f"{', no-forward' if must_redirect else ''}): {answer}"
                )


async def _outcome(call: Awaitable[Any]) -> str:
    """ "forwarded" for a success, the leader address of a NOT_LEADER answer,
    or a description of anything else."""
    try:
        await call
        return "forwarded"
    except grpc.aio.AioRpcError as error:
        info = error_info(error)
        if info is not None and info.reason == "NOT_LEADER":
            return info.leader_address or "NOT_LEADER without a leader address"
        return f"{error.code().name} {info.reason if info else ''}: {error.details()}"


async def test_produce_through_a_node_without_a_replica(routed: Routed) -> None:
    def produce(partition: int) -> Call:
        request = log_pb2.ProduceRequest(
            topic=TOPIC, partition=partition, batch=encode_batch([Record(value=b"routed")])
        )
        return lambda ch, md: log_pb2_grpc.LogServiceStub(ch).Produce(request, timeout=10, metadata=md)

    await _through_outsiders(routed, produce)


async def test_fetch_through_a_node_without_a_replica(routed: Routed) -> None:
    def fetch(partition: int) -> Call:
        request = log_pb2.FetchRequest(topic=TOPIC, partition=partition, offset=0)
        return lambda ch, md: log_pb2_grpc.LogServiceStub(ch).Fetch(request, timeout=10, metadata=md)

    await _through_outsiders(routed, fetch)


async def test_list_offsets_through_a_node_without_a_replica(routed: Routed) -> None:
    def list_offsets(partition: int) -> Call:
        request = log_pb2.ListOffsetsRequest(topic=TOPIC, partition=partition)
        return lambda ch, md: log_pb2_grpc.LogServiceStub(ch).ListOffsets(request, timeout=10, metadata=md)

    await _through_outsiders(routed, list_offsets)


async def _reported_leaders(
    routed: Routed, outsider: int, ask: Callable[[grpc.aio.Channel], Awaitable[dict[int, int]]]
) -> None:
    """Until the leaders ``ask`` reports through ``outsider`` match the real
    ones for the partitions it holds no replica of (``SETTLE_S`` at most)."""
    leaders = await _ready(routed)
    cluster = routed.cluster
    foreign = [p for p in range(PARTITIONS) if outsider not in routed.partitions[p][1]]
    assert foreign, f"node {outsider} holds a replica of every partition"
    wanted = {p: leaders[p] for p in foreign}
    deadline = asyncio.get_running_loop().time() + SETTLE_S
    async with authorized_channel(cluster.addresses[outsider], cluster.api_key) as channel:
        while True:
            reported = await ask(channel)
            seen = {p: reported.get(p, 0) for p in foreign}
            if seen == wanted or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
    assert seen == wanted, f"through node {outsider}: reported {seen}, the replicas say {wanted}"


async def test_describe_topic_through_a_node_without_a_replica_reports_the_leaders(routed: Routed) -> None:
    async def describe(channel: grpc.aio.Channel) -> dict[int, int]:
        answer = await admin_pb2_grpc.AdminServiceStub(channel).DescribeTopic(
            admin_pb2.DescribeTopicRequest(name=TOPIC), timeout=10
        )
        return {a.partition: a.leader for a in answer.topic.assignments}

    await _ready(routed)
    for outsider in sorted({routed.outsider(p) for p in range(PARTITIONS)}):
        await _reported_leaders(routed, outsider, describe)


async def test_get_metadata_through_a_node_without_a_replica_reports_the_leaders(routed: Routed) -> None:
    async def metadata(channel: grpc.aio.Channel) -> dict[int, int]:
        answer = await metadata_pb2_grpc.MetadataServiceStub(channel).GetMetadata(
            metadata_pb2.GetMetadataRequest(topics=[TOPIC]), timeout=10
        )
        return {p.partition: p.leader for p in answer.topics[0].partitions}

    await _ready(routed)
    for outsider in sorted({routed.outsider(p) for p in range(PARTITIONS)}):
        await _reported_leaders(routed, outsider, metadata)


async def _metadata_leaders(channel: grpc.aio.Channel) -> dict[int, int]:
    answer = await metadata_pb2_grpc.MetadataServiceStub(channel).GetMetadata(
        metadata_pb2.GetMetadataRequest(topics=[TOPIC]), timeout=10
    )
    return {p.partition: p.leader for p in answer.topics[0].partitions}


async def test_an_outsider_follows_a_failover_and_relearns_everything_after_a_restart(routed: Routed) -> None:
    leaders = await _ready(routed)
    cluster = routed.cluster
    partition = 0
    old_leader = leaders[partition]
    outsider = routed.outsider(partition)
    await asyncio.to_thread(cluster.kill, old_leader)
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while (new_leader := (await _real_leaders(routed)).get(partition, old_leader)) == old_leader:
            assert asyncio.get_running_loop().time() < deadline, (
                f"partition {partition} elected no new leader"
            )
            await asyncio.sleep(0.2)
        # The dead leader's claim is replaced by the new leader's higher term.
        await _reported_leaders(routed, outsider, _metadata_leaders)
    finally:
        await asyncio.to_thread(cluster.start, old_leader)
    assert (await _real_leaders(routed)).get(partition) == new_leader
    # A restarted outsider starts with an empty map: its peers' links repeat
    # their latest announcements on the new streams.
    await asyncio.to_thread(cluster.stop, outsider)
    await asyncio.to_thread(cluster.start, outsider)
    await _reported_leaders(routed, outsider, _metadata_leaders)
