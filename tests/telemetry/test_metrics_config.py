"""``metrics_port`` in the cluster file (cluster/static_config.py), what a
node builds from it (cluster/node.py), and the ``/metrics`` endpoint itself
(cluster/telemetry/node_metrics.py) in-process."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from cluster.node import Node
from cluster.static_config import ConfigError, parse_cluster
from cluster.telemetry.node_metrics import NodeMetrics, metrics_host
from harness.local_cluster import _free_offset

pytestmark = pytest.mark.timeout(60)


def cluster_doc(top: Any = None, **per_node: Any) -> dict[str, Any]:
    nodes: list[dict[str, Any]] = [
        {"id": n, "address": f"127.0.0.1:{7000 + n}", "data_dir": f"node{n}"} for n in (1, 2, 3)
    ]
    for key, value in per_node.items():
        nodes[int(key.removeprefix("n")) - 1]["metrics_port"] = value
    doc: dict[str, Any] = {"cluster_id": "c", "nodes": nodes}
    if top is not None:
        doc["metrics_port"] = top
    return doc


def test_metrics_port_defaults_to_none_and_the_top_level_one_fills_nodes_without_their_own() -> None:
    assert [n.metrics_port for n in parse_cluster(cluster_doc(), Path(".")).nodes] == [0, 0, 0]
    doc = cluster_doc(9090, n2=9102)
    for node, host in zip(doc["nodes"], ("10.0.0.1", "10.0.0.2", "10.0.0.3"), strict=True):
        node["address"] = f"{host}:7001"  # one node per host, as in a pod
    cluster = parse_cluster(doc, Path("."))
    assert [n.metrics_port for n in cluster.nodes] == [9090, 9102, 9090]
    assert cluster.metrics_port == 9090


@pytest.mark.parametrize(
    ("doc", "setting"),
    [
        (cluster_doc(n2=70000), "nodes[id=2].metrics_port"),
        (cluster_doc(n1=-1), "nodes[id=1].metrics_port"),
        (cluster_doc(n3="9103"), "nodes[id=3].metrics_port"),
        (cluster_doc(n1=True), "nodes[id=1].metrics_port"),
        (cluster_doc(n1=9101.0), "nodes[id=1].metrics_port"),
        (cluster_doc(65536), "metrics_port"),
        (cluster_doc(n1=9101, n2=9101), "nodes[id=2].metrics_port"),
        (cluster_doc(n2=7001), "nodes[id=2].metrics_port"),  # node 1's gRPC port on the same host
    ],
)
def test_a_bad_metrics_port_is_a_config_error_naming_the_setting(doc: dict[str, Any], setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_cluster(doc, Path("."))
    assert str(caught.value).startswith(setting), caught.value


def test_with_tls_a_metrics_port_on_a_nodes_internal_port_is_a_config_error() -> None:
    """Node 1's internal mTLS listener is 7001 + 500 on 127.0.0.1: node 3
    (same host) cannot serve /metrics there; on another host it can."""
    tls = {"ca_file": "ca.pem", "cert_file": "n.pem", "key_file": "n.key", "internal_port_offset": 500}
    doc = {**cluster_doc(n3=7501), "tls": tls}
    with pytest.raises(ConfigError) as caught:
        parse_cluster(doc, Path("."))
    message = str(caught.value)
    assert message.startswith("nodes[id=3].metrics_port = 7501"), message
    assert "node 1's internal mTLS port" in message and "internal_port_offset 500" in message
    parse_cluster(cluster_doc(n3=7501), Path("."))  # no [tls]: no internal listener, no clash
    doc["nodes"][0]["address"] = "10.0.0.1:7001"
    parse_cluster(doc, Path("."))  # node 1 on another host: 127.0.0.1:7501 is free


def test_the_harness_offset_avoids_the_metrics_ports() -> None:
    """``_free_offset`` never puts an internal port on a port to avoid (the
    metrics ports, free now but taken once the nodes start): with every
    candidate avoided it gives up instead of answering a clash."""
    ports = [60000]
    with pytest.raises(RuntimeError, match="no free internal ports"):
        _free_offset(ports, avoid=range(60100, 65536))
    offset = _free_offset(ports, avoid=[60000 + k for k in range(100, 5000)], tries=2000)
    assert 5000 <= offset < 5536


def test_metrics_listen_on_the_grpc_listeners_host() -> None:
    assert metrics_host("127.0.0.1:7001") == "127.0.0.1"
    assert metrics_host("0.0.0.0:7001") == ""  # a pod: every interface
    assert metrics_host("[::1]:7001") == "::1"
    assert metrics_host("raftlog-0.raftlog-headless.ns.svc.cluster.local:7001").startswith("raftlog-0.")


def test_a_node_without_metrics_port_builds_no_metrics(tmp_path: Path) -> None:
    secret = bytes(32)
    doc = cluster_doc(n2=9102)
    off = Node(parse_cluster(doc, tmp_path), 1, cluster_secret=secret)
    on = Node(parse_cluster(doc, tmp_path), 2, cluster_secret=secret)
    assert off.metrics is None and off._tenant_metrics is None
    assert on.metrics is not None and (on.metrics.host, on.metrics.port) == ("127.0.0.1", 9102)


async def test_the_endpoint_serves_the_registry_in_both_formats_and_names_its_path() -> None:
    metrics = NodeMetrics(1, "127.0.0.1", 0)
    metrics.call_recorder("/raftlog.v1.LogService/Produce")(grpc.StatusCode.OK, 0.002)
    await metrics.serve()
    try:
        base = f"http://127.0.0.1:{metrics.bound_port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/metrics") as answer:
                text = await answer.text()
                assert answer.status == 200 and answer.headers["Content-Type"].startswith("text/plain")
            assert (
                'raftlog_rpc_server_handled_total{code="OK",method="Produce",service="raftlog.v1.LogService"} 1.0'
                in text
            )
            assert "process_resident_memory_bytes" in text
            openmetrics = {"Accept": "application/openmetrics-text; version=1.0.0"}
            async with http.get(f"{base}/metrics", headers=openmetrics) as answer:
                assert answer.headers["Content-Type"].startswith("application/openmetrics-text")
                assert (await answer.text()).endswith("# EOF\n")
            async with http.get(f"{base}/") as answer:
                assert "/metrics" in await answer.text()
    finally:
        await metrics.close()


async def test_a_taken_port_is_a_config_error_naming_metrics_port() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        metrics = NodeMetrics(3, "127.0.0.1", taken.getsockname()[1])
        with pytest.raises(ConfigError, match="metrics_port"):
            await metrics.serve()
