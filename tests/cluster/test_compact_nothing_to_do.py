"""CompactTopic on partitions with nothing old enough to compact, in-process
from ``AdminService`` through ``LeaderAsker`` and ``NodeAdminService`` down
to real replicas on a one-node ``ReplicaHost``.

An empty compacted topic is a compacted topic: the call succeeds with
``nothing_to_compact`` and ``done`` on every partition, at once even with
``wait`` (there is nothing to wait for). Before, the leader's ``compact_now``
answered -1 and putting it into the unsigned ``target_offset`` failed the
call with INTERNAL. The same holds while every record is younger than
``min_compaction_lag_ms``; once a record is old enough the pass has a real
target again."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cluster.frontend.admin_service import AdminService
from cluster.frontend.compaction import LeaderAsker
from cluster.frontend.forwarding import Forwarder
from cluster.internal.node_admin import NodeAdminService
from partitions.replica import ReplicaConfig
from partitions.replica_host import HostConfig
from partitions.state_machine import PartitionConfig
from raftlog.v1 import admin_pb2
from raftlog.v1.record_batch import Record, encode_batch
from tests.cluster.test_request_limits import LeaderController
from tests.cluster.test_topic_settings_admin import call
from tests.controller.harness import cluster, create_topic
from tests.partitions.replica_cluster import InProcessCluster

pytestmark = pytest.mark.timeout(30)

HOUR_MS = 3_600_000


def _host_config(min_compaction_lag_ms: int) -> HostConfig:
    partition = PartitionConfig(
        cleanup_policy="compact", retention_ms=None, min_compaction_lag_ms=min_compaction_lag_ms
    )
    return HostConfig(tick_interval_s=0.01, replica=ReplicaConfig(partition=partition, hibernate=False))


def _keyed(key: bytes, value: bytes) -> bytes:
    return encode_batch([Record(value=value, key=key, timestamp_ms=int(time.time() * 1000))])


async def test_an_empty_compacted_topic_compacts_with_nothing_to_do(tmp_path: Path) -> None:
    log = cluster(3, tenants=["acme"])
    create_topic(log, "acme", "empty", partitions=2, cleanup_policy="compact")
    topic = log.state.topic("acme", "empty")
    assert topic is not None
    groups = topic.groups
    replicas = InProcessCluster(tmp_path, node_ids=(1,), config=_host_config(0))
    await replicas.start(groups)
    try:
        for group in groups:
            await replicas.leader(group)
        node_admin = NodeAdminService(1, lambda: replicas.hosts[1], lambda: None)
        asker = LeaderAsker(1, node_admin, lambda method: (), lambda node: "")
        service = AdminService(1, LeaderController(log), lambda group: 1, Forwarder(), leaders=asker)  # type: ignore[arg-type]

        began = time.monotonic()
        answer = await call(service.CompactTopic, admin_pb2.CompactTopicRequest(name="empty", wait=True))
        # Nothing to wait for: not the call's deadline (Context: 5 s).
        assert time.monotonic() - began < 2.0
        assert [
            (p.partition, p.leader, p.target_offset, p.nothing_to_compact, p.done) for p in answer.partitions
        ] == [
            (0, 1, 0, True, True),
            (1, 1, 0, True, True),
        ]

        # A record in partition 0: its pass has a real target and runs to it;
        # partition 1 still has nothing.
        first = replicas.hosts[1].replica(groups[0])
        assert first is not None
        for i in range(3):
            await first.produce(_keyed(b"k", b"v%d" % i))
        answer = await call(service.CompactTopic, admin_pb2.CompactTopicRequest(name="empty", wait=True))
        assert [(p.target_offset, p.nothing_to_compact, p.done) for p in answer.partitions] == [
            (2, False, True),
            (0, True, True),
        ]
        assert answer.partitions[0].cleaned_offset >= 2
    finally:
        await replicas.close()


async def test_records_younger_than_the_lag_leave_nothing_to_compact(tmp_path: Path) -> None:
    replicas = InProcessCluster(tmp_path, node_ids=(1,), config=_host_config(HOUR_MS))
    await replicas.start()
    try:
        leader = await replicas.leader()
        await leader.produce(_keyed(b"k", b"fresh"))
        node_admin = NodeAdminService(1, lambda: replicas.hosts[1], lambda: None)
        response = await node_admin.compact([1], wait_s=5.0)
        assert [(g.group, g.error, g.target_offset, g.nothing_to_compact) for g in response.groups] == [
            (1, "", 0, True)
        ]
        # An hour later the record is old enough: a real target.
        assert await leader.compact_now(now_ms=int(time.time() * 1000) + 2 * HOUR_MS) == 0
    finally:
        await replicas.close()
