"""A full data disk on a real 3-node cluster (node processes, the SDK), all
three nodes' data on one small filesystem (tests/disk/small_fs.py: tmpfs, or
loop ext4; skipped with the reason where neither mounts; the same logic is
covered with a fake probe in test_full_disk_replicas.py).

The scenario: acknowledged records; the disk filled below the reserve
(``min_free_bytes``): the SDK producer surfaces ``DISK_FULL`` by its
delivery timeout and nothing of the refused batch is written, reads go on;
the disk filled below the writer's floor: a record sent then stays pending
(neither acknowledged nor failed: the SDK retries the refusals within its
delivery timeout), nothing of it is readable, no node fails; space freed:
that record is acknowledged once, at the next offset, produce works again,
and the log holds every acknowledged record exactly once, in order, and
nothing else.

When the test fails, the node logs (on the small filesystem, unmounted at
the end) are copied to the test's ``tmp_path`` and their tails added to the
report (tests/disk/conftest.py).
"""

from __future__ import annotations

import asyncio
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from client import Consumer, Producer
from client.errors import DeliveryTimeoutError, StorageFullError
from harness.local_cluster import LocalCluster, TopicSpec
from partitions.disk_space import MiB
from tests.disk.conftest import FAILURE_NOTES
from tests.disk.small_fs import Unavailable, fill, small_filesystem

pytestmark = pytest.mark.timeout(120)

FS_MIB = 192
RESERVE = 48 * MiB  # the writer's floor is a quarter: 12 MiB


@pytest.fixture
def mount(tmp_path: Path) -> Iterator[Path]:
    try:
        with small_filesystem(tmp_path / "fs", FS_MIB) as where:
            yield where
    except Unavailable as exc:
        pytest.skip(f"no small filesystem: {exc}")


def keep_logs(cluster: LocalCluster, into: Path) -> str:
    """Copy the node logs off the small filesystem into ``into`` (which
    outlives it) and return their tails."""
    into.mkdir(parents=True, exist_ok=True)
    tails = []
    for log in sorted(cluster.root.glob("node*.log")):
        shutil.copy2(log, into / log.name)
        node = int(log.stem.removeprefix("node"))
        tails.append(f"--- {log.name} (copied to {into / log.name}), last lines:\n{cluster.log_tail(node)}")
    return "\n".join(tails) or f"(no node logs under {cluster.root})"


@pytest.fixture
def cluster(mount: Path, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[LocalCluster]:
    c = LocalCluster(mount / "cluster", topics=[TopicSpec("events")])
    text = c.config_path.read_text()
    c.config_path.write_text(f"min_free_bytes = {RESERVE}\n" + text)  # a top-level key: before any table
    request.node.stash[FAILURE_NOTES] = lambda: keep_logs(c, tmp_path / "node-logs")
    try:
        c.start_all()
        yield c
    finally:
        c.close()


async def produce(cluster: LocalCluster, values: list[bytes], delivery_timeout_s: float) -> list[object]:
    """Each record's offset, or the error its delivery ended with."""
    async with Producer(
        list(cluster.addresses.values()),
        api_key=cluster.api_key,
        linger_ms=1,
        delivery_timeout_s=delivery_timeout_s,
        request_timeout_s=min(2.0, delivery_timeout_s),
    ) as producer:
        futures = [await producer.send("events", v, partition=0) for v in values]
        done = await asyncio.gather(*futures, return_exceptions=True)
    return [d if isinstance(d, BaseException) else d.offset for d in done]


async def read_all(cluster: LocalCluster, expected: int) -> list[tuple[int, bytes]]:
    got: list[tuple[int, bytes]] = []
    async with Consumer(list(cluster.addresses.values()), api_key=cluster.api_key) as consumer:
        consumer.assign([("events", 0)])
        deadline = time.monotonic() + 20
        while len(got) < expected and time.monotonic() < deadline:
            got += [(r.offset, r.value or b"") for r in await consumer.poll(0.5)]
        got += [(r.offset, r.value or b"") for r in await consumer.poll(0.5)]  # nothing more
    return got


async def test_a_full_disk_refuses_writes_keeps_reads_and_recovers(
    cluster: LocalCluster, mount: Path
) -> None:
    first = [f"before-{i}".encode() for i in range(30)]
    assert await produce(cluster, first, 30) == list(range(30))

    fill(mount, RESERVE // 2)  # below the reserve, above the floor
    await asyncio.sleep(0.5)  # the guards' cached readings refresh (0.2 s)
    outcome = await produce(cluster, [b"refused-1", b"refused-2"], 3.0)
    for error in outcome:
        assert isinstance(error, DeliveryTimeoutError), outcome
        assert (
            isinstance(error.cause, StorageFullError)
            and error.cause.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        )
        assert "DISK_FULL" in str(error) and "below its reserve" in str(error)
    assert await read_all(cluster, 30) == list(enumerate(first))  # reads keep working

    ballast = fill(mount, 2 * MiB)  # below the floor: every write waits for room
    await asyncio.sleep(0.5)
    async with Producer(
        list(cluster.addresses.values()),
        api_key=cluster.api_key,
        linger_ms=1,
        delivery_timeout_s=60,  # longer than the wait: it must not fail meanwhile
        request_timeout_s=2.0,
    ) as producer:
        waiting = await producer.send("events", b"during", partition=0)
        await asyncio.sleep(3.0)  # longer than a request timeout: retried, still not answered
        assert not waiting.done(), waiting  # neither acknowledged nor failed
        assert await read_all(cluster, 30) == list(enumerate(first))  # nothing of it readable
        assert cluster.exited() == {}  # no node failed

        ballast.unlink()  # space returns
        acked = await asyncio.wait_for(waiting, 30)
        assert acked.offset == 30
    during = [b"during"]
    assert await read_all(cluster, 31) == list(enumerate(first + during))  # once, in order

    later = [f"after-{i}".encode() for i in range(30)]
    assert await produce(cluster, later, 30) == list(range(31, 61))
    assert await read_all(cluster, 61) == list(enumerate(first + during + later))
    assert cluster.exited() == {}
