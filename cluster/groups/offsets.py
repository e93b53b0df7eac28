"""The coordinator partition's log records, and the committed-offsets table
rebuilt from them.

A committed offset is, as in Kafka, the offset of the *next* record the group
should consume from that partition.

Record format, version 1 (big-endian, fields as in ``cluster.primitives.wire``;
``text`` is a u16 length and UTF-8 bytes)::

    version u8 = 1 | kind u8 | body

    kind 1, offset commit:
      -- key: which committed offset this record sets
      tenant text | group text | topic text | partition u32
      -- value
      offset u64 | commit_timestamp_ms i64 | metadata text

    kind 2, coordinator started (appended by each new leader before it
    serves, and again before it admits a member with a longer session
    than the log allows; see ``coordinator``, failover fence):
      term u64 | max_session_timeout_ms u32

The key comes first and whole so that a compacting log could keep only the
last record per key. The tenant is part of the key because one coordinator
partition serves the groups of many tenants, and topic names are per tenant.
An unknown version or kind is an error, never skipped: a node that cannot
read a record must not serve a table that silently lacks it.

Invariants of ``CommittedOffsets``:

- each key's entry is the record with the highest log offset applied for it
  (last write in log order wins), whatever order the records are applied
  in — so commits applied as their appends complete (possibly out of order)
  give the same table as replaying the log from the start;
- applying a record twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from cluster.groups import TopicPartition
from cluster.primitives.wire import Reader, WireError, Writer

__all__ = [
    "KIND_COORDINATOR_STARTED",
    "KIND_OFFSET_COMMIT",
    "RECORD_VERSION",
    "CommittedOffset",
    "CommittedOffsets",
    "CoordinatorStarted",
    "OffsetCommitRecord",
    "OffsetRecordError",
    "decode_at",
    "decode_record",
]

RECORD_VERSION = 1
KIND_OFFSET_COMMIT = 1
KIND_COORDINATOR_STARTED = 2


class OffsetRecordError(ValueError):
    """Bytes that are not a record this version can read."""


@dataclass(frozen=True, slots=True)
class OffsetCommitRecord:
    tenant: str
    group: str
    topic: str
    partition: int
    offset: int
    commit_timestamp_ms: int
    metadata: str = ""

    @property
    def topic_partition(self) -> TopicPartition:
        return TopicPartition(self.topic, self.partition)

    def encode(self) -> bytes:
        """The record's bytes; ``ValueError`` for a field its width cannot hold."""
        return bytes(
            Writer()
            .u8(RECORD_VERSION)
            .u8(KIND_OFFSET_COMMIT)
            .text(self.tenant)
            .text(self.group)
            .text(self.topic)
            .u32(self.partition)
            .u64(self.offset)
            .i64(self.commit_timestamp_ms)
            .text(self.metadata)
        )

    @classmethod
    def decode(cls, data: bytes) -> OffsetCommitRecord:
        record = decode_record(data)
        if not isinstance(record, OffsetCommitRecord):
            raise OffsetRecordError(f"a record of kind {KIND_COORDINATOR_STARTED}, not an offset commit")
        return record


@dataclass(frozen=True, slots=True)
class CoordinatorStarted:
    """The leader of ``term`` serves the partition's groups, letting members
    keep sessions of up to ``max_session_timeout_ms`` (the longest of these
    in the log is how long a new leader waits before it grants anything)."""

    term: int
    max_session_timeout_ms: int

    def encode(self) -> bytes:
        return bytes(
            Writer()
            .u8(RECORD_VERSION)
            .u8(KIND_COORDINATOR_STARTED)
            .u64(self.term)
            .u32(self.max_session_timeout_ms)
        )


def decode_record(data: bytes) -> OffsetCommitRecord | CoordinatorStarted:
    reader = Reader(data, "offsets log record")
    try:
        version = reader.u8("version")
        if version != RECORD_VERSION:
            raise OffsetRecordError(f"record version {version}; this node reads only {RECORD_VERSION}")
        kind = reader.u8("kind")
        record: OffsetCommitRecord | CoordinatorStarted
        if kind == KIND_OFFSET_COMMIT:
            record = OffsetCommitRecord(
                tenant=reader.text("tenant"),
                group=reader.text("group"),
                topic=reader.text("topic"),
                partition=reader.u32("partition"),
                offset=reader.u64("offset"),
                commit_timestamp_ms=reader.i64("commit timestamp"),
                metadata=reader.text("metadata"),
            )
        elif kind == KIND_COORDINATOR_STARTED:
            record = CoordinatorStarted(
                term=reader.u64("term"), max_session_timeout_ms=reader.u32("max session timeout")
            )
        else:
            raise OffsetRecordError(f"record kind {kind}; this node reads kinds 1 and 2")
        reader.finish()
    except WireError as error:
        raise OffsetRecordError(str(error)) from None
    return record


@dataclass(frozen=True, slots=True)
class CommittedOffset:
    offset: int
    metadata: str
    commit_timestamp_ms: int
    log_offset: int
    """Where the record that set it sits in the coordinator partition's log."""


class CommittedOffsets:
    """Every committed offset of the groups of one coordinator partition."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, str], dict[TopicPartition, CommittedOffset]] = {}

    @classmethod
    def replay(cls, records: Iterable[tuple[int, bytes]]) -> CommittedOffsets:
        """The table of a log: ``records`` are ``(log offset, record bytes)``;
        records other than offset commits set nothing. Raises
        ``OffsetRecordError`` (naming the log offset) on a bad record."""
        table = cls()
        for log_offset, data in records:
            record = decode_at(log_offset, data)
            if isinstance(record, OffsetCommitRecord):
                table.apply(log_offset, record)
        return table

    def apply(self, log_offset: int, record: OffsetCommitRecord) -> bool:
        """Apply one record found at ``log_offset``; False when a record at a
        later (or the same) log offset already set that key."""
        offsets = self._groups.setdefault((record.tenant, record.group), {})
        tp = record.topic_partition
        current = offsets.get(tp)
        if current is not None and current.log_offset >= log_offset:
            return False
        offsets[tp] = CommittedOffset(record.offset, record.metadata, record.commit_timestamp_ms, log_offset)
        return True

    def fetch(
        self, tenant: str, group: str, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, CommittedOffset]:
        """The group's committed offsets, sorted by partition: all of them, or
        those of ``partitions`` that have one (no entry means no commit)."""
        offsets = self._groups.get((tenant, group), {})
        keys = sorted(offsets) if partitions is None else sorted(set(partitions) & offsets.keys())
        return {tp: offsets[tp] for tp in keys}

    def has_group(self, tenant: str, group: str) -> bool:
        return bool(self._groups.get((tenant, group)))

    def groups(self, tenant: str) -> list[str]:
        """The tenant's groups that have at least one committed offset, sorted."""
        return sorted(
            group for (owner, group), offsets in self._groups.items() if owner == tenant and offsets
        )

    def snapshot(self) -> Mapping[tuple[str, str, TopicPartition], CommittedOffset]:
        """Every entry, for comparing two tables."""
        return MappingProxyType(
            {
                (tenant, group, tp): entry
                for (tenant, group), offsets in self._groups.items()
                for tp, entry in offsets.items()
            }
        )


def decode_at(log_offset: int, data: bytes) -> OffsetCommitRecord | CoordinatorStarted:
    """``decode_record``, its error naming where the record sits."""
    try:
        return decode_record(data)
    except OffsetRecordError as error:
        raise OffsetRecordError(f"log offset {log_offset}: {error}") from None
