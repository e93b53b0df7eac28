"""Leadership returns to each partition's preferred replica (the first of its
assignment: the file's rotation for file topics) once that replica is back
and caught up."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from client import Producer
from client.auth import authorized_channel
from harness.local_cluster import LocalCluster, TopicSpec
from raftlog.v1 import metadata_pb2, metadata_pb2_grpc

pytestmark = pytest.mark.timeout(120)
BALANCE_MS = 300


async def _leaders(address: str, api_key: str) -> dict[int, int]:
    async with authorized_channel(address, api_key) as channel:
        answer = await metadata_pb2_grpc.MetadataServiceStub(channel).GetMetadata(
            metadata_pb2.GetMetadataRequest(topics=["t"]), timeout=5
        )
    return {p.partition: p.leader for p in answer.topics[0].partitions}


async def _wait_for_leaders(
    address: str, api_key: str, wanted: dict[int, int], timeout: float = 20.0
) -> dict[int, int]:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        leaders = await _leaders(address, api_key)
        if leaders == wanted or asyncio.get_running_loop().time() > deadline:
            return leaders
        await asyncio.sleep(0.2)


async def test_leaders_go_back_to_their_preferred_replicas(tmp_path: Path) -> None:
    cluster = LocalCluster(tmp_path, topics=[TopicSpec("t", partitions=3)], leader_balance_ms=BALANCE_MS)
    cluster.start_all()
    try:
        preferred = {0: 1, 1: 2, 2: 3}  # partition p -> replicas[p % 3]
        assert await _wait_for_leaders(cluster.addresses[2], cluster.api_key, preferred) == preferred
        await asyncio.to_thread(cluster.kill, 1)
        deadline = asyncio.get_running_loop().time() + 20
        while (await _leaders(cluster.addresses[2], cluster.api_key))[0] in (
            0,
            1,
        ):  # someone else takes partition 0
            assert asyncio.get_running_loop().time() < deadline, "partition 0 has no new leader"
            await asyncio.sleep(0.1)
        async with Producer(
            f"{cluster.addresses[2]},{cluster.addresses[3]}", api_key=cluster.api_key
        ) as producer:
            for i in range(50):
                await producer.send("t", f"{i}".encode(), partition=0)
            await producer.flush()
        await asyncio.to_thread(cluster.start, 1)
        assert await _wait_for_leaders(cluster.addresses[2], cluster.api_key, preferred) == preferred
    finally:
        cluster.close()
