"""Read a stopped node's partition logs straight from its RocksDB.

The check after a drill must not trust the server's read path: this opens
the node store, takes the group's snapshot and committed entries as Raft
stored them, and replays them through a fresh state machine to get each
record's offset. Only what the replica's persisted commit index covers is
returned (a follower's persisted commit may trail the leader's slightly).

Used by the kill and node-join tests (tests/integration/) and, as a
command, by the failover drills (chaos/ may not import the server's
storage code, so chaos/replicas.py runs this in a subprocess)::

    python -m cluster.replica_dump --node 1=DATA_DIR --group orders/0=1 ...

prints one JSON object per (node, group): node, group, name (the label given
with --group), commit_index, log_start_offset and records as
[offset, base64 value] pairs in log order. A node directory that cannot be
read gives an object with an "error" instead.

``read_keyed_records`` gives one group's records with their keys, a
tombstone's value as None (the compaction tests compare key -> latest value
views of every replica).
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from partitions.commands import decode_produce
from partitions.node_store import NodeStore
from partitions.raft_storage import GroupStorage
from partitions.state_machine import Appended, PartitionConfig, PartitionStateMachine
from raft.types import EntryKind
from raftlog.v1.record_batch import DecodedRecord, decode_records, with_base_offset

__all__ = ["ReplicaLog", "main", "read_keyed_records", "read_replica_log", "read_replica_logs"]


@dataclass(frozen=True)
class ReplicaLog:
    node: int
    commit_index: int
    log_start_offset: int
    records: list[tuple[int, bytes]]  # (offset, value) in log order


def read_replica_log(node: int, data_dir: Path, group: int) -> ReplicaLog:
    return read_replica_logs(node, data_dir, [group])[group]


def read_replica_logs(node: int, data_dir: Path, groups: list[int]) -> dict[int, ReplicaLog]:
    """Several groups of one node, opening its store once."""
    store = NodeStore(data_dir / "store")
    try:
        return {group: _read_group(store, node, group) for group in groups}
    finally:
        store.close()


def read_keyed_records(data_dir: Path, group: int) -> list[DecodedRecord]:
    """One group's committed records on a stopped node, keys and nulls kept
    (offset, timestamp, key, value: None for a tombstone), in log order."""
    store = NodeStore(data_dir / "store")
    try:
        return _replay(store, group)[2]
    finally:
        store.close()


def _read_group(store: NodeStore, node: int, group: int) -> ReplicaLog:
    commit, start, records = _replay(store, group)
    return ReplicaLog(node, commit, start, [(r.offset, r.value or b"") for r in records])


def _replay(store: NodeStore, group: int) -> tuple[int, int, list[DecodedRecord]]:
    """(persisted commit index, log start offset, records up to the commit)."""
    storage = GroupStorage(store, group)
    snapshot = storage.snapshot()
    commit = storage.initial_state()[0].commit
    sm = PartitionStateMachine.restore(PartitionConfig(), snapshot.metadata.index, snapshot.data)
    start = sm.high_watermark
    records: list[DecodedRecord] = []
    lo = snapshot.metadata.index + 1
    if commit >= lo:
        for entry in storage.entries(lo, commit + 1):
            if entry.kind != EntryKind.NORMAL or not entry.data:
                sm.apply_noop(entry.index)
                continue
            result = sm.apply(entry.index, entry.data)
            if isinstance(result, Appended):
                batch = with_base_offset(bytes(decode_produce(entry.data).batch), result.base_offset)
                records.extend(decode_records(batch))
    return commit, start, records


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.replica_dump", description=__doc__)
    parser.add_argument("--node", action="append", default=[], metavar="ID=DATA_DIR", required=True)
    parser.add_argument("--group", action="append", default=[], metavar="NAME=GROUP", required=True)
    args = parser.parse_args(argv)
    groups = {int(g): name for name, _, g in (item.rpartition("=") for item in args.group)}
    for item in args.node:
        node_text, _, data_dir = item.partition("=")
        node = int(node_text)
        try:
            logs = read_replica_logs(node, Path(data_dir), sorted(groups))
        except Exception as exc:  # reported per node: the drill's checker counts it
            for group, name in groups.items():
                print(json.dumps({"node": node, "group": group, "name": name, "error": repr(exc)}))
            continue
        for group, log in logs.items():
            records = [[offset, base64.b64encode(value).decode()] for offset, value in log.records]
            line = {
                "node": node,
                "group": group,
                "name": groups[group],
                "commit_index": log.commit_index,
                "log_start_offset": log.log_start_offset,
                "records": records,
            }
            print(json.dumps(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
