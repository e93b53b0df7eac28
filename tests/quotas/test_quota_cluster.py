"""Quotas on a real 3-node cluster: a tenant with a 1 MB/s produce quota
flooding through the SDK's ``Producer`` gets about 1 MB/s over the cluster
(its three partitions' leaders spread over the nodes, each node charging its
share), the SDK obeys the retry-afters, and nothing acknowledged is lost or
written twice; ``DescribeTenant`` shows the rate. And the shares follow the
demand (cluster/quotas/shares.py): all of a tenant's traffic to one of its
three partitions, led by one of the three nodes, still gets its quota."""

from __future__ import annotations

import asyncio
import sys
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
CONVERGE_S = 6.0
MEASURE_S = 8.0


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
        await _distinct_leaders(admin, "t")  # (right after the create, one node may lead all three)

    acked: list[bytes] = []
    acked_at: list[float] = []
    sent = 0
    async with Producer(bootstrap, api_key=key, linger_ms=5, buffer_bytes=256_000) as producer:
        started = time.monotonic()
        futures = []
        while time.monotonic() - started < CONVERGE_S + FLOOD_S:
            value = b"%08d" % sent + b"x" * (RECORD - 8)
            future = await producer.send("t", value, partition=sent % PARTITIONS)
            future.add_done_callback(lambda _f: acked_at.append(time.monotonic()))
            futures.append((value, future))
            sent += 1
        ended = time.monotonic()
        await producer.flush()
        for value, future in futures:
            await future  # every record acknowledged (none failed)
            acked.append(value)
    # The shares follow the demand the nodes report (shares.py): from a
    # cold start they take a few seconds to settle; measured after that.
    rate = sum(1 for at in acked_at if started + CONVERGE_S <= at <= ended) * RECORD / FLOOD_S
    first = sum(1 for at in acked_at if at < started + CONVERGE_S) * RECORD / CONVERGE_S
    print(
        f"spread over 3 leaders: {rate / QUOTA:.3f} of the quota after {CONVERGE_S:.0f} s, {first / QUOTA:.3f} before",
        file=sys.stderr,
    )
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


async def _distinct_leaders(admin: Admin, topic: str, deadline_s: float = 10.0) -> list[int]:
    deadline = time.monotonic() + deadline_s
    while True:
        leaders = [a.leader for a in (await admin.describe_topic(topic)).assignments]
        if len(set(leaders)) == len(leaders) and 0 not in leaders:
            return leaders
        assert time.monotonic() < deadline, f"the partitions' leaders are not on distinct nodes: {leaders}"
        await asyncio.sleep(0.2)


async def test_all_traffic_to_one_partition_gets_the_whole_quota(cluster: LocalCluster) -> None:
    """One partition of three, each led by a different node: the leader of
    the hot partition gets nearly the whole quota once the shares follow
    the demand (a share by partitions led would give it a third)."""
    bootstrap = list(cluster.addresses.values())
    async with Admin(bootstrap, api_key=cluster.api_key) as operator:
        key = (await operator.create_tenant("hot")).api_key.clear_text
        await operator.set_tenant_quota("hot", produce_bytes_s=QUOTA)
    async with Admin(bootstrap, api_key=key) as admin:
        await admin.create_topic("h", PARTITIONS, 3)
        leaders = await _distinct_leaders(admin, "h")

    acked: list[tuple[float, int]] = []
    async with Producer(bootstrap, api_key=key, linger_ms=5, buffer_bytes=256_000) as producer:
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < CONVERGE_S + MEASURE_S:
            future = await producer.send("h", b"%08d" % sent + b"x" * (RECORD - 8), partition=0)
            future.add_done_callback(
                lambda f: acked.append((time.monotonic(), RECORD)) if not f.exception() else None
            )
            sent += 1
        ended = time.monotonic()
        await producer.flush()
    window = [n for at, n in acked if started + CONVERGE_S <= at <= ended]
    rate = sum(window) / (ended - started - CONVERGE_S)
    first = sum(n for at, n in acked if at < started + CONVERGE_S) / CONVERGE_S
    print(
        f"hot partition led by node {leaders[0]} of {leaders}: {rate:.0f} B/s over {MEASURE_S:.0f} s "
        f"after {CONVERGE_S:.0f} s ({rate / QUOTA:.3f} of the quota; {first / QUOTA:.3f} before)",
        file=sys.stderr,
    )
    # 0.97-0.99 measured on an idle machine; the lower bound leaves room for
    # a loaded CI machine and still tells the demand rule (~0.97) from a
    # share by partitions led (~0.35).
    assert 0.8 * QUOTA <= rate <= 1.1 * QUOTA, f"{rate:.0f} B/s against a quota of {QUOTA}"
