"""The cluster file: validation with the setting named, the initial
placement of file topics, and the controller's voters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cluster.static_config import ConfigError, parse_cluster

NODES = [{"id": n, "address": f"127.0.0.1:{7000 + n}"} for n in (1, 2, 3)]


def doc(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "cluster_id": "c",
        "nodes": NODES,
        "topics": [{"name": "a", "partitions": 2}, {"name": "b", "partitions": 1, "replicas": [2, 3]}],
    }
    return base | overrides


def test_file_topics_rotate_their_replicas_so_preferred_leaders_spread(tmp_path: Path) -> None:
    cluster = parse_cluster(doc(), tmp_path)
    a, b = cluster.topics
    assert cluster.initial_assignment(a) == ((1, 2, 3), (2, 3, 1))
    assert cluster.initial_assignment(b) == ((2, 3),)


def test_controller_voters_default_to_the_first_three_nodes(tmp_path: Path) -> None:
    five = [{"id": n, "address": f"127.0.0.1:{7000 + n}"} for n in (5, 4, 3, 2, 1)]
    assert parse_cluster(doc(nodes=five), tmp_path).controller_voters() == (5, 4, 3)
    assert parse_cluster(doc(nodes=five, controller_nodes=[1]), tmp_path).controller_voters() == (1,)


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"nodes": [*NODES, {"id": 1, "address": "127.0.0.1:9"}]}, "unique"),
        ({"topics": [{"name": "a", "replicas": [1, 9]}]}, "replicas"),
        ({"topics": [{"name": "a\n"}]}, "topic name"),
        ({"topics": [{"name": "a", "partitions": 0}]}, "partitions"),
        ({"raft": {"election_ticks": 2, "heartbeat_ticks": 2}}, "election_ticks"),
        ({"topics": [{"name": "a", "retention": {"ms": -5}}]}, "retention.ms"),
        ({"controller_nodes": [1, 7]}, "controller_nodes"),
    ],
)
def test_bad_files_are_refused_naming_the_setting(
    tmp_path: Path, overrides: dict[str, Any], needle: str
) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_cluster(doc(**overrides), tmp_path)
