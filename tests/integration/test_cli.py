"""The ``raftlog`` command line against a real 3-node cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from client.local_cluster import LocalCluster, TopicSpec
from cluster.cli import main

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(
        tmp_path_factory.mktemp("cli"), topics=[TopicSpec("orders", partitions=3), TopicSpec("audit")]
    )
    c.start_all()
    yield c
    c.close()


def _run(cluster: LocalCluster, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["--bootstrap", cluster.addresses[2], *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_status_lists_every_node(cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(cluster, capsys, "status")
    assert code == 0
    rows = [line.split() for line in out.splitlines()[1:]]
    assert [int(r[0]) for r in rows] == [1, 2, 3]
    assert all(int(r[2]) == 4 for r in rows), out  # 3 + 1 partitions on every node


def test_topic_list_and_describe(cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(cluster, capsys, "topic", "list")
    assert (code, out.splitlines()) == (0, ["audit\t1 partitions", "orders\t3 partitions"])
    code, out, _ = _run(cluster, capsys, "topic", "describe", "orders")
    assert code == 0
    assert [line.split(":")[0].strip() for line in out.splitlines()[1:]] == [
        f"partition {p}" for p in range(3)
    ]
    assert "replicas [1, 2, 3]" in out


def test_errors_are_one_line_with_what_to_do(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(cluster, capsys, "topic", "describe", "nope")
    assert code == 1 and "UNKNOWN_TOPIC" in err and "raftlog topic list" in err
    code = main(["--bootstrap", "127.0.0.1:1", "status"])
    _, err = capsys.readouterr()
    assert code == 1 and "RAFTLOG_BOOTSTRAP" in err
    with pytest.raises(SystemExit) as usage:
        main(["topic"])
    assert usage.value.code == 2


def test_produce_lines_then_consume_them_all(cluster: LocalCluster) -> None:
    env = {**os.environ, "RAFTLOG_BOOTSTRAP": cluster.addresses[3]}
    lines = "".join(f"{i}\n" for i in range(1, 1001))
    produced = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "produce", "orders"],
        input=lines,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert produced.returncode == 0, produced.stderr
    assert "produced 1000 records" in produced.stderr
    consumed = subprocess.run(
        [
            sys.executable,
            "-m",
            "cluster.cli",
            "consume",
            "orders",
            "--from-beginning",
            "--max-records",
            "1000",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert consumed.returncode == 0, consumed.stderr
    values = [int(v) for v in consumed.stdout.split()]
    assert sorted(values) == list(range(1, 1001))  # each exactly once
    # Keyed lines: one key's records keep their order within its partition.
    keyed = "".join(f"k{i % 3}:{i}\n" for i in range(60))
    produced = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "produce", "audit", "--key-separator", ":"],
        input=keyed,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert produced.returncode == 0, produced.stderr
    consumed = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "consume", "audit", "--from-beginning", "--timeout", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert [int(v) for v in consumed.stdout.split()] == list(range(60))  # one partition: total order
