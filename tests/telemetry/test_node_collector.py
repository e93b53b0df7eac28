"""``NodeCollector`` (cluster/telemetry/node_collector.py) against real
``ReplicaHost``s: an in-process three-host cluster (tests/partitions/
replica_cluster.py), scraped through a registry that holds only the
collector, its text checked by ``promtool check metrics``."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cluster.groups import TopicPartition
from cluster.telemetry.node_collector import ELECTION_REASONS, NodeCollector
from partitions.replica_host import ReplicaHost
from tests.partitions.replica_cluster import InProcessCluster, batch
from tests.tools import promtool

pytestmark = pytest.mark.timeout(60)

GROUPS = (1, 2, 3)


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[InProcessCluster]:
    c = InProcessCluster(tmp_path)
    await c.start(groups=GROUPS)
    yield c
    await c.close()


@dataclass
class _Assignment:
    group: int


class _State:
    """The controller state's one lookup the collector uses."""

    def __init__(self, groups: dict[tuple[str, str, int], int]) -> None:
        self._groups = groups

    def partition(self, tenant: str, topic: str, partition: int) -> _Assignment | None:
        group = self._groups.get((tenant, topic, partition))
        return None if group is None else _Assignment(group)


class _Groups:
    """``GroupService.committed_offsets`` as a coordinator would answer it."""

    def __init__(self, offsets: list[tuple[str, str, TopicPartition, int]]) -> None:
        self.offsets = offsets

    def committed_offsets(self) -> Iterator[tuple[str, str, TopicPartition, int]]:
        return iter(self.offsets)


def _collector(
    host: ReplicaHost | None,
    transport: object | None = None,
    controller: object | None = None,
    groups: object | None = None,
) -> NodeCollector:
    return NodeCollector(
        host.node_id if host is not None else 1,
        lambda: host,
        lambda: cast(Any, transport),
        lambda: cast(Any, controller),
        lambda: cast(Any, groups),
    )


def _scrape(collector: NodeCollector) -> bytes:
    registry = CollectorRegistry()
    registry.register(collector)
    return generate_latest(registry)


def _samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def _value(text: bytes, name: str, **labels: str) -> float:
    return _samples(text)[(name, tuple(sorted(labels.items())))]


def _promtool_check(text: bytes) -> None:
    checked = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, timeout=30, check=False
    )
    assert checked.returncode == 0, checked.stdout.decode() + checked.stderr.decode()


async def test_registering_never_collects() -> None:
    calls: list[str] = []

    def host() -> ReplicaHost | None:
        calls.append("host")
        return None

    collector = NodeCollector(1, host, lambda: None, lambda: None, lambda: None)
    CollectorRegistry().register(collector)
    assert calls == []


async def test_no_node_yet_still_valid_text() -> None:
    text = _scrape(_collector(None))
    _promtool_check(text)
    assert b"# TYPE raftlog_raft_leaders gauge" in text
    # families without samples until the node is built; the error counts at 0
    assert {name for name, _ in _samples(text)} == {"raftlog_metrics_collect_errors_total"}


async def test_replica_counts_and_leaders_match_the_hosts(cluster: InProcessCluster) -> None:
    for group in GROUPS:
        await cluster.leader(group)
    texts = {node: _scrape(_collector(host)) for node, host in cluster.hosts.items()}
    total_leaders = 0
    for node, text in texts.items():
        _promtool_check(text)
        host = cluster.hosts[node]
        assert _value(text, "raftlog_raft_replicas") == len(GROUPS)
        led = sum(1 for r in host.replicas.values() if r.is_leader)
        assert _value(text, "raftlog_raft_leaders") == led
        assert _value(text, "raftlog_raft_leaderless_groups") == 0
        total_leaders += led
        started = sum(
            _value(text, "raftlog_raft_elections_started_total", reason=reason) for reason in ELECTION_REASONS
        )
        assert started >= led  # every leader here stood in an election
        assert _value(text, "raftlog_disk_free_bytes") > 0
        assert _value(text, "raftlog_rocksdb_write_stalled") == 0
        assert _value(text, "raftlog_rocksdb_live_data_bytes") >= 0
        assert _value(text, "raftlog_rocksdb_pending_compaction_bytes") >= 0
    assert total_leaders == len(GROUPS)


async def test_produce_moves_commit_latency_and_group_commit(cluster: InProcessCluster) -> None:
    leader = await cluster.leader(1)
    collector = _collector(cluster.hosts[leader.node_id])
    before = _scrape(collector)
    for i in range(5):
        await leader.produce(batch([b"r%d" % i] * 10))
    after = _scrape(collector)
    _promtool_check(after)
    grew = {
        name: _value(after, name) - _value(before, name)
        for name in (
            "raftlog_group_commit_syncs_total",
            "raftlog_group_commit_sync_seconds_count",
            "raftlog_group_commit_batch_writes_count",
            "raftlog_group_commit_batch_bytes_sum",
            "raftlog_raft_commit_latency_seconds_count",
        )
    }
    assert grew["raftlog_raft_commit_latency_seconds_count"] == 5, grew
    assert all(value > 0 for value in grew.values()), grew
    # The +Inf bucket is the count (cumulative buckets).
    assert _value(after, "raftlog_raft_commit_latency_seconds_bucket", le="+Inf") == _value(
        after, "raftlog_raft_commit_latency_seconds_count"
    )


async def test_lag_of_a_cut_off_follower_grows(cluster: InProcessCluster) -> None:
    leader = await cluster.leader(1)
    follower = next(n for n in cluster.node_ids if n != leader.node_id)
    collector = _collector(cluster.hosts[leader.node_id])
    await leader.produce(batch([b"warm"]))
    await cluster.wait_until(
        lambda: _value(_scrape(collector), "raftlog_raft_follower_lag_entries", peer=str(follower)) == 0,
        what="the follower to catch up",
    )
    cluster.cut.add((leader.node_id, follower))
    cluster.cut.add((follower, leader.node_id))
    for i in range(8):
        await leader.produce(batch([b"x" * 1000, bytes([i])]))
    text = _scrape(collector)
    _promtool_check(text)
    entries = _value(text, "raftlog_raft_follower_lag_entries", peer=str(follower))
    size = _value(text, "raftlog_raft_follower_lag_bytes", peer=str(follower))
    assert entries >= 8
    assert size >= 8 * 1000  # each entry carries a batch of over 1,000 bytes
    other = next(n for n in cluster.node_ids if n not in (leader.node_id, follower))
    await cluster.wait_until(
        lambda: _value(_scrape(collector), "raftlog_raft_follower_lag_entries", peer=str(other)) == 0,
        what="the connected follower to catch up",
    )
    cluster.cut.clear()
    await cluster.wait_until(
        lambda: _value(_scrape(collector), "raftlog_raft_follower_lag_bytes", peer=str(follower)) == 0,
        what="the healed follower to catch up",
    )


async def test_leader_transfer_is_counted_as_such(cluster: InProcessCluster) -> None:
    leader = await cluster.leader(2)
    target = next(n for n in cluster.node_ids if n != leader.node_id)
    collector = _collector(cluster.hosts[target])
    before = _value(_scrape(collector), "raftlog_raft_elections_started_total", reason="leader_transfer")
    await cluster.wait_until(lambda: leader.caught_up(target), what="the target to catch up")
    leader.transfer_leadership(target)
    await cluster.wait_until(lambda: cluster.hosts[target].replicas[2].is_leader, what="the transfer")
    after = _value(_scrape(collector), "raftlog_raft_elections_started_total", reason="leader_transfer")
    assert after == before + 1


async def test_consumer_group_lag_per_partition(cluster: InProcessCluster) -> None:
    leader = await cluster.leader(1)
    host = cluster.hosts[leader.node_id]
    for i in range(3):
        await leader.produce(batch([b"a", b"b", bytes([i])]))  # high watermark 9
    state = _State({("acme", "orders", 0): 1, ("acme", "orders", 1): 99})
    groups = _Groups(
        [
            ("acme", "billing", TopicPartition("orders", 0), 4),
            ("acme", "audit", TopicPartition("orders", 0), 12),  # ahead: never negative
            ("acme", "billing", TopicPartition("orders", 1), 0),  # no copy here: left out
            ("acme", "billing", TopicPartition("gone", 0), 0),  # deleted topic: left out
        ]
    )
    collector = _collector(host, controller=SimpleNamespace(state=state), groups=groups)
    text = _scrape(collector)
    _promtool_check(text)
    lag = {
        labels: value
        for (name, labels), value in _samples(text).items()
        if name == "raftlog_consumer_group_lag_records"
    }
    assert lag == {
        (("group", "billing"), ("partition", "0"), ("tenant", "acme"), ("topic", "orders")): 5,
        (("group", "audit"), ("partition", "0"), ("tenant", "acme"), ("topic", "orders")): 0,
    }


async def test_transport_counters(cluster: InProcessCluster) -> None:
    stats = SimpleNamespace(bytes_sent=1234, dropped_messages=5)
    transport = SimpleNamespace(stats=lambda: stats)
    text = _scrape(_collector(cluster.hosts[1], transport=transport))
    _promtool_check(text)
    assert _value(text, "raftlog_transport_sent_bytes_total") == 1234
    assert _value(text, "raftlog_transport_dropped_messages_total") == 5


def _raise(error: Exception) -> Any:
    def fail(*_args: object) -> Any:
        raise error

    return fail


async def test_a_failing_section_leaves_the_rest_of_the_page(
    cluster: InProcessCluster, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Disk, RocksDB, the coordinator's offsets and the transport all raise:
    the page still renders (their families without samples, the Raft and
    group-commit figures whole), each failure is counted by section and
    logged once a minute per section, and promtool finds nothing to say."""
    await cluster.leader(1)
    host = cluster.hosts[1]
    monkeypatch.setattr(host, "disk", SimpleNamespace(free_bytes=_raise(OSError(5, "Input/output error"))))
    monkeypatch.setattr(host, "store_stats", _raise(RuntimeError("rocksdb property read failed")))
    groups = SimpleNamespace(committed_offsets=_raise(KeyError("gone")))
    transport = SimpleNamespace(stats=_raise(ValueError("closed")))
    now = [1000.0]
    collector = NodeCollector(
        1,
        lambda: host,
        lambda: cast(Any, transport),
        lambda: cast(Any, SimpleNamespace(state=_State({}))),
        lambda: cast(Any, groups),
        clock=lambda: now[0],
    )
    failing = ("rocksdb", "disk", "consumer_groups", "transport")

    with caplog.at_level("ERROR", logger="cluster.telemetry.node_collector"):
        first = _scrape(collector)
        now[0] += 5
        second = _scrape(collector)
    _promtool_check(second)
    assert _value(second, "raftlog_raft_replicas") == len(GROUPS)
    assert _value(second, "raftlog_group_commit_syncs_total") >= 0
    for family in (
        "raftlog_disk_free_bytes",
        "raftlog_rocksdb_live_data_bytes",
        "raftlog_transport_sent_bytes",
    ):
        assert f"# TYPE {family}".encode() in second  # the family, without samples
    names = {name for name, _ in _samples(second)}
    assert "raftlog_disk_free_bytes" not in names and "raftlog_transport_sent_bytes_total" not in names
    for section in failing:
        assert _value(first, "raftlog_metrics_collect_errors_total", section=section) == 1
        assert _value(second, "raftlog_metrics_collect_errors_total", section=section) == 2
    for section in ("raft", "group_commit"):
        assert _value(second, "raftlog_metrics_collect_errors_total", section=section) == 0
    logged = [record.getMessage() for record in caplog.records]
    assert len(logged) == len(failing), logged  # the second scrape, 5 s later, logs nothing
    assert all(record.exc_info is not None for record in caplog.records)
    assert any("the disk metrics" in message for message in logged)

    caplog.clear()
    now[0] += 61
    with caplog.at_level("ERROR", logger="cluster.telemetry.node_collector"):
        _scrape(collector)
    assert len(caplog.records) == len(failing)
    assert all("1 more failures not logged" in record.getMessage() for record in caplog.records)


def test_promtool_helper_fails_instead_of_skipping(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(pytest.fail.Exception, match="run make test-tools"):
        promtool()
