"""Compacted topics from the ``raftlog`` command line against a real 3-node
cluster: create with a cleanup policy, produce keyed records and tombstones
(``--key-separator``, ``--null-value``), read them back with ``--print-key``,
describe, alter, refusals, and ``topic compact --wait`` end to end."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator

import pytest

from cluster.cli import main
from harness.local_cluster import LocalCluster, TopicSpec

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("compacted-cli"), topics=[TopicSpec("plain")])
    c.start_all()
    yield c
    c.close()


def _run(
    cluster: LocalCluster,
    capsys: pytest.CaptureFixture[str],
    *argv: str,
    stdin: str | None = None,
) -> tuple[int, str, str]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAFTLOG_API_KEY", cluster.api_key)
        if stdin is not None:
            env.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
        code = main(["--bootstrap", cluster.addresses[1], *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_keys_tombstones_and_print_key(cluster: LocalCluster, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _run(
        cluster,
        capsys,
        *("topic", "create", "latest", "--partitions", "1", "--replication", "3"),
        *("--cleanup-policy", "compact", "--min-compaction-lag-ms", "0", "--delete-retention-ms", "1000"),
    )
    assert code == 0 and "cleanup.policy compact" in err, err
    lines = "a:1\nb:2\na:3\nb:NULL\n"
    code, _, err = _run(
        cluster, capsys, "produce", "latest", "--key-separator", ":", "--null-value", "NULL", stdin=lines
    )
    assert code == 0, err
    code, out, _ = _run(
        cluster, capsys, *("consume", "latest", "--from-beginning", "--max-records", "4", "--print-key")
    )
    assert code == 0 and out.splitlines() == ["a\t1", "b\t2", "a\t3", "b\t"], out
    code, out, _ = _run(
        cluster,
        capsys,
        *("consume", "latest", "--from-beginning", "--max-records", "4", "--print-key"),
        *("--key-separator", "=", "--null-value", "<deleted>"),
    )
    assert out.splitlines() == ["a=1", "b=2", "a=3", "b=<deleted>"], out
    code, out, _ = _run(cluster, capsys, "topic", "describe", "latest")
    assert code == 0
    assert "cleanup.policy compact" in out and "min.compaction.lag.ms 0" in out
    assert "delete.retention.ms 1000" in out


def test_a_keyless_line_on_a_compacted_topic_is_refused(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    _run(cluster, capsys, "topic", "create", "keyed", "--replication", "3", "--cleanup-policy", "compact")
    code, _, err = _run(cluster, capsys, "produce", "keyed", "--key-separator", ":", stdin="no key here\n")
    assert code == 1 and "KEY_REQUIRED" in err, err


def test_alter_changes_settings_and_bad_values_change_nothing(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(cluster, capsys, "topic", "create", "changing", "--replication", "3")
    assert code == 0, err
    code, _, err = _run(
        cluster,
        capsys,
        *("topic", "alter", "changing", "--cleanup-policy", "compact,delete"),
        *("--max-compaction-lag-ms", "60000", "--retention-ms", "3600000"),
    )
    assert code == 0 and "cleanup.policy compact,delete" in err, err
    code, _, err = _run(cluster, capsys, "topic", "alter", "changing", "--cleanup-policy", "compacted")
    assert code == 1 and "INVALID_TOPIC_CONFIG" in err and "compact,delete" in err, err
    code, _, err = _run(cluster, capsys, "topic", "alter", "changing", "--min-compaction-lag-ms", "-1")
    assert code == 1 and "INVALID_TOPIC_CONFIG" in err, err
    code, out, _ = _run(cluster, capsys, "topic", "describe", "changing")
    assert "cleanup.policy compact,delete" in out and "max.compaction.lag.ms 60000" in out, out
    assert ", retention.ms 3600000" in out
    code, _, err = _run(cluster, capsys, "topic", "alter", "changing", "--reset", "retention_ms")
    assert code == 0
    code, out, _ = _run(cluster, capsys, "topic", "describe", "changing")
    assert ", retention.ms" not in out, out
    code, _, err = _run(cluster, capsys, "topic", "alter", "nope", "--cleanup-policy", "compact")
    assert code == 1 and "UNKNOWN_TOPIC" in err


def test_compact_refuses_delete_topics_and_unknown_ones(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = _run(cluster, capsys, "topic", "compact", "plain")
    assert code == 1 and "NOT_COMPACTED" in err and "compact" in err, err
    assert len(err.strip().splitlines()) == 1
    code, _, err = _run(cluster, capsys, "topic", "compact", "nope")
    assert code == 1 and "UNKNOWN_TOPIC" in err


def test_compact_wait_leaves_the_latest_record_per_key(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    """Needs the partition side's ``Replica.compact_now``."""
    code, _, err = _run(
        cluster,
        capsys,
        *("topic", "create", "squashed", "--partitions", "2", "--replication", "3"),
        *("--cleanup-policy", "compact", "--delete-retention-ms", "0"),
    )
    assert code == 0, err
    lines = "".join(f"k{i % 5}:v{i}\n" for i in range(50)) + "k0:NULL\n"
    code, _, err = _run(
        cluster, capsys, "produce", "squashed", "--key-separator", ":", "--null-value", "NULL", stdin=lines
    )
    assert code == 0, err
    # Records in the active (newest) batch may stay: send one more batch so
    # the ones above are all in the past.
    _run(cluster, capsys, "produce", "squashed", "--key-separator", ":", stdin="zz:last\n")
    code, out, err = _run(cluster, capsys, "topic", "compact", "squashed", "--wait")
    assert code == 0, err
    assert out.count(": done") == 2, out
    code, out, _ = _run(cluster, capsys, "topic", "describe", "squashed")
    assert out.count("cleaned up to offset") == 2, out
    code, out, _ = _run(
        cluster, capsys, *("consume", "squashed", "--from-beginning", "--timeout", "2", "--print-key")
    )
    latest = {line.split("\t")[0]: line.split("\t")[1] for line in out.splitlines()}
    assert latest == {"k1": "v46", "k2": "v47", "k3": "v48", "k4": "v49", "zz": "last"} | (
        {"k0": ""} if "k0" in latest else {}
    ), out
    assert len(out.splitlines()) <= 6, out
