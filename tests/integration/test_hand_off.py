"""``raftlog node hand-off`` (a pod's preStop): the node moves the leadership
of every group it leads, the metadata controller's included, to other live
voters, and stays draining until it stops, so the other nodes'
preferred-leader balancing does not hand leaderships back; the cluster keeps
serving; only a caller with the cluster secret may ask."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from client import Producer
from client.admin import Admin
from cluster.internal.node_admin import NODE_ADMIN_HAND_OFF
from harness.local_cluster import LocalCluster, TopicSpec
from raftlog.internal.node_proof import ensure_secret_file
from raftlog.internal.v1 import node_admin_pb2, node_admin_pb2_grpc

pytestmark = pytest.mark.timeout(120)

PARTITIONS = 6
BALANCE_MS = 1000
"""Preferred-leader balancing every second (the default is 10 s): a peer
tries to hand the node's preferred partitions back within a second of the
hand-off, so the race the draining state closes is certain."""


async def _led(cluster: LocalCluster, node: int) -> set[int]:
    """The groups ``node`` leads now, the controller's (0) included."""
    async with grpc.aio.insecure_channel(cluster.addresses[node]) as channel:
        stub = node_admin_pb2_grpc.NodeAdminStub(channel)
        partitions = await stub.Stats(
            node_admin_pb2.StatsRequest(), timeout=5, metadata=cluster.node_admin_metadata()
        )
        controller = await stub.Stats(
            node_admin_pb2.StatsRequest(groups=[0]), timeout=5, metadata=cluster.node_admin_metadata()
        )
    return {p.group for p in [*partitions.partitions, *controller.partitions] if p.role == "LEADER"}


async def _busiest(cluster: LocalCluster, timeout: float = 20.0) -> tuple[int, set[int]]:
    """Once every group has a leader and the balancers stopped moving them
    (the same leaders for two balance intervals): the node that leads the
    most (the controller's leader on a tie), and what it leads."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    groups = PARTITIONS + 3 + 1 + 1  # t, the consumer offsets, the audit, the controller
    stable_since, last = loop.time(), dict[int, set[int]]()
    while True:
        led = {node: await _led(cluster, node) for node in cluster.node_ids}
        if led != last:
            stable_since, last = loop.time(), led
        elif sum(map(len, led.values())) >= groups and loop.time() - stable_since > 2 * BALANCE_MS / 1000:
            node = max(led, key=lambda n: (len(led[n]), 0 in led[n]))
            return node, led[node]
        assert loop.time() < deadline, f"groups without a leader, or leaders still moving: {led}"
        await asyncio.sleep(0.2)


def _moved(stdout: str) -> set[int]:
    """The groups ``node hand-off`` says it moved (after the line's last ': ')."""
    line = stdout.strip().splitlines()[-1]
    return {int(g) for g in line.rpartition(": ")[2].split(", ")} if "s: " in line else set()


def _hand_off(cluster: LocalCluster, node: int, secret_file: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RAFTLOG_CLUSTER_SECRET_FILE": str(secret_file)}
    command = [sys.executable, "-m", "cluster.cli", "node", "hand-off", "--config", str(cluster.config_path)]
    return subprocess.run(
        [*command, "--node-id", str(node), "--timeout", "15"],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )


async def _hand_off_again(cluster: LocalCluster, node: int) -> node_admin_pb2.HandOffResponse:
    async with grpc.aio.insecure_channel(cluster.addresses[node]) as channel:
        return await node_admin_pb2_grpc.NodeAdminStub(channel).HandOffLeadership(
            node_admin_pb2.HandOffRequest(wait_seconds=1),
            timeout=5,
            metadata=cluster.internal_metadata(NODE_ADMIN_HAND_OFF),
        )


async def test_a_node_hands_off_every_leadership_and_produce_goes_on(tmp_path: Path) -> None:
    cluster = LocalCluster(
        tmp_path, topics=[TopicSpec("t", partitions=PARTITIONS)], leader_balance_ms=BALANCE_MS
    )
    cluster.start_all()
    try:
        node, before = await _busiest(cluster)
        assert len(before) >= 2, before

        # Without the cluster's secret the node refuses (and moves nothing).
        rogue = tmp_path / "rogue.secret"
        ensure_secret_file(rogue)
        refused = await asyncio.to_thread(_hand_off, cluster, node, rogue)
        assert refused.returncode == 1, refused
        assert "UNAUTHENTICATED" in refused.stderr
        async with grpc.aio.insecure_channel(cluster.addresses[node]) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as no_proof:
                await node_admin_pb2_grpc.NodeAdminStub(channel).HandOffLeadership(
                    node_admin_pb2.HandOffRequest(wait_seconds=1), timeout=5
                )
        assert no_proof.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert await _led(cluster, node) == before

        done = await asyncio.to_thread(_hand_off, cluster, node, cluster.secret_file)
        assert done.returncode == 0, done
        assert f"node {node}: handed off the leadership of {len(before)} group(s)" in done.stdout, done
        assert _moved(done.stdout) == before
        assert "still leads" not in done.stderr, done.stderr
        assert f"node {node}: draining" in done.stdout, done
        assert await _led(cluster, node) == set()

        # Its peers' balancers try to hand its preferred partitions back
        # (it is alive and caught up); it refuses, and leads nothing still.
        await asyncio.sleep(3.5 * BALANCE_MS / 1000)
        assert await _led(cluster, node) == set()
        repeat = await _hand_off_again(cluster, node)  # idempotent: nothing more to move
        assert repeat.draining and list(repeat.moved) == [] and list(repeat.left) == [], repeat
        assert repeat.refused_transfers > 0, repeat

        async with Admin(list(cluster.addresses.values()), api_key=cluster.api_key) as admin:
            controller = (await admin.cluster_status()).controller_leader
        assert controller not in (0, node)
        if 0 not in before:  # the controller's leadership moves too
            again = await asyncio.to_thread(_hand_off, cluster, controller, cluster.secret_file)
            assert again.returncode == 0 and 0 in _moved(again.stdout), again
            assert 0 not in await _led(cluster, controller)
        async with Producer(list(cluster.addresses.values()), api_key=cluster.api_key) as producer:
            sent = [await producer.send("t", f"{p}".encode(), partition=p) for p in range(PARTITIONS)]
            await producer.flush()
            for future in sent:
                await future
    finally:
        cluster.close()


async def test_with_tls_it_hands_off_over_the_internal_listener(tmp_path: Path) -> None:
    """With ``[tls]`` the command dials the node's mTLS listener with the
    node's certificate (and a proof); health checks the public TLS port."""
    cluster = LocalCluster(tmp_path, topics=[TopicSpec("t", partitions=2)], tls=True)
    cluster.start_all()
    try:
        assert cluster.tls_ca is not None
        async with Admin(
            list(cluster.addresses.values()), api_key=cluster.api_key, tls_ca=cluster.tls_ca
        ) as admin:
            node = (await admin.cluster_status()).controller_leader
        health = [sys.executable, "-m", "cluster.cli", "health", "--address", cluster.addresses[node]]
        plain = await asyncio.to_thread(subprocess.run, health, capture_output=True, text=True, timeout=30)
        assert plain.returncode == 1, plain  # a plaintext check of a TLS port fails
        secure = [*health, "--tls-ca", str(cluster.tls_ca)]
        served = await asyncio.to_thread(subprocess.run, secure, capture_output=True, text=True, timeout=30)
        assert served.returncode == 0, served
        done = await asyncio.to_thread(_hand_off, cluster, node, cluster.secret_file)
        assert done.returncode == 0, done
        assert 0 in _moved(done.stdout) and "still leads" not in done.stderr, done
        async with Admin(
            list(cluster.addresses.values()), api_key=cluster.api_key, tls_ca=cluster.tls_ca
        ) as admin:
            assert (await admin.cluster_status()).controller_leader not in (0, node)
    finally:
        cluster.close()
