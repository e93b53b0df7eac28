"""A partition without Raft for compaction tests: a state machine, its log
as a dict of entry data, and a ``LogCleaner`` that rewrites the dict the
way a replica rewrites its RocksDB entries."""

from __future__ import annotations

from collections.abc import Sequence

from partitions.cleaner import LogCleaner
from partitions.commands import CompactCommand, decode_produce, encode_compact, encode_produce
from partitions.compaction import StoredBatch
from partitions.state_machine import BatchLocation, PartitionConfig, PartitionStateMachine
from raftlog.v1.record_batch import DecodedRecord, Record, decode_records, encode_batch, with_base_offset


class MemoryPartition:
    def __init__(self, config: PartitionConfig, *, step_bytes: int = 1 << 20) -> None:
        self.sm = PartitionStateMachine(config)
        self.log: dict[int, bytes] = {}
        self.index = 0
        self.cleaner = LogCleaner()
        self.step_bytes = step_bytes

    def append(self, data: bytes) -> object:
        self.index += 1
        self.log[self.index] = data
        return self.sm.apply(self.index, data)

    def produce(
        self, records: Sequence[tuple[bytes | None, bytes | None]], now_ms: int, **producer: int
    ) -> object:
        batch = encode_batch(
            [Record(value=v, key=k, timestamp_ms=now_ms) for k, v in records],
            **producer,  # type: ignore[arg-type]
        )
        return self.append(encode_produce(batch, now_ms))

    def compact(
        self, up_to: int, now_ms: int, retention_ms: int, map_entries: int, floor: int | None = None
    ) -> None:
        floor = self.index if floor is None else floor
        self.append(encode_compact(CompactCommand(up_to, now_ms, retention_ms, floor, map_entries)))

    def read_stored(self, locations: list[BatchLocation]) -> list[StoredBatch]:
        out = []
        for loc in locations:
            command = decode_produce(self.log[loc.raft_index])
            out.append(
                StoredBatch(loc.raft_index, loc.base_offset, command.append_time_ms, bytes(command.batch))
            )
        return out

    def clean(self, cleaner: LogCleaner | None = None) -> int:
        """Run the cleaner until it has nothing to do; returns the entries it rewrote."""
        cleaner = cleaner or self.cleaner
        rewritten = 0
        for _ in range(10_000):
            if not cleaner.pending(self.sm):
                return rewritten
            rewrites, _ = cleaner.step(self.sm, self.read_stored, self.step_bytes)
            for r in rewrites:
                self.log[r.raft_index] = encode_produce(r.batch, r.append_time_ms)
            cleaner.compacted_bytes += self.sm.resize_batches({r.raft_index: len(r.batch) for r in rewrites})
            rewritten += len(rewrites)
        raise AssertionError("the cleaner never finished")

    def retain(self, now_ms: int) -> None:
        cut = self.sm.retention_cut(now_ms)
        if cut is not None:
            for index in [i for i in self.log if i <= cut.index]:
                del self.log[index]
            self.sm.compacted(cut.index)

    def read_all(self) -> list[DecodedRecord]:
        sm = self.sm
        out: list[DecodedRecord] = []
        offset = sm.log_start_offset
        while offset < sm.high_watermark:
            locations = sm.locate(offset, 1 << 20)
            for loc in locations:
                batch = with_base_offset(decode_produce(self.log[loc.raft_index]).batch, loc.base_offset)
                out.extend(r for r in decode_records(batch) if r.offset >= offset)
            offset = locations[-1].last_offset + 1
        return out
