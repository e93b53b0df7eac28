"""``make run``'s cluster file serves /metrics on 9101-9103 and the banner
says where (cluster/run_local.py); no processes are started here."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from cluster.run_local import DEFAULT_CLUSTER, _print_banner
from cluster.static_config import parse_cluster


def test_make_run_nodes_serve_metrics_on_9101_to_9103_and_the_banner_names_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nodes = parse_cluster(tomllib.loads(DEFAULT_CLUSTER), tmp_path).nodes
    assert [n.metrics_port for n in nodes] == [9101, 9102, 9103]
    _print_banner(tmp_path, nodes, None)
    out = capsys.readouterr().out
    for port in (9101, 9102, 9103):
        assert f"metrics http://127.0.0.1:{port}/metrics" in out


def test_an_old_cluster_file_without_metrics_ports_gets_a_hint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = "\n".join(line for line in DEFAULT_CLUSTER.splitlines() if not line.startswith("metrics_port"))
    _print_banner(tmp_path, parse_cluster(tomllib.loads(old), tmp_path).nodes, None)
    assert "no /metrics: add metrics_port" in capsys.readouterr().out
