"""The coordinator partition's log records, and the committed-offsets table
rebuilt from them.

A committed offset is, as in Kafka, the offset of the *next* record the group
should consume from that partition.

An *entry* is what ``OffsetsLog.append`` takes and ``read_all`` gives back:
one record's bytes. The log stores each as a keyed record (``stored_form``)
so that a compacted ``__consumer_offsets`` keeps the last record per key;
``entry_of`` turns a stored record back into its entry.

Record format, version 2 (written; big-endian, fields as in
``cluster.primitives.wire``; ``text`` is a u16 length and UTF-8 bytes;
``count`` is a u32 number of items that follow)::

    version u8 = 2 | kind u8 | body

    kind 1, offset commit (key: commit key):
      tenant text | group text | topic text | partition u32
      | offset u64 | commit_timestamp_ms i64 | metadata text

    kind 2, coordinator started (key: coordinator key; appended by each new
    leader before it serves, before it admits a member with a longer
    session than the log allows, and once the failover fence it started
    with has passed; see ``coordinator`` and ``takeover``):
      term u64 | max_session_timeout_ms u32 | unrecorded_holders flag

    kind 3, group metadata (key: group key; the whole group, see
    ``membership.GroupSnapshot``; appended before any answer that depends on
    it, ``takeover``):
      tenant text | group text | epoch u64 | assignment_epoch u64
      | count × (topic text | partitions u32)        -- the target's metadata
      | count × member, each:
          member_id text | client_id text | count × topic text
          | session_timeout_ms u32 | rebalance_timeout_ms u32
          | join_epoch u64 | epoch u64 | previous_epoch i64 | fenced flag
          | count × (topic text | partition u32 | given at epoch u64)  -- assigned
          | count × (topic text | partition u32 | given at epoch u64)  -- revoking
          | count × (topic text | partition u32)                       -- target

    kind 4, group metadata deleted (key: group key): tenant text | group text.
      Only an entry: the log stores it as a tombstone (the group key with a
      null value), and a tombstone reads back as this entry.

Version 1 (read, never written: logs of older nodes) has kinds 1 and 2 with
the same bodies except that kind 2 has no ``unrecorded_holders`` flag (a
coordinator of that version did not record its groups, so it reads as
true), and its records were stored without keys.

Keys, fixed forever (compaction compares them across versions)::

    commit key      u8 = 1 | tenant text | group text | topic text | partition u32
    coordinator key u8 = 2
    group key       u8 = 3 | tenant text | group text

The tenant is part of the keys because one coordinator partition serves the
groups of many tenants, and topic names are per tenant. The coordinator
key is one per partition: each kind-2 record carries the longest session
the log allows so far, so the last one is all a compacted log needs. An
unknown version or kind is an error, never skipped: a node that cannot
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
from cluster.groups.membership import GroupSnapshot, MemberSnapshot
from cluster.primitives.wire import Reader, WireError, Writer

__all__ = [
    "KIND_COORDINATOR_STARTED",
    "KIND_GROUP_METADATA",
    "KIND_GROUP_METADATA_DELETED",
    "KIND_OFFSET_COMMIT",
    "RECORD_VERSION",
    "CommittedOffset",
    "CommittedOffsets",
    "CoordinatorStarted",
    "GroupMetadataDeleted",
    "GroupMetadataRecord",
    "OffsetCommitRecord",
    "OffsetRecordError",
    "OffsetsLogRecord",
    "decode_at",
    "decode_record",
    "entry_of",
    "stored_form",
]

RECORD_VERSION = 2
KIND_OFFSET_COMMIT = 1
KIND_COORDINATOR_STARTED = 2
KIND_GROUP_METADATA = 3
KIND_GROUP_METADATA_DELETED = 4

_KEY_COMMIT = 1
_KEY_COORDINATOR = 2
_KEY_GROUP = 3


class OffsetRecordError(ValueError):
    """Bytes that are not a record this version can read."""


def _group_key(tenant: str, group: str) -> bytes:
    return bytes(Writer().u8(_KEY_GROUP).text(tenant).text(group))


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

    def key(self) -> bytes:
        return bytes(
            Writer().u8(_KEY_COMMIT).text(self.tenant).text(self.group).text(self.topic).u32(self.partition)
        )

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
            raise OffsetRecordError(f"a {type(record).__name__} record, not an offset commit")
        return record


@dataclass(frozen=True, slots=True)
class CoordinatorStarted:
    """The leader of ``term`` serves the partition's groups, letting members
    keep sessions of up to ``max_session_timeout_ms``. ``unrecorded_holders``:
    members of a coordinator that did not record its groups (an older
    version) may still hold partitions, so a successor must wait out the
    failover fence (``takeover``); cleared by a record of the coordinator
    that waited it out."""

    term: int
    max_session_timeout_ms: int
    unrecorded_holders: bool = False

    def key(self) -> bytes:
        return bytes(Writer().u8(_KEY_COORDINATOR))

    def encode(self) -> bytes:
        return bytes(
            Writer()
            .u8(RECORD_VERSION)
            .u8(KIND_COORDINATOR_STARTED)
            .u64(self.term)
            .u32(self.max_session_timeout_ms)
            .flag(self.unrecorded_holders)
        )


@dataclass(frozen=True, slots=True)
class GroupMetadataRecord:
    """One group's membership as a successor needs it (``takeover``)."""

    tenant: str
    group: str
    snapshot: GroupSnapshot

    def key(self) -> bytes:
        return _group_key(self.tenant, self.group)

    def encode(self) -> bytes:
        snap = self.snapshot
        out = Writer().u8(RECORD_VERSION).u8(KIND_GROUP_METADATA).text(self.tenant).text(self.group)
        out.u64(snap.epoch).u64(snap.assignment_epoch).u32(len(snap.metadata))
        for topic, count in sorted(snap.metadata.items()):
            out.text(topic).u32(count)
        out.u32(len(snap.members))
        for m in snap.members:
            out.text(m.member_id).text(m.client_id).u32(len(m.topics))
            for topic in sorted(m.topics):
                out.text(topic)
            out.u32(m.session_timeout_ms).u32(m.rebalance_timeout_ms)
            out.u64(m.join_epoch).u64(m.epoch).i64(m.previous_epoch).flag(m.fenced)
            for held in (m.assigned, m.revoking):
                out.u32(len(held))
                for tp, given_at in sorted(held.items()):
                    out.text(tp.topic).u32(tp.partition).u64(given_at)
            target = sorted(snap.target.get(m.member_id, ()))
            out.u32(len(target))
            for tp in target:
                out.text(tp.topic).u32(tp.partition)
        return bytes(out)

    @staticmethod
    def _decode_body(reader: Reader) -> GroupMetadataRecord:
        tenant, group = reader.text("tenant"), reader.text("group")
        epoch, assignment_epoch = reader.u64("epoch"), reader.u64("assignment epoch")
        metadata = {reader.text("topic"): reader.u32("partitions") for _ in range(reader.u32("topics"))}
        members: list[MemberSnapshot] = []
        target: dict[str, frozenset[TopicPartition]] = {}
        for _ in range(reader.u32("members")):
            member_id, client_id = reader.text("member id"), reader.text("client id")
            topics = frozenset(reader.text("topic") for _ in range(reader.u32("topics")))
            session, rebalance = reader.u32("session timeout"), reader.u32("rebalance timeout")
            join_epoch, member_epoch = reader.u64("join epoch"), reader.u64("epoch")
            previous_epoch, fenced = reader.i64("previous epoch"), reader.flag("fenced")
            held: list[dict[TopicPartition, int]] = []
            for what in ("assigned", "revoking"):
                held.append(
                    {
                        TopicPartition(reader.text("topic"), reader.u32("partition")): reader.u64("epoch")
                        for _ in range(reader.u32(what))
                    }
                )
            wanted = frozenset(
                TopicPartition(reader.text("topic"), reader.u32("partition"))
                for _ in range(reader.u32("target"))
            )
            if not fenced:  # a fenced member is outside the target (membership)
                target[member_id] = wanted
            members.append(
                MemberSnapshot(
                    member_id=member_id,
                    client_id=client_id,
                    topics=topics,
                    session_timeout_ms=session,
                    rebalance_timeout_ms=rebalance,
                    join_epoch=join_epoch,
                    epoch=member_epoch,
                    previous_epoch=previous_epoch,
                    assigned=MappingProxyType(held[0]),
                    revoking=MappingProxyType(held[1]),
                    fenced=fenced,
                )
            )
        snapshot = GroupSnapshot(
            epoch=epoch,
            assignment_epoch=assignment_epoch,
            metadata=MappingProxyType(metadata),
            target=MappingProxyType(target),
            members=tuple(members),
        )
        return GroupMetadataRecord(tenant, group, snapshot)


@dataclass(frozen=True, slots=True)
class GroupMetadataDeleted:
    """The group has no members any more (stored as a tombstone)."""

    tenant: str
    group: str

    def key(self) -> bytes:
        return _group_key(self.tenant, self.group)

    def encode(self) -> bytes:
        return bytes(
            Writer().u8(RECORD_VERSION).u8(KIND_GROUP_METADATA_DELETED).text(self.tenant).text(self.group)
        )


OffsetsLogRecord = OffsetCommitRecord | CoordinatorStarted | GroupMetadataRecord | GroupMetadataDeleted


def decode_record(data: bytes) -> OffsetsLogRecord:
    reader = Reader(data, "offsets log record")
    try:
        version = reader.u8("version")
        if version not in (1, RECORD_VERSION):
            raise OffsetRecordError(
                f"record version {version}; this node reads versions 1 and {RECORD_VERSION}"
            )
        kind = reader.u8("kind")
        record: OffsetsLogRecord
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
                term=reader.u64("term"),
                max_session_timeout_ms=reader.u32("max session timeout"),
                # A version-1 coordinator recorded no group: its members are unknown.
                unrecorded_holders=reader.flag("unrecorded holders") if version == RECORD_VERSION else True,
            )
        elif kind == KIND_GROUP_METADATA and version == RECORD_VERSION:
            record = GroupMetadataRecord._decode_body(reader)
        elif kind == KIND_GROUP_METADATA_DELETED and version == RECORD_VERSION:
            record = GroupMetadataDeleted(reader.text("tenant"), reader.text("group"))
        else:
            raise OffsetRecordError(f"record kind {kind} of version {version}; this node does not read it")
        reader.finish()
    except WireError as error:
        raise OffsetRecordError(str(error)) from None
    return record


def stored_form(entry: bytes) -> tuple[bytes | None, bytes | None]:
    """``(key, value)`` the log stores for ``entry``: a deletion becomes a
    tombstone (null value). Version-1 entries (never written any more) have
    no key."""
    record = decode_record(entry)
    if entry[0] != RECORD_VERSION:
        return None, entry
    if isinstance(record, GroupMetadataDeleted):
        return record.key(), None
    return record.key(), entry


def entry_of(key: bytes | None, value: bytes | None) -> bytes:
    """The entry a stored record holds (``stored_form`` reversed)."""
    if value is not None:
        return value
    if key is None:
        raise OffsetRecordError("a record with neither key nor value")
    reader = Reader(key, "offsets log key")
    try:
        if reader.u8("key kind") != _KEY_GROUP:
            raise OffsetRecordError("a tombstone whose key is not a group key")
        deleted = GroupMetadataDeleted(reader.text("tenant"), reader.text("group"))
        reader.finish()
    except WireError as error:
        raise OffsetRecordError(str(error)) from None
    return deleted.encode()


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


def decode_at(log_offset: int, data: bytes) -> OffsetsLogRecord:
    """``decode_record``, its error naming where the record sits."""
    try:
        return decode_record(data)
    except OffsetRecordError as error:
        raise OffsetRecordError(f"log offset {log_offset}: {error}") from None
