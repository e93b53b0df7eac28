"""Prometheus ``/metrics`` on a real 3-node cluster (``LocalCluster`` gives
each node a metrics port): a tenant produces and fetches through the SDK,
one call is refused, and every node's page then shows the calls by method
and code (the refused one with its code), the latency histogram, the
tenant's bytes under its own name, ``process_*``; and ``promtool check
metrics`` finds nothing to say about any page."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from client import Consumer, Producer
from client.admin import Admin
from client.auth import authorized_channel
from harness.local_cluster import LocalCluster
from raftlog.v1 import log_pb2, log_pb2_grpc
from tests.tools import promtool

pytestmark = pytest.mark.timeout(90)

LOG = "raftlog.v1.LogService"
RECORDS = 5
VALUE = b"v" * 200

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(Path(tmp_path_factory.mktemp("metrics")), topics=[])
    c.start_all()
    yield c
    c.close()


async def scrape(address: str) -> str:
    async with aiohttp.ClientSession() as http, http.get(f"http://{address}/metrics") as answer:
        assert answer.status == 200
        return await answer.text()


def samples(page: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(page)
        for s in family.samples
    }


def total(pages: list[Samples], name: str, **labels: str) -> float:
    """The sum over nodes of the samples named ``name`` whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for page in pages for (n, ls), v in page.items() if n == name and want <= ls)


async def test_every_node_serves_the_call_tenant_and_process_figures(cluster: LocalCluster) -> None:
    bootstrap = list(cluster.addresses.values())
    async with Admin(bootstrap, api_key=cluster.api_key) as operator:
        key = (await operator.create_tenant("acme")).api_key.clear_text
        await operator.create_tenant("idle")
    async with Admin(bootstrap, api_key=key) as admin:
        await admin.create_topic("m", 1, 3)
    async with Producer(bootstrap, api_key=key) as producer:
        for _ in range(RECORDS):
            await (await producer.send("m", VALUE, partition=0))
    seen = []
    async with Consumer(bootstrap, api_key=key) as consumer:
        consumer.assign([("m", 0)])
        await consumer.seek_to_beginning()
        for _ in range(20):
            seen += await consumer.poll(0.5)
            if len(seen) >= RECORDS:
                break
    assert len(seen) == RECORDS
    # Refused: a topic the tenant does not have, on node 1.
    async with authorized_channel(cluster.addresses[1], key) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await log_pb2_grpc.LogServiceStub(channel).Produce(
                log_pb2.ProduceRequest(topic="nope", partition=0, batch=b""), timeout=5
            )
    refused_code = caught.value.code().name
    assert refused_code != "OK"

    handled = "raftlog_rpc_server_handled_total"
    # The door counts a refused call after aborting it, so the client can
    # hold the status a moment before node 1 has counted it: scrape again
    # until it has (at most 5 s), then check every figure on those pages.
    for _ in range(50):
        texts = await asyncio.gather(*(scrape(cluster.metrics_address(n)) for n in cluster.node_ids))
        pages = [samples(text) for text in texts]
        if total(pages[:1], handled, service=LOG, method="Produce", code=refused_code) >= 1:
            break
        await asyncio.sleep(0.1)
    assert total(pages, handled, service=LOG, method="Produce", code="OK") >= 1
    assert total(pages, handled, service=LOG, method="Fetch", code="OK") >= 1
    assert total(pages[:1], handled, service=LOG, method="Produce", code=refused_code) == 1
    assert total(pages, handled, method="CreateTopic", code="OK") >= 1
    assert total(pages, "raftlog_rpc_server_handling_seconds_count", service=LOG, method="Produce") >= 2
    for page in pages:
        assert any(n == "raftlog_rpc_server_handling_seconds_bucket" for n, _ in page)
        assert any(n == "process_cpu_seconds_total" for n, _ in page)
        assert any(n == "process_resident_memory_bytes" for n, _ in page)
    # The bytes are counted once, on the partition's leader, for acme only.
    produced = total(pages, "raftlog_tenant_produce_bytes_total", tenant="acme")
    assert produced >= RECORDS * len(VALUE)
    assert total(pages, "raftlog_tenant_fetch_bytes_total", tenant="acme") >= RECORDS * len(VALUE)
    assert total(pages, "raftlog_tenant_produce_bytes_total", tenant="idle") == 0
    assert total(pages, "raftlog_tenant_produce_bytes_total", tenant="default") == 0

    await asyncio.to_thread(promtool_finds_nothing, dict(zip(cluster.node_ids, texts, strict=True)))


def promtool_finds_nothing(pages: dict[int, str]) -> None:
    """``promtool check metrics`` on each page: exit 0 and not a word (it
    names every lint problem: a counter without _total, a missing unit...)."""
    tool = promtool()
    for node, text in pages.items():
        checked = subprocess.run(
            [tool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
        )
        assert (checked.returncode, checked.stdout + checked.stderr) == (0, ""), f"node {node}"
