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
    "PRODUCE_VERSION",
    "Command",
    "CommandError",
    "CommandKind",
    "MalformedCommand",
    "ProduceCommand",
    "UnsupportedCommand",
    "decode_command",
    "encode_produce",
]


class CommandKind(enum.IntEnum):
    PRODUCE = 1


PRODUCE_VERSION = 1

_PRODUCE = struct.Struct(">BBq")
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


Command = ProduceCommand
"""Every command kind (a union once there is more than one)."""


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
