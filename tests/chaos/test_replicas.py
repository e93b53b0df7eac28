"""The drill's offline log reader runs ``python -m cluster.replica_dump`` in a
subprocess: the command is found, its JSON lines come back as one
``ReplicaLog`` per replica, non-replicas are left out, and a node that
cannot be read is reported as such (the checker counts it divergent)."""

from __future__ import annotations

from pathlib import Path

from chaos.replicas import ReplicaLog, read_replica_logs


def test_the_reader_command_reports_every_replica_and_unreadable_nodes(tmp_path: Path) -> None:
    (tmp_path / "n1").mkdir()
    (tmp_path / "n2").write_text("not a directory")
    logs = read_replica_logs(
        {1: tmp_path / "n1", 2: tmp_path / "n2"},
        {("orders", 0): 1, ("audit", 0): 2},
        replicas={("orders", 0): (1, 2), ("audit", 0): (1,)},
        timeout_s=60,
    )
    assert set(logs) == {("orders", 0), ("audit", 0)}
    assert logs[("audit", 0)] == [ReplicaLog(1, 0, 0, [])]  # an empty store: nothing committed
    empty, unreadable = logs[("orders", 0)]
    assert empty == ReplicaLog(1, 0, 0, [])
    assert unreadable.node == 2 and unreadable.error
