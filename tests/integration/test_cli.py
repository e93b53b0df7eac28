"""The ``raftlog`` command line against a real 3-node cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from cluster.cli import main
from harness.local_cluster import LocalCluster, TopicSpec

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
    # The key through the environment: --api-key would add its ps warning to stderr.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAFTLOG_API_KEY", cluster.api_key)
        code = main(["--bootstrap", cluster.addresses[2], *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _cli(env: dict[str, str], *argv: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cluster.cli", *argv],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_status_lists_every_node(cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(cluster, capsys, "status")
    assert code == 0
    assert out.startswith("controller leader: node ") and "3/3 nodes live" in out, out
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [int(r[0]) for r in rows] == [1, 2, 3]
    # 3 + 1 partitions of the file topics, 3 of the groups' offsets topic, 1 of the audit topic.
    assert all(int(r[2]) == 8 for r in rows), out


def test_status_shows_each_nodes_resources_with_only_an_operator_key(cluster: LocalCluster) -> None:
    """Leaders, awake replicas, CPU, memory and elections come from the
    public GetNodeStats: the operator key and a bootstrap address are all
    the command needs (no cluster secret, which stays on the nodes)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("RAFTLOG_") or name in ("RAFTLOG_API_KEY", "RAFTLOG_BOOTSTRAP")
    }
    env |= {"RAFTLOG_BOOTSTRAP": cluster.addresses[2], "RAFTLOG_API_KEY": cluster.api_key}
    done = _cli(env, "status")
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    header, *rows = (line.split() for line in done.stdout.splitlines()[1:])
    assert header == [
        "node",
        "address",
        "replicas",
        "live",
        "leaders",
        "awake",
        "cpu_s",
        "cpu%",
        "rss_mb",
        "elections",
    ]
    assert [int(r[0]) for r in rows] == [1, 2, 3], done.stdout
    for row in rows:
        assert len(row) == len(header), row  # no dropped peer messages: no note
        leaders, awake, cpu_s, cpu_share, rss_mb, elections = row[4:]
        # 7 partition replicas; awake also counts the metadata controller's.
        assert 0 <= int(leaders) <= 7 and 0 <= int(awake) <= 8 and int(elections) >= 0
        assert float(cpu_s) > 0 and float(cpu_share) > 0 and float(rss_mb) > 10


def test_topic_list_and_describe(cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(cluster, capsys, "topic", "list")
    assert (code, out.splitlines()) == (
        0,
        ["audit\t1 partitions\treplication 3", "orders\t3 partitions\treplication 3"],
    )
    code, out, _ = _run(cluster, capsys, "topic", "describe", "orders")
    assert code == 0
    assert [line.split(":")[0].strip() for line in out.splitlines()[1:]] == [
        f"partition {p}" for p in range(3)
    ]
    assert "replicas [1, 2, 3]" in out and "replicas [2, 3, 1]" in out


def test_errors_are_one_line_with_what_to_do(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(cluster, capsys, "topic", "describe", "nope")
    assert code == 1 and "UNKNOWN_TOPIC" in err and "list topics" in err
    assert len(err.strip().splitlines()) == 1
    code, _, err = _run(cluster, capsys, "topic", "create", "zero", "--partitions", "0")
    assert code == 1 and "INVALID_PARTITIONS" in err
    code, _, err = _run(cluster, capsys, "topic", "create", "wide", "--replication", "5")
    assert code == 1 and "REPLICATION_FACTOR_TOO_LARGE" in err and "3 live" in err
    code, _, err = _run(cluster, capsys, "topic", "create", "bad/name")
    assert code == 1 and "INVALID_NAME" in err
    code = main(["--bootstrap", cluster.addresses[1], "--api-key", "rlk_wrong", "topic", "list"])
    _, err = capsys.readouterr()
    assert code == 1 and "INVALID_API_KEY" in err
    code = main(["--bootstrap", "127.0.0.1:1", "--api-key", cluster.api_key, "status"])
    _, err = capsys.readouterr()
    assert code == 1 and "RAFTLOG_BOOTSTRAP" in err
    with pytest.raises(SystemExit) as usage:
        main(["topic"])
    assert usage.value.code == 2


def test_the_quickstart_a_tenant_creates_a_topic_produces_and_consumes(cluster: LocalCluster) -> None:
    """README's quickstart, as a user with a tenant key types it."""
    operator = {**os.environ, "RAFTLOG_BOOTSTRAP": cluster.addresses[1], "RAFTLOG_API_KEY": cluster.api_key}
    created = _cli(operator, "tenant", "create", "acme")
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip()
    assert key.startswith("rlk_") and "shown once" in created.stderr
    env = {**operator, "RAFTLOG_API_KEY": key}
    made = _cli(env, "topic", "create", "t", "--partitions", "3", "--replication", "3")
    assert made.returncode == 0, made.stderr
    produced = _cli(env, "produce", "t", stdin="".join(f"{i}\n" for i in range(1, 1001)))
    assert produced.returncode == 0 and "produced 1000 records" in produced.stderr, produced.stderr
    consumed = _cli(env, "consume", "t", "--from-beginning", "--max-records", "1000")
    assert consumed.returncode == 0, consumed.stderr
    values = [int(v) for v in consumed.stdout.split()]
    assert sorted(values) == list(range(1, 1001))
    # The operator's default tenant has no topic "t"; acme cannot see "orders".
    listed = [line.split("\t")[0] for line in _cli(operator, "topic", "list").stdout.splitlines()]
    assert listed == ["audit", "orders"]
    assert [line.split("\t")[0] for line in _cli(env, "topic", "list").stdout.splitlines()] == ["t"]
    hidden = _cli(env, "topic", "describe", "orders")
    assert hidden.returncode == 1 and "UNKNOWN_TOPIC" in hidden.stderr


def test_produce_lines_then_consume_them_all(cluster: LocalCluster) -> None:
    env = {**os.environ, "RAFTLOG_BOOTSTRAP": cluster.addresses[3], "RAFTLOG_API_KEY": cluster.api_key}
    produced = _cli(env, "produce", "orders", stdin="".join(f"{i}\n" for i in range(1, 1001)))
    assert produced.returncode == 0, produced.stderr
    assert "produced 1000 records" in produced.stderr
    consumed = _cli(env, "consume", "orders", "--from-beginning", "--max-records", "1000")
    assert consumed.returncode == 0, consumed.stderr
    values = [int(v) for v in consumed.stdout.split()]
    assert sorted(values) == list(range(1, 1001))  # each exactly once
    # Keyed lines: one key's records keep their order within its partition.
    keyed = "".join(f"k{i % 3}:{i}\n" for i in range(60))
    produced = _cli(env, "produce", "audit", "--key-separator", ":", stdin=keyed)
    assert produced.returncode == 0, produced.stderr
    consumed = _cli(env, "consume", "audit", "--from-beginning", "--timeout", "2")
    assert [int(v) for v in consumed.stdout.split()] == list(range(60))  # one partition: total order


def test_consume_with_a_group_resumes_where_the_group_committed(cluster: LocalCluster) -> None:
    env = {**os.environ, "RAFTLOG_BOOTSTRAP": cluster.addresses[1], "RAFTLOG_API_KEY": cluster.api_key}
    assert _cli(env, "topic", "create", "grouped", "--partitions", "2").returncode == 0
    produced = _cli(env, "produce", "grouped", stdin="".join(f"{i}\n" for i in range(100)))
    assert produced.returncode == 0, produced.stderr
    first = _cli(env, "consume", "grouped", "--group", "g", "--from-beginning", "--max-records", "60")
    assert first.returncode == 0, first.stderr
    second = _cli(env, "consume", "grouped", "--group", "g", "--from-beginning", "--timeout", "3")
    assert second.returncode == 0, second.stderr
    seen_first, seen_second = {int(v) for v in first.stdout.split()}, {int(v) for v in second.stdout.split()}
    assert len(seen_first) == 60
    # Nothing skipped, and the second member starts from the group's commits,
    # not from the beginning.
    assert seen_first | seen_second == set(range(100)) and not seen_first & seen_second
    listed = _cli(env, "group", "list")
    assert listed.returncode == 0 and listed.stdout.split("\t")[0] == "g", listed.stdout + listed.stderr
    described = _cli(env, "group", "describe", "g")
    assert described.returncode == 0, described.stderr
    assert described.stdout.startswith("group g: empty")
