"""Quotas on a real 3-node cluster: a tenant with a 1 MB/s produce quota
flooding through the SDK's ``Producer`` gets about 1 MB/s over the cluster
(its three partitions' leaders spread over the nodes, each node charging its
share), the SDK obeys the retry-afters, and nothing acknowledged is lost or
written twice; ``DescribeTenant`` shows the rate."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from client import Consumer, Producer
from client.admin import Admin
from harness.local_cluster import LocalCluster

pytestmark = pytest.mark.timeout(120)

QUOTA = 1_000_000
RECORD = 10_000
PARTITIONS = 3
FLOOD_S = 6.0


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(Path(tmp_path_factory.mktemp("quotas")), topics=[])
    c.start_all()
    yield c
    c.close()


async def test_a_flooding_producer_gets_its_quota_and_loses_nothing(cluster: LocalCluster) -> None:
    bootstrap = list(cluster.addresses.values())
    async with Admin(bootstrap, api_key=cluster.api_key) as operator:
        key = (await operator.create_tenant("flood")).api_key.clear_text
        await operator.set_tenant_quota("flood", produce_bytes_s=QUOTA)
    async with Admin(bootstrap, api_key=key) as admin:
        await admin.create_topic("t", PARTITIONS, 3)

    acked: list[bytes] = []
    sent = 0
    async with Producer(bootstrap, api_key=key, linger_ms=5, buffer_bytes=256_000) as producer:
        started = time.monotonic()
        futures = []
        while time.monotonic() - started < FLOOD_S:
            value = b"%08d" % sent + b"x" * (RECORD - 8)
            futures.append((value, await producer.send("t", value, partition=sent % PARTITIONS)))
            sent += 1
        await producer.flush()
        elapsed = time.monotonic() - started
        for value, future in futures:
            await future  # every record acknowledged (none failed)
            acked.append(value)
    rate = len(acked) * RECORD / elapsed
    # The burst (half a second per node's share) lets the first moments
    # through faster; over 6 s that is at most ~8 %.
    assert 0.8 * QUOTA <= rate <= 1.25 * QUOTA, f"{rate:.0f} B/s against a quota of {QUOTA}"

    async with Admin(bootstrap, api_key=cluster.api_key) as operator:
        described = await operator.describe_tenant("flood")
    assert described.usage.produce_bytes_s > 0.3 * QUOTA  # averaged over the last seconds, every node

    seen: list[bytes] = []
    async with Consumer(bootstrap, api_key=key) as consumer:
        consumer.assign([("t", p) for p in range(PARTITIONS)])
        await consumer.seek_to_beginning()
        deadline = time.monotonic() + 20
        while len(seen) < len(acked) and time.monotonic() < deadline:
            seen += [r.value or b"" for r in await consumer.poll(1.0)]
        await asyncio.sleep(0)
        seen += [r.value or b"" for r in await consumer.poll(0.5)]
    assert len(seen) == len(set(seen)), "a record was written twice"
    assert sorted(seen) == sorted(acked), "an acknowledged record is missing (or one was never acknowledged)"
