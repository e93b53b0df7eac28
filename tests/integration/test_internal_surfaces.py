"""Issue 14 on the wire: what an outsider on the same network tried against
a 3-node cluster (real node processes), and what it gets now.

The outsider knows the cluster id (the default is ``local``; here it is
read from the cluster file) and the node ids, and can reach every node's
port; it does not hold the cluster secret. Every internal surface (Raft
transport, cluster join, NodeAdmin) refuses it with ``UNAUTHENTICATED`` and
a text that names nothing, before anything it sent is read; a rogue node
with its own secret cannot join; a node without a secret does not start;
the nodes' environment holds no key and no secret.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from client.admin import Admin
from client.errors import AuthenticationError
from cluster.controller import encode_command, issue_api_key
from cluster.controller_replica import CONTROLLER_GROUP
from cluster.frontend.front_door import INTERNAL_SERVICES
from cluster.transport.peer_link import METADATA_CLUSTER, METADATA_FROM, METADATA_TO, STREAM_METHOD
from cluster.transport.raft_wire import encode_batch, encode_group_message
from harness.local_cluster import LocalCluster, TopicSpec, free_ports
from raft.types import Entry, Message, MessageType
from raftlog.internal.node_proof import PROOF_METADATA_KEY, make_proof
from raftlog.internal.v1 import join_pb2, join_pb2_grpc, node_admin_pb2, node_admin_pb2_grpc, transport_pb2

pytestmark = pytest.mark.timeout(180)

JOIN = "/raftlog.internal.v1.ClusterJoin/Join"
REFUSED = (grpc.StatusCode.UNAUTHENTICATED, "not allowed")
HUGE = 10**9


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("internal"), topics=[TopicSpec("t", partitions=1)])
    c.start_all()
    yield c
    c.close()


def cluster_id_of(cluster: LocalCluster) -> str:
    return next(
        line.split('"')[1]
        for line in cluster.config_path.read_text().splitlines()
        if line.startswith("cluster_id")
    )


def says_nothing(cluster: LocalCluster, error: grpc.aio.AioRpcError) -> None:
    """The refusal is the fixed one, and nothing in it (details, trailers)
    names the cluster, a node's address or a node id."""
    assert (error.code(), error.details()) == REFUSED
    text = f"{error.details()} {error.trailing_metadata()} {error.debug_error_string()}"
    assert cluster_id_of(cluster) not in text
    assert not any(address in text for address in cluster.addresses.values())


async def group0(cluster: LocalCluster, node: int) -> node_admin_pb2.ReplicaStats:
    """Node ``node``'s replica of the metadata controller, as it reports it
    (asked with the harness's proof)."""
    async with grpc.aio.insecure_channel(cluster.addresses[node]) as channel:
        stats = await node_admin_pb2_grpc.NodeAdminStub(channel).Stats(
            node_admin_pb2.StatsRequest(groups=[CONTROLLER_GROUP]),
            timeout=5,
            metadata=cluster.node_admin_metadata(),
        )
    (replica,) = stats.partitions
    return replica


async def controller_roles(cluster: LocalCluster) -> tuple[int, int, int]:
    """(leader, one follower, the other follower) of the metadata controller."""
    async with Admin(list(cluster.addresses.values()), api_key=cluster.api_key) as admin:
        leader = int((await admin.cluster_status()).controller_leader)
    first, second = sorted(n for n in cluster.node_ids if n != leader)
    return leader, first, second


async def forged_stream(
    cluster: LocalCluster, sender: int, receiver: int, messages: Sequence[Message], proof: str | None = None
) -> grpc.aio.AioRpcError:
    """Open a Raft stream to ``receiver`` claiming to be ``sender`` (the
    right cluster id), send ``messages`` for group 0; the error it ends with."""
    metadata = [
        (METADATA_CLUSTER, cluster_id_of(cluster)),
        (METADATA_FROM, str(sender)),
        (METADATA_TO, str(receiver)),
    ]
    if proof is not None:
        metadata.append((PROOF_METADATA_KEY, proof))
    batch = encode_batch(1, [encode_group_message(CONTROLLER_GROUP, m) for m in messages])
    async with grpc.aio.insecure_channel(cluster.addresses[receiver]) as channel:
        call = channel.stream_stream(STREAM_METHOD, None, transport_pb2.TransportAck.FromString)(
            metadata=tuple(metadata)
        )
        try:
            # A refusal comes at once, before anything is sent (a write racing
            # it would fail on our side and hide the status); a stream still
            # open then was accepted, and the batch shows what that means.
            for _ in range(20):
                if call.done():
                    break
                await asyncio.sleep(0.05)
            async with asyncio.timeout(5):
                if not call.done():
                    await call.write(batch)
                ack = await call.read()
        except grpc.aio.AioRpcError as error:
            return error
        finally:
            call.cancel()
    raise AssertionError(f"node {receiver} accepted a forged stream (ack {ack})")


async def test_a_forged_append_is_refused_and_mints_no_key(cluster: LocalCluster) -> None:
    leader, follower, _ = await controller_roles(cluster)
    before = await group0(cluster, follower)
    key = issue_api_key(None)  # an operator key the outsider would like to own
    append = Message(
        MessageType.APPEND,
        to=follower,
        sender=leader,
        term=before.term,
        log_term=before.term,
        # An idle controller's log ends at its applied index, in its term
        # (the leader's first entry of a term is of that term).
        index=before.applied_index,
        entries=(Entry(before.term, before.applied_index + 1, data=encode_command(key.command)),),
        commit=before.applied_index + 1,
    )
    wrong_secret = make_proof(b"w" * 32, leader, STREAM_METHOD)
    for proof in (None, wrong_secret):
        says_nothing(cluster, await forged_stream(cluster, leader, follower, [append], proof))
    await asyncio.sleep(1.0)
    after = await group0(cluster, follower)
    assert after.term == before.term and after.leader == leader
    with pytest.raises(AuthenticationError):
        async with Admin([cluster.addresses[follower]], api_key=key.clear_text, timeout_s=3) as admin:
            await admin.list_tenants()


async def test_a_forged_vote_and_append_ack_are_refused_at_the_door(cluster: LocalCluster) -> None:
    leader, follower, other = await controller_roles(cluster)
    before = {n: (await group0(cluster, n)).term for n in cluster.node_ids}
    vote = Message(MessageType.VOTE, to=follower, sender=other, term=HUGE, log_term=HUGE, index=HUGE)
    ack = Message(MessageType.APPEND_RESPONSE, to=leader, sender=follower, term=before[leader], index=HUGE)
    says_nothing(cluster, await forged_stream(cluster, other, follower, [vote]))
    says_nothing(cluster, await forged_stream(cluster, follower, leader, [ack]))
    await asyncio.sleep(1.5)
    assert cluster.exited() == {}, "a node stopped"
    after = {n: (await group0(cluster, n)).term for n in cluster.node_ids}
    assert after == before
    assert (await controller_roles(cluster))[0] == leader


async def test_node_admin_needs_a_proof_and_no_internal_service_is_advertised(cluster: LocalCluster) -> None:
    async with grpc.aio.insecure_channel(cluster.addresses[1]) as channel:
        stub = node_admin_pb2_grpc.NodeAdminStub(channel)
        for metadata in (
            None,
            (("authorization", f"Bearer {cluster.api_key}"),),
        ):  # an operator key is no proof
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Stats(node_admin_pb2.StatsRequest(), timeout=5, metadata=metadata)
            says_nothing(cluster, refused.value)
        reflect = reflection_pb2_grpc.ServerReflectionStub(channel)
        names: set[str] = set()
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        async for reply in reflect.ServerReflectionInfo(iter([request]), timeout=5):
            names |= {s.name for s in reply.list_services_response.service}
        assert "raftlog.v1.LogService" in names
        assert not names & INTERNAL_SERVICES, names
        # Asked by name, reflection knows only the public schemas.
        symbols = ["raftlog.v1.LogService", *sorted(INTERNAL_SERVICES), "raftlog.internal.v1.NodeStats"]
        requests = [reflection_pb2.ServerReflectionRequest(file_containing_symbol=s) for s in symbols]
        replies = [r async for r in reflect.ServerReflectionInfo(iter(requests), timeout=5)]
        found = {s: r.HasField("file_descriptor_response") for s, r in zip(symbols, replies, strict=True)}
        assert found == {s: s == "raftlog.v1.LogService" for s in symbols}, found
        health = health_pb2_grpc.HealthStub(channel)
        for service in sorted(INTERNAL_SERVICES):
            with pytest.raises(grpc.aio.AioRpcError) as unknown:
                await health.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND


async def test_join_and_stream_refusals_name_nothing(cluster: LocalCluster) -> None:
    leader, follower, _ = await controller_roles(cluster)
    async with grpc.aio.insecure_channel(cluster.addresses[leader]) as channel:
        join = join_pb2_grpc.ClusterJoinStub(channel).Join
        for cluster_id in (cluster_id_of(cluster), "guess"):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await join(
                    join_pb2.JoinRequest(cluster_id=cluster_id, node_id=99, address="127.0.0.1:9"), timeout=5
                )
            says_nothing(cluster, refused.value)
    for proof in (None, "1.2.3.4"):
        error = await forged_stream(cluster, leader, follower, [], proof)
        says_nothing(cluster, error)
    async with Admin(list(cluster.addresses.values()), api_key=cluster.api_key) as admin:
        assert sorted(n.node_id for n in await admin.list_nodes()) == cluster.node_ids


async def test_a_rogue_node_with_another_secret_cannot_join(cluster: LocalCluster, tmp_path: Path) -> None:
    """A stock server given the cluster's file (its id, its nodes) plus an
    entry for itself, and a secret of its own."""
    rogue_address = f"127.0.0.1:{free_ports(1)[0]}"
    lines = [
        f'cluster_id = "{cluster_id_of(cluster)}"',
        'cluster_secret_file = "rogue.secret"',
        "controller_nodes = [1, 2, 3]",
    ]
    for node in cluster.node_ids:
        lines += ["[[nodes]]", f"id = {node}", f'address = "{cluster.addresses[node]}"']
    lines += ["[[nodes]]", "id = 99", f'address = "{rogue_address}"', 'data_dir = "node99"']
    config = tmp_path / "cluster.toml"
    config.write_text("\n".join(lines) + "\n")
    rogue = LocalCluster.from_config(
        tmp_path, config, {99: rogue_address}, secret_file=tmp_path / "rogue.secret"
    )
    rogue.api_key = ""
    rogue.launch(99)
    try:
        log = tmp_path / "node99.log"
        deadline = asyncio.get_running_loop().time() + 30
        while "join refused" not in (log.read_text() if log.exists() else ""):
            assert rogue.exited() == {}, rogue.log_tail(99)
            assert asyncio.get_running_loop().time() < deadline, rogue.log_tail(99)
            await asyncio.sleep(0.2)
        assert "does not accept this node's proof" in log.read_text()
        async with Admin(list(cluster.addresses.values()), api_key=cluster.api_key) as admin:
            assert 99 not in {n.node_id for n in await admin.list_nodes()}
        # It learned nothing of the metadata, and holds no replica.
        own = await group0(rogue, 99)
        assert own.commit_index == 0 and own.applied_index == 0
        for node in cluster.node_ids:
            async with grpc.aio.insecure_channel(cluster.addresses[node]) as channel:
                stats = await node_admin_pb2_grpc.NodeAdminStub(channel).Stats(
                    node_admin_pb2.StatsRequest(), timeout=5, metadata=cluster.node_admin_metadata()
                )
            for replica in stats.partitions:
                assert 99 not in {*replica.voters, *replica.learners}, replica
    finally:
        rogue.close()


def test_a_node_without_a_secret_does_not_start(tmp_path: Path) -> None:
    port = free_ports(1)[0]
    config = tmp_path / "cluster.toml"
    config.write_text(f'cluster_id = "c"\n[[nodes]]\nid = 1\naddress = "127.0.0.1:{port}"\n')
    env = {k: v for k, v in os.environ.items() if k != "RAFTLOG_CLUSTER_SECRET_FILE"}
    serve = [sys.executable, "-m", "cluster.serve", "--config", str(config), "--node-id", "1"]
    done = subprocess.run(serve, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2, done.stderr
    assert "node 1 has no cluster secret" in done.stderr and "cluster_secret_file" in done.stderr
    (tmp_path / "bad.secret").write_text("password\n")
    env["RAFTLOG_CLUSTER_SECRET_FILE"] = str(tmp_path / "bad.secret")
    done = subprocess.run(serve, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "64 hexadecimal characters" in done.stderr, done.stderr
    assert "password" not in done.stderr


def test_no_key_or_secret_in_a_node_process(cluster: LocalCluster) -> None:
    secret = cluster.secret_file.read_text().strip()
    for node, process in cluster.processes.items():
        for what in ("environ", "cmdline"):
            seen = Path(f"/proc/{process.pid}/{what}").read_bytes()
            assert cluster.api_key.encode() not in seen, f"node {node}: the operator key is in its {what}"
            assert secret.encode() not in seen, f"node {node}: the cluster secret is in its {what}"
            assert b"RAFTLOG_BOOTSTRAP_API_KEY" not in seen
