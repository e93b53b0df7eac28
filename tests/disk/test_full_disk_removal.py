"""Removing a replica with its data on a full disk (fake free-space probe
per node, in-process hosts, real RocksDB).

The deletion is a write that only deletes: the writer lets it through the
floor, down to the freeing floor (half the floor), and refuses it below
that (``NoSpaceForWrite``, partitions/disk_space.py). Rules checked here:

- below the floor but above the freeing floor, the deletion is written at
  once (it is how the disk gets space back);
- below the freeing floor, the host stops the replica, keeps the data, and lists the group in
  ``undeleted``; a later ``remove_replica(group, delete_data=True)`` writes
  the deletion once there is room, and the group is never opened again on
  its old data meanwhile (before: the retry was a no-op and a re-added
  replica came back with the log it was supposed to have forgotten);
- the reconciler neither fails its pass nor the node over it: it retries
  the deletion on every pass until space returns.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cluster.controller import DeleteTopic
from cluster.reconciler import Reconciler
from partitions.disk_space import MiB
from partitions.replica import ReplicaConfig
from partitions.replica_host import HostConfig
from partitions.storage_errors import NoSpaceForWrite
from tests.controller.harness import Log, cluster, create_topic
from tests.disk.test_full_disk_replicas import RESERVE, FakeDisks
from tests.partitions.replica_cluster import InProcessCluster, batch

pytestmark = pytest.mark.timeout(60)

BELOW_FLOOR = RESERVE // 8 + MiB  # floor: a quarter of the reserve; freeing floor: an eighth
NO_ROOM = RESERVE // 16  # below the freeing floor: even a deletion is refused


@pytest.fixture
async def replicas(tmp_path: Path) -> AsyncIterator[tuple[InProcessCluster, FakeDisks]]:
    """Three hosts with group 1 holding two acknowledged records everywhere."""
    disks = FakeDisks()
    config = HostConfig(
        tick_interval_s=0.01,
        replica=ReplicaConfig(election_tick=10),
        min_free_bytes=RESERVE,
        disk_probe=disks.probe,
        disk_refresh_s=0.0,
    )
    c = InProcessCluster(tmp_path, config=config)
    await c.start()
    try:
        await (await c.leader()).produce(batch([b"x", b"y"]))
        await c.wait_until(lambda: all(r.high_watermark == 2 for r in c.replicas()), what="replication")
        yield c, disks
    finally:
        await c.close()


async def test_a_deletion_goes_through_the_floor(
    replicas: tuple[InProcessCluster, FakeDisks],
) -> None:
    c, disks = replicas
    host = c.hosts[3]
    disks.free[3] = BELOW_FLOOR
    assert not host.disk.room_for(1)
    await host.remove_replica(1, delete_data=True)
    assert host.replica(1) is None and host.undeleted == frozenset()
    emptied = await host.join_group(1)
    assert emptied.voters == frozenset() and emptied.high_watermark == 0


async def test_a_refused_deletion_is_kept_and_done_once_there_is_room(
    replicas: tuple[InProcessCluster, FakeDisks],
) -> None:
    c, disks = replicas
    host = c.hosts[3]
    disks.free[3] = NO_ROOM
    with pytest.raises(NoSpaceForWrite):
        await host.remove_replica(1, delete_data=True)
    assert host.replica(1) is None and host.undeleted == {1}
    # Still no room: a retry is refused again, and the group cannot be
    # opened on the data it was to forget.
    with pytest.raises(NoSpaceForWrite):
        await host.remove_replica(1, delete_data=True)
    with pytest.raises(NoSpaceForWrite):
        await host.join_group(1)
    assert host.replica(1) is None and host.undeleted == {1}

    del disks.free[3]
    await host.remove_replica(1, delete_data=True)
    assert host.undeleted == frozenset()
    emptied = await host.join_group(1)
    assert emptied.voters == frozenset() and emptied.high_watermark == 0


async def test_reopening_a_group_owed_a_deletion_deletes_first(
    replicas: tuple[InProcessCluster, FakeDisks],
) -> None:
    c, disks = replicas
    host = c.hosts[3]
    disks.free[3] = NO_ROOM
    with pytest.raises(NoSpaceForWrite):
        await host.remove_replica(1, delete_data=True)
    del disks.free[3]
    emptied = await host.join_group(1)  # the group re-added this node
    assert emptied.voters == frozenset() and emptied.high_watermark == 0
    assert host.undeleted == frozenset()


class Metadata:
    """The applied metadata, as the reconciler reads it."""

    def __init__(self, log: Log) -> None:
        self.log = log

    @property
    def state(self) -> Any:
        return self.log.state


class NoTransport:
    def set_peers(self, peers: dict[int, str]) -> None:
        pass


async def test_the_reconciler_retries_a_deletion_until_space_returns(
    replicas: tuple[InProcessCluster, FakeDisks],
) -> None:
    c, disks = replicas
    log = cluster(3, tenants=["acme"])
    create_topic(log, "acme", "t", partitions=1, replication_factor=3)
    assert [a.group for a in log.state.assignments_for_node(3)] == [1]
    host = c.hosts[3]
    reconciler = Reconciler(
        3,
        Metadata(log),  # type: ignore[arg-type]
        host,
        NoTransport(),  # type: ignore[arg-type]
        lambda topic: ReplicaConfig(election_tick=10),
        {},
    )
    log.ok(DeleteTopic("acme", "t"))  # the group is gone: its replica is deleted at once
    disks.free[3] = NO_ROOM
    for _ in range(3):  # neither the first pass nor the retries fail
        await reconciler.reconcile()
        assert host.replica(1) is None and host.undeleted == {1}

    del disks.free[3]
    await reconciler.reconcile()
    assert host.undeleted == frozenset()
    emptied = await host.join_group(1)
    assert emptied.voters == frozenset() and emptied.high_watermark == 0
