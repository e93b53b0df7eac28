"""A 3-node cluster with TLS (real node processes, one for the module):
clients over TLS with the cluster CA, mTLS between nodes on the internal
listeners, and certificate reload without a restart (cluster/tls/)."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health_pb2, health_pb2_grpc

from client import Consumer, Producer
from client.admin import Admin
from client.errors import RaftlogError
from cluster.cli import main as cli_main
from cluster.tls.certs import init_certs, new_node_pair
from cluster.tls.dial import TlsDialer
from cluster.tls.material import CertSource
from cluster.tls.settings import NodeTlsFiles
from harness.local_cluster import LocalCluster, TopicSpec
from raftlog.internal.node_proof import NODE_ADMIN_STATS
from raftlog.internal.v1 import node_admin_pb2, node_admin_pb2_grpc

pytestmark = pytest.mark.timeout(120)

REFUSED = (grpc.StatusCode.UNAUTHENTICATED, "not allowed")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("tls"), topics=[TopicSpec("t", partitions=3)], tls=True)
    try:
        c.start_all()
        yield c
    finally:
        c.close()


def bootstrap(cluster: LocalCluster) -> list[str]:
    return [cluster.addresses[n] for n in cluster.node_ids]


async def test_produce_and_consume_over_tls_with_the_cluster_ca(cluster: LocalCluster) -> None:
    assert cluster.tls_ca is not None
    # Created through whichever node answers: forwarded to the controller
    # leader over the internal listener when it is another node.
    async with Admin(
        bootstrap(cluster), api_key=cluster.api_key, tls_ca=cluster.tls_ca, timeout_s=20
    ) as admin:
        await admin.create_topic("secure", 3, 3)
    values = [f"r{i}".encode() for i in range(30)]
    async with Producer(bootstrap(cluster), api_key=cluster.api_key, tls_ca=cluster.tls_ca) as producer:
        for value in values:
            await producer.send("secure", value)
        await producer.flush()
    got: list[bytes] = []
    async with Consumer(
        bootstrap(cluster), api_key=cluster.api_key, tls_ca=cluster.tls_ca, auto_offset_reset="earliest"
    ) as consumer:
        consumer.assign([("secure", p) for p in range(3)])
        deadline = time.monotonic() + 20
        while len(got) < len(values) and time.monotonic() < deadline:
            got += [r.value or b"" for r in await consumer.poll(0.5)]
    assert sorted(got) == sorted(values)


def test_the_cli_takes_tls_ca(
    cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RAFTLOG_API_KEY", cluster.api_key)
    monkeypatch.delenv("RAFTLOG_TLS_CA", raising=False)
    assert (
        cli_main(["--bootstrap", cluster.addresses[1], "--tls-ca", str(cluster.tls_ca), "topic", "list"]) == 0
    )
    assert "t\t3 partitions" in capsys.readouterr().out
    # The variable does the same.
    monkeypatch.setenv("RAFTLOG_TLS_CA", str(cluster.tls_ca))
    assert cli_main(["--bootstrap", cluster.addresses[1], "topic", "list"]) == 0


async def test_a_client_trusting_another_ca_is_refused(cluster: LocalCluster, tmp_path: Path) -> None:
    other = init_certs(tmp_path / "other", nodes=1)
    with pytest.raises(RaftlogError) as refused:
        async with Admin(
            bootstrap(cluster), api_key=cluster.api_key, tls_ca=other.ca_cert, timeout_s=2
        ) as admin:
            await admin.list_topics()
    assert refused.value.retriable  # UNAVAILABLE: the handshake failed, nothing was sent


async def test_plaintext_to_the_tls_port_fails(cluster: LocalCluster) -> None:
    async with grpc.aio.insecure_channel(cluster.addresses[1]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_internal_services_are_refused_on_the_public_port_even_with_a_proof(
    cluster: LocalCluster,
) -> None:
    assert cluster.tls_ca is not None
    public = grpc.ssl_channel_credentials(cluster.tls_ca.read_bytes())
    async with grpc.aio.secure_channel(cluster.addresses[1], public) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await node_admin_pb2_grpc.NodeAdminStub(channel).Stats(
                node_admin_pb2.StatsRequest(), timeout=5, metadata=cluster.internal_metadata(NODE_ADMIN_STATS)
            )
        assert (refused.value.code(), refused.value.details()) == REFUSED
        # The public API on the same channel works.
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    # The same call on the internal listener, with a cluster certificate, is answered.
    async with grpc.aio.secure_channel(cluster.internal_address(1), cluster.node_credentials(2)) as channel:
        stats = await node_admin_pb2_grpc.NodeAdminStub(channel).Stats(
            node_admin_pb2.StatsRequest(), timeout=5, metadata=cluster.internal_metadata(NODE_ADMIN_STATS)
        )
        assert stats.node_id == 1


async def test_a_node_certificate_from_another_ca_cannot_reach_the_internal_listener(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    assert cluster.tls_ca is not None
    other = init_certs(tmp_path / "rogue", nodes=1)
    # What a node dials with (cluster/tls/dial.py): it trusts the right CA,
    # but its own certificate comes from another.
    rogue = TlsDialer(
        CertSource(NodeTlsFiles(cluster.tls_ca, other.nodes[1][0], other.nodes[1][1], cluster.tls_offset)),
        cluster.tls_offset,
    )
    async with rogue.dial(cluster.addresses[1]) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await node_admin_pb2_grpc.NodeAdminStub(channel).Stats(
                node_admin_pb2.StatsRequest(), timeout=3, metadata=cluster.internal_metadata(NODE_ADMIN_STATS)
            )
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    # No client certificate at all: refused as well.
    anonymous = grpc.ssl_channel_credentials(cluster.tls_ca.read_bytes())
    async with grpc.aio.secure_channel(cluster.internal_address(1), anonymous) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def served_serial(address: str, ca: Path, client: tuple[Path, Path] | None = None) -> int:
    """The serial of the certificate a new TLS connection to ``address`` is given."""
    host, _, port = address.rpartition(":")
    context = ssl.create_default_context(cafile=str(ca))
    context.set_alpn_protocols(["h2"])
    if client is not None:
        context.load_cert_chain(str(client[0]), str(client[1]))
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        der = tls.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def test_a_replaced_certificate_is_served_without_a_restart(cluster: LocalCluster) -> None:
    assert cluster.tls_ca is not None
    certs = cluster.tls_ca.parent
    peer = (certs / "node2.pem", certs / "node2.key")
    before = served_serial(cluster.addresses[3], cluster.tls_ca)
    assert served_serial(cluster.internal_address(3), cluster.tls_ca, peer) == before
    ca_cert = x509.load_pem_x509_certificate(cluster.tls_ca.read_bytes())
    ca_key = serialization.load_pem_private_key((certs / "ca.key").read_bytes(), password=None)
    cert_pem, key_pem = new_node_pair(ca_cert, ca_key, 3)  # type: ignore[arg-type]
    new_serial = x509.load_pem_x509_certificate(cert_pem).serial_number
    # Key first, then certificate: in between the pair does not match and
    # the node keeps serving the old one.
    (certs / "node3.key").write_bytes(key_pem)
    (certs / "node3.pem").write_bytes(cert_pem)
    deadline = time.monotonic() + 10
    while served_serial(cluster.addresses[3], cluster.tls_ca) != new_serial:
        assert time.monotonic() < deadline, "node 3 still serves its old certificate"
        await asyncio.sleep(0.2)
    assert served_serial(cluster.internal_address(3), cluster.tls_ca, peer) == new_serial
    assert cluster.exited() == {}  # no restart
    # Node 3 still works with its peers (its outgoing channels use the new pair).
    async with Producer(bootstrap(cluster), api_key=cluster.api_key, tls_ca=cluster.tls_ca) as producer:
        for partition in range(3):
            await producer.send("t", b"after reload", partition=partition)
        await producer.flush()
