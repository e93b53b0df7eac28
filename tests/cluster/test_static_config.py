"""The cluster file: validation with the setting named, the initial
placement of file topics, and the controller's voters."""

from __future__ import annotations

import textwrap
import tomllib
from pathlib import Path
from typing import Any

import pytest

from cluster import static_config
from cluster.controller.quotas import QuotaLimits
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


# --- [quotas]: the cluster's default quotas ------------------------------------------


def test_quotas_convert_mb_and_gb_to_bytes_and_keep_counts(tmp_path: Path) -> None:
    quotas = {
        "produce_mb_s": 2.5,
        "fetch_mb_s": 10,
        "requests_s": 1000,
        "storage_gb": 0.5,
        "partitions": 100,
        "topics": 0,
        "groups": 7,
        "streams": 3,
    }
    cluster = parse_cluster(doc(quotas=quotas), tmp_path)
    assert cluster.quota_defaults == QuotaLimits(
        produce_bytes_s=2_500_000,
        fetch_bytes_s=10_000_000,
        requests_s=1000,
        storage_bytes=500_000_000,
        partitions=100,
        topics=0,
        groups=7,
        streams=3,
    )


def test_quotas_left_out_are_no_limit_from_the_file(tmp_path: Path) -> None:
    assert parse_cluster(doc(), tmp_path).quota_defaults == QuotaLimits()
    assert parse_cluster(doc(quotas={"topics": 5}), tmp_path).quota_defaults == QuotaLimits(topics=5)


def test_the_documented_example_parses(tmp_path: Path) -> None:
    """The module docstring's [quotas] example is valid TOML with the
    values it says."""
    text = static_config.__doc__ or ""
    start = text.index("    [quotas]")
    block = textwrap.dedent(text[start : text.index("\n\n", start)])
    section = tomllib.loads(block)["quotas"]
    limits = parse_cluster(doc(quotas=section), tmp_path).quota_defaults
    assert (limits.produce_bytes_s, limits.storage_bytes, limits.partitions) == (10_000_000, 10**11, 1000)


@pytest.mark.parametrize(
    ("quotas", "needle"),
    [
        ({"produce_mb_s": -1.0}, "quotas.produce_mb_s must be >= 0"),
        ({"storage_gb": "10"}, "quotas.storage_gb must be a number"),
        ({"fetch_mb_s": float("inf")}, "quotas.fetch_mb_s must be a number"),
        ({"fetch_mb_s": True}, "quotas.fetch_mb_s must be a number"),
        ({"partitions": 1.5}, "quotas.partitions must be a whole number >= 0"),
        ({"topics": -1}, "quotas.topics must be a whole number >= 0"),
        ({"groups": False}, "quotas.groups must be a whole number"),
        ({"streams": 2**63}, "quotas.streams = .* is too large"),
        ({"storage_gb": 1e12}, "quotas.storage_gb = .* is too large"),
        ({"produce_mbs": 1}, "quotas.produce_mbs: unknown setting"),
        (5, r"\[quotas\] must be a table"),
    ],
)
def test_bad_quotas_are_refused_naming_the_setting(tmp_path: Path, quotas: Any, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        parse_cluster(doc(quotas=quotas), tmp_path)
