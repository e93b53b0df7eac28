"""Retention frees a disk below its floor (fake free-space probe per node
that counts the bytes the node's partition logs hold; in-process hosts,
real RocksDB).

Below the floor the group-commit writer refuses every write that adds
space, and before writes that free space were exempt it refused those too:
retention's snapshot and log compaction stalled for good, so nothing
raftlog did could ever give the space back (partitions/disk_space.py).
Rules checked here:

- below the floor (and the reserve: produce is refused with ``DiskFull``),
  a retention pass on every replica still drops the old batches;
- the space it frees lets produce resume, and every log then holds the new
  record once, after the retained start offset.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from partitions.disk_space import MiB
from partitions.replica import ReplicaConfig
from partitions.replica_errors import DiskFull
from partitions.replica_host import HostConfig
from tests.disk.test_full_disk_replicas import log_of
from tests.partitions.replica_cluster import InProcessCluster, batch

pytestmark = pytest.mark.timeout(60)

RESERVE = 4 * MiB  # floor 1 MiB, freeing floor 512 KiB
BATCHES = 30
VALUE = 150_000  # 30 batches: about 4.3 MiB per node, more than the reserve
FAR_FUTURE_MS = 1 << 60  # every batch is older than the retention period


class LogSizedDisks:
    """Each node's free bytes: a capacity set per node minus the batch bytes
    its replicas hold, so what retention drops comes back as free space."""

    def __init__(self) -> None:
        self.capacity: dict[int, int] = {}
        self.cluster: InProcessCluster | None = None

    def held(self, node: int) -> int:
        host = self.cluster.hosts.get(node) if self.cluster is not None else None
        return 0 if host is None else sum(r.retained_bytes for r in list(host.replicas.values()))

    def probe(self, path: Path) -> int:
        node = int(path.name.removeprefix("node"))
        return max(0, self.capacity.get(node, 1 << 40) - self.held(node))


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[tuple[InProcessCluster, LogSizedDisks]]:
    disks = LogSizedDisks()
    config = HostConfig(
        tick_interval_s=0.01,
        retention_check_interval_s=3600.0,  # the test asks for retention itself
        replica=ReplicaConfig(election_tick=10),
        min_free_bytes=RESERVE,
        disk_probe=disks.probe,
        disk_refresh_s=0.0,
    )
    c = InProcessCluster(tmp_path, config=config)
    disks.cluster = c
    await c.start()
    try:
        yield c, disks
    finally:
        await c.close()


async def test_retention_frees_a_disk_below_its_floor_and_produce_resumes(
    cluster: tuple[InProcessCluster, LogSizedDisks],
) -> None:
    c, disks = cluster
    leader = await c.leader()
    for i in range(BATCHES):
        await leader.produce(batch([bytes([i]) * VALUE]))
    await c.wait_until(lambda: all(r.high_watermark == BATCHES for r in c.replicas()), what="replication")
    assert all(disks.held(node) > RESERVE for node in c.node_ids)

    for node in c.node_ids:  # every disk now has 768 KiB free: below its 1 MiB floor
        disks.capacity[node] = disks.held(node) + 768 * 1024
        assert not c.hosts[node].disk.room_for(1) and c.hosts[node].disk.room_to_free(1)
    with pytest.raises(DiskFull):
        await leader.produce(batch([b"refused"]))

    for replica in c.replicas():
        replica.request_retention(FAR_FUTURE_MS)
    await c.wait_until(
        lambda: all(r.status().log_start_offset == BATCHES for r in c.replicas()),
        what="retention below the floor",
    )
    assert all(not c.hosts[node].disk.low for node in c.node_ids)  # the space came back

    result = await leader.produce(batch([b"after"]))
    assert result.base_offset == BATCHES
    await c.wait_until(lambda: all(r.high_watermark == BATCHES + 1 for r in c.replicas()), what="commit")
    for replica in c.replicas():
        assert log_of(replica) == [b"after"]
        assert replica.status().log_start_offset == BATCHES
