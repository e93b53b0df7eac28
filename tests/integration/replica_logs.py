"""Read a stopped node's partition logs straight from its RocksDB.

The check after a drill must not trust the server's read path: this opens
the node store, takes the group's snapshot and committed entries as Raft
stored them, and replays them through a fresh state machine to get each
record's offset. Only what the replica's persisted commit index covers is
returned (a follower's persisted commit may trail the leader's slightly).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from partitions.commands import decode_command
from partitions.node_store import NodeStore
from partitions.raft_storage import GroupStorage
from partitions.state_machine import Appended, PartitionConfig, PartitionStateMachine
from raft.types import EntryKind
from raftlog.v1.record_batch import decode_records, with_base_offset


@dataclass(frozen=True)
class ReplicaLog:
    node: int
    commit_index: int
    log_start_offset: int
    records: list[tuple[int, bytes]]  # (offset, value) in log order


def read_replica_log(node: int, data_dir: Path, group: int) -> ReplicaLog:
    store = NodeStore(data_dir / "store")
    try:
        storage = GroupStorage(store, group)
        snapshot = storage.snapshot()
        commit = storage.initial_state()[0].commit
        sm = PartitionStateMachine.restore(PartitionConfig(), snapshot.metadata.index, snapshot.data)
        start = sm.high_watermark
        records: list[tuple[int, bytes]] = []
        lo = snapshot.metadata.index + 1
        if commit >= lo:
            for entry in storage.entries(lo, commit + 1):
                if entry.kind != EntryKind.NORMAL or not entry.data:
                    sm.apply_noop(entry.index)
                    continue
                result = sm.apply(entry.index, entry.data)
                if isinstance(result, Appended):
                    batch = with_base_offset(bytes(decode_command(entry.data).batch), result.base_offset)
                    records.extend((r.offset, r.value or b"") for r in decode_records(batch))
        return ReplicaLog(node, commit, start, records)
    finally:
        store.close()
