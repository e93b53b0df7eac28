"""The data of a partition's Raft entries: commands for its state machine.

Every NORMAL Raft entry with data in a partition's log is one command. Empty
entries (a new leader's no-op) and CONF_CHANGE entries are not commands; the
replica driver hands those to ``PartitionStateMachine.apply_noop``.

Layout, all integers big-endian:

====== ==== ====================== =====================================
offset size field                  meaning
====== ==== ====================== =====================================
0      1    kind u8                ``CommandKind`` (1 = produce)
1      1    version u8             layout version of that kind (1)
2      8    append_time_ms i64     produce: the leader's wall clock when
                                   it proposed the entry
10     ...  batch                  produce: one record batch, as received
====== ==== ====================== =====================================

Compact (kind 2, version 1): ask every replica to compact its copy of the
partition by key (partitions/compaction.py). All integers big-endian i64:

====== ==== ====================== =====================================
offset size field                  meaning
====== ==== ====================== =====================================
0      1    kind u8                2
1      1    version u8             1
2      8    clean_up_to_offset     the last offset to compact (every
                                   record after it is kept)
10     8    now_ms                 the leader's clock (tombstone expiry)
18     8    delete_retention_ms    how long a tombstone survives
26     8    tombstone_floor_index  only tombstones in Raft entries at or
                                   below it may be dropped: every member
                                   held them when the leader proposed
34     8    max_map_entries        the offset map's bound (keys per pass)
====== ==== ====================== =====================================

Invariants:

- The batch bytes are copied once, behind a 10-byte prefix, and never
  re-encoded; ``decode_command`` hands them back as a zero-copy
  ``memoryview`` of the entry data.
- Everything a replica needs to apply the entry deterministically is inside
  it: the append time is the leader's, so every replica (and every replay
  after a restart) computes the same timestamps, expiries and offsets.
- ``decode_command`` raises only ``MalformedCommand`` (bytes that no version
  of this code wrote: the state machine rejects the entry, the same on every
  replica) or ``UnsupportedCommand`` (a kind or version this code does not
  know, written by a newer node: the replica must stop rather than apply the
  log differently from its upgraded peers).
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from raftlog.v1.record_batch import BytesLike

__all__ = [
    "COMPACT_VERSION",
    "PRODUCE_VERSION",
    "Command",
    "CommandError",
    "CommandKind",
    "CompactCommand",
    "MalformedCommand",
    "ProduceCommand",
    "UnsupportedCommand",
    "decode_command",
    "decode_produce",
    "encode_compact",
    "encode_produce",
]


class CommandKind(enum.IntEnum):
    PRODUCE = 1
    COMPACT = 2


PRODUCE_VERSION = 1
COMPACT_VERSION = 1

_PRODUCE = struct.Struct(">BBq")
_COMPACT = struct.Struct(">BBqqqqq")
_KINDS = frozenset(int(kind) for kind in CommandKind)


class CommandError(ValueError):
    """Entry data that is not a command this code can apply."""


class MalformedCommand(CommandError):
    """Bytes no version of the format produces (too short for its header)."""


class UnsupportedCommand(CommandError):
    """A command kind or version newer than this code: stop, do not skip."""


@dataclass(frozen=True, slots=True)
class ProduceCommand:
    """Append one record batch. ``batch`` is a view into the entry data."""

    append_time_ms: int
    batch: memoryview


@dataclass(frozen=True, slots=True)
class CompactCommand:
    """Compact the partition by key up to ``clean_up_to_offset`` (see the
    module docstring's table)."""

    clean_up_to_offset: int
    now_ms: int
    delete_retention_ms: int
    tombstone_floor_index: int
    max_map_entries: int


Command = ProduceCommand | CompactCommand
"""Every command kind."""


def encode_compact(command: CompactCommand) -> bytes:
    """The entry data of ``command``. Raises ``ValueError`` for values the
    format cannot hold or that make no sense."""
    c = command
    if c.clean_up_to_offset < -1 or c.now_ms < 0 or c.delete_retention_ms < 0:
        raise ValueError(f"invalid compact command {c}")
    if c.tombstone_floor_index < 0 or c.max_map_entries < 1:
        raise ValueError(f"invalid compact command {c}")
    return _COMPACT.pack(
        CommandKind.COMPACT,
        COMPACT_VERSION,
        c.clean_up_to_offset,
        c.now_ms,
        c.delete_retention_ms,
        c.tombstone_floor_index,
        c.max_map_entries,
    )


def _decode_compact(data: bytes) -> CompactCommand:
    if len(data) < 2:
        raise MalformedCommand(f"compact command of {len(data)} bytes has no version")
    if data[1] != COMPACT_VERSION:
        raise UnsupportedCommand(
            f"compact command version {data[1]} (this code reads {COMPACT_VERSION}): "
            "written by a newer version of raftlog?"
        )
    if len(data) != _COMPACT.size:
        raise MalformedCommand(f"compact command of {len(data)} bytes, expected {_COMPACT.size}")
    _, _, upto, now_ms, retention, floor, entries = _COMPACT.unpack(data)
    command = CompactCommand(upto, now_ms, retention, floor, entries)
    if upto < -1 or now_ms < 0 or retention < 0 or floor < 0 or entries < 1:
        raise MalformedCommand(f"compact command with out-of-range values: {command}")
    return command


def encode_produce(batch: BytesLike, append_time_ms: int) -> bytes:
    """The entry data that appends ``batch`` (already validated by the
    leader) with the leader's wall-clock ``append_time_ms``."""
    if not 0 <= append_time_ms < 2**63:
        raise ValueError(f"append_time_ms {append_time_ms} is not a valid timestamp")
    return _PRODUCE.pack(CommandKind.PRODUCE, PRODUCE_VERSION, append_time_ms) + batch


def decode_command(data: bytes) -> Command:
    """The command in one entry's data."""
    if not data:
        raise MalformedCommand("empty entry data is a no-op, not a command")
    kind = data[0]
    if kind not in _KINDS:
        raise UnsupportedCommand(f"unknown command kind {kind}: written by a newer version of raftlog?")
    if kind == CommandKind.COMPACT:
        return _decode_compact(data)
    if len(data) < _PRODUCE.size:
        raise MalformedCommand(
            f"produce command of {len(data)} bytes is shorter than its {_PRODUCE.size}-byte header"
        )
    _, version, append_time_ms = _PRODUCE.unpack_from(data)
    if version != PRODUCE_VERSION:
        raise UnsupportedCommand(
            f"produce command version {version} (this code reads {PRODUCE_VERSION}): "
            "written by a newer version of raftlog?"
        )
    if append_time_ms < 0:
        raise MalformedCommand(f"produce command with negative append time {append_time_ms}")
    return ProduceCommand(append_time_ms, memoryview(data)[_PRODUCE.size :])


def decode_produce(data: bytes) -> ProduceCommand:
    """The produce command in an entry the state machine appended (a
    reader's shortcut); raises ``MalformedCommand`` for any other kind."""
    command = decode_command(data)
    if not isinstance(command, ProduceCommand):
        raise MalformedCommand(f"expected a produce command, found {type(command).__name__}")
    return command
