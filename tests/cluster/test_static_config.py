"""The static cluster file: validation with the setting named, derived group
ids, and a node refusing a file that remaps its partitions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cluster.node import Node
from cluster.static_config import ConfigError, parse_cluster

NODES = [{"id": n, "address": f"127.0.0.1:{7000 + n}"} for n in (1, 2, 3)]


def doc(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "cluster_id": "c",
        "nodes": NODES,
        "topics": [{"name": "a", "partitions": 2}, {"name": "b", "partitions": 1, "replicas": [2, 3]}],
    }
    return base | overrides


def test_group_ids_follow_file_order_from_one(tmp_path: Path) -> None:
    cluster = parse_cluster(doc(), tmp_path)
    assert [(r.topic, r.partition, r.group, r.replicas) for r in cluster.partitions()] == [
        ("a", 0, 1, (1, 2, 3)),
        ("a", 1, 2, (1, 2, 3)),
        ("b", 0, 3, (2, 3)),
    ]
    assert [r.preferred_leader for r in cluster.partitions()] == [1, 2, 2]


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"nodes": [*NODES, {"id": 1, "address": "127.0.0.1:9"}]}, "unique"),
        ({"topics": [{"name": "a", "replicas": [1, 9]}]}, "replicas"),
        ({"topics": [{"name": "a\n"}]}, "topic name"),
        ({"topics": [{"name": "a", "partitions": 0}]}, "partitions"),
        ({"raft": {"election_ticks": 2, "heartbeat_ticks": 2}}, "election_ticks"),
        ({"topics": [{"name": "a", "retention": {"ms": -5}}]}, "retention.ms"),
    ],
)
def test_bad_files_are_refused_naming_the_setting(
    tmp_path: Path, overrides: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_cluster(doc(**overrides), tmp_path)


def test_a_node_refuses_a_file_that_remaps_its_partitions(tmp_path: Path) -> None:
    first = Node(parse_cluster(doc(), tmp_path), 1, data_dir=tmp_path / "node1")
    first._check_group_mapping(first.cluster.partitions())
    appended = doc(topics=[*doc()["topics"], {"name": "c"}])  # appending a topic is fine
    again = Node(parse_cluster(appended, tmp_path), 1, data_dir=tmp_path / "node1")
    again._check_group_mapping(again.cluster.partitions())
    reordered = doc(topics=list(reversed(doc()["topics"])))
    moved = Node(parse_cluster(reordered, tmp_path), 1, data_dir=tmp_path / "node1")
    with pytest.raises(ConfigError, match="different Raft groups"):
        moved._check_group_mapping(moved.cluster.partitions())
