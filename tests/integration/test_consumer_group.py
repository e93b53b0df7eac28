"""A consumer group of three member processes over six partitions: the
partitions are split, a member SIGKILLed mid-stream loses its partitions to
the others after its session, and no committed record is skipped: every
offset below a partition's final committed offset was processed by some
member (records may be processed twice: at-least-once).

The group's coordinator partition may change leader while this runs (an
election; leader balancing leaves the offsets partitions alone,
cluster/node.py): the members then lose everything, join the new
coordinator, and get their partitions back after its failover fence (the
members' 6 s session plus the margin), which the waits below allow for."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from client import Consumer, Producer
from client.admin import Admin
from harness.local_cluster import LocalCluster

pytestmark = pytest.mark.timeout(240)
PARTITIONS = 6


class Member:
    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
        self.owned: set[int] = set()
        self.processed: list[tuple[int, int]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            kind, _, rest = line.strip().partition(" ")
            if kind == "assigned":
                self.owned = self.owned | {int(p) for p in rest.split(",")}
            elif kind in ("revoked", "lost"):
                self.owned = self.owned - {int(p) for p in rest.split(",")}
            elif kind == "record":
                partition, offset = rest.split()
                self.processed.append((int(partition), int(offset)))


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path, topics=[])
    c.start_all()
    yield c
    c.close()


async def _wait(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, what
        await asyncio.sleep(0.1)


async def test_three_members_split_six_partitions_and_a_killed_members_share_moves_on(
    cluster: LocalCluster,
) -> None:
    bootstrap = ",".join(cluster.addresses.values())
    async with Admin(bootstrap, api_key=cluster.api_key) as admin:
        await admin.create_topic("t", PARTITIONS, 3)

    async def produce(start: int, count: int) -> None:
        async with Producer(bootstrap, api_key=cluster.api_key, linger_ms=2) as producer:
            for i in range(start, start + count):
                await producer.send("t", f"{i}".encode(), partition=i % PARTITIONS)
            await producer.flush()

    await produce(0, 600)
    argv = [sys.executable, "-m", "tests.integration.group_member_proc", bootstrap, cluster.api_key, "g", "t"]
    members = [Member(f"m{i}", argv) for i in range(3)]
    try:
        await _wait(
            lambda: (
                sorted(len(m.owned) for m in members) == [2, 2, 2]
                and set().union(*(m.owned for m in members)) == set(range(PARTITIONS))
            ),
            f"the group never split the partitions 2/2/2: {[m.owned for m in members]}",
        )
        # The first member to join may well have read all of the first
        # records before the others came: give the victim some of its own.
        victim = members[0]
        await produce(600, 300)
        await _wait(lambda: len(victim.processed) > 0, "the victim processed nothing")
        victim.proc.kill()
        victim.proc.wait()
        await produce(900, 300)  # while the group rebalances
        survivors = members[1:]
        await _wait(
            lambda: set().union(*(m.owned for m in survivors)) == set(range(PARTITIONS)),
            f"the survivors never took over: {[m.owned for m in survivors]}",
        )
        await _wait(
            lambda: len({p for m in members for p in m.processed}) >= 1200,
            "not every record was processed",
        )
        # The members commit after each poll: wait for the last commits to
        # land before stopping them.
        async with Consumer(bootstrap, api_key=cluster.api_key, group_id="g") as reader:
            deadline = asyncio.get_running_loop().time() + 60
            while True:
                landed = await reader.committed([("t", p) for p in range(PARTITIONS)])
                if all(at == 200 for at in landed.values()):
                    break
                assert asyncio.get_running_loop().time() < deadline, f"commits stopped short: {landed}"
                await asyncio.sleep(0.2)
    finally:
        for m in members:
            if m.proc.poll() is None:
                m.proc.terminate()
        for m in members:
            try:
                m.proc.wait(20)
            except subprocess.TimeoutExpired:
                m.proc.kill()

    processed: dict[int, set[int]] = defaultdict(set)
    for m in members:
        for partition, seen in m.processed:
            processed[partition].add(seen)
    async with Consumer(bootstrap, api_key=cluster.api_key, group_id="g") as reader:
        committed = await reader.committed([("t", p) for p in range(PARTITIONS)])
    assert len(committed) == PARTITIONS
    for tp, offset in committed.items():
        assert offset is not None and offset == 200, (tp, offset)  # everything, each partition
        missing = set(range(offset)) - processed[tp.partition]
        assert not missing, (
            f"partition {tp.partition}: committed {offset} but never processed {sorted(missing)[:10]}"
        )
