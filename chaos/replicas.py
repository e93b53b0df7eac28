"""Every replica's log of every partition, read offline after the drill.

The check must not trust the server's read path, so the logs are read
straight from each stopped node's RocksDB by the offline reader
``cluster/replica_dump.py`` (also the kill drill's reader). That reader
replays the stored Raft entries through the partition state machine, which
lives in ``partitions/``; chaos/ may import only ``client`` and the protos
(DESIGN.md's folder table, enforced by tests/test_layout.py), so it runs the
reader as a subprocess of the same interpreter (``python -m
cluster.replica_dump``) and parses its JSON lines.

Invariant: a replica's records are what its persisted commit index covers,
in log order, with the offsets the state machine gave them.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["READER_MODULE", "ReplicaLog", "read_replica_logs", "source_root"]

READER_MODULE = "cluster.replica_dump"


@dataclass(frozen=True, slots=True)
class ReplicaLog:
    node: int
    commit_index: int
    log_start_offset: int
    records: list[tuple[int, bytes]] = field(default_factory=list)  # (offset, value), log order
    error: str = ""  # the reader could not read this replica


def source_root() -> Path:
    """The checkout holding chaos/ and cluster/ (the reader's working
    directory, so that it runs this checkout's code)."""
    return Path(__file__).resolve().parent.parent


def read_replica_logs(
    data_dirs: Mapping[int, Path],
    groups: Mapping[tuple[str, int], int],
    *,
    replicas: Mapping[tuple[str, int], Sequence[int]] | None = None,
    timeout_s: float = 300.0,
) -> dict[tuple[str, int], list[ReplicaLog]]:
    """``data_dirs``: node id → data directory (nodes stopped);
    ``groups``: (topic, partition) → Raft group; ``replicas``: the nodes
    whose copy counts for each partition (default: every node). Returns
    each partition's replica logs in node order."""
    root = source_root()
    command = [sys.executable, "-m", READER_MODULE]
    for node, data_dir in sorted(data_dirs.items()):
        command += ["--node", f"{node}={data_dir}"]
    by_name = {f"{topic}/{partition}": (topic, partition) for topic, partition in groups}
    for (topic, partition), group in sorted(groups.items()):
        command += ["--group", f"{topic}/{partition}={group}"]
    result = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=timeout_s, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed ({result.returncode}):\n{result.stderr[-4000:]}")
    logs: dict[tuple[str, int], list[ReplicaLog]] = {tp: [] for tp in groups}
    for line in result.stdout.splitlines():
        item = json.loads(line)
        tp = by_name[item["name"]]
        if replicas is not None and item["node"] not in replicas.get(tp, ()):
            continue  # not (or no longer) a replica of this partition
        if "error" in item:
            logs[tp].append(ReplicaLog(item["node"], 0, 0, [], error=item["error"]))
            continue
        records = [(int(offset), base64.b64decode(value)) for offset, value in item["records"]]
        logs[tp].append(ReplicaLog(item["node"], item["commit_index"], item["log_start_offset"], records))
    for found in logs.values():
        found.sort(key=lambda log: log.node)
    return logs
