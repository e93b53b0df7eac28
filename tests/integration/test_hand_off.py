"""``raftlog node hand-off`` (a pod's preStop): the node moves the leadership
of every group it leads, the metadata controller's included, to other live
voters; the cluster keeps serving; only a caller with the cluster secret may
ask."""

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
from harness.local_cluster import LocalCluster, TopicSpec
from raftlog.internal.node_proof import ensure_secret_file
from raftlog.internal.v1 import node_admin_pb2, node_admin_pb2_grpc

pytestmark = pytest.mark.timeout(120)

PARTITIONS = 6


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
    """Once every group has a leader: the node that leads the most (the
    controller's leader on a tie), and what it leads."""
    deadline = asyncio.get_running_loop().time() + timeout
    groups = PARTITIONS + 3 + 1 + 1  # t, the consumer offsets, the audit, the controller
    while True:
        led = {node: await _led(cluster, node) for node in cluster.node_ids}
        if sum(map(len, led.values())) >= groups:
            node = max(led, key=lambda n: (len(led[n]), 0 in led[n]))
            return node, led[node]
        assert asyncio.get_running_loop().time() < deadline, f"groups without a leader: {led}"
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


async def test_a_node_hands_off_every_leadership_and_produce_goes_on(tmp_path: Path) -> None:
    # No preferred-leader balancing during the test: it would hand some
    # partitions straight back to the node once it is caught up.
    cluster = LocalCluster(
        tmp_path, topics=[TopicSpec("t", partitions=PARTITIONS)], leader_balance_ms=600_000
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
        assert await _led(cluster, node) == set()

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
    cluster = LocalCluster(
        tmp_path, topics=[TopicSpec("t", partitions=2)], leader_balance_ms=600_000, tls=True
    )
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
