"""The header of every controller command: ``kind u8 | version u8``.

What the two bytes mean and which of them this code reads: the kind numbers
(``CommandKind``), the newest version of each kind (``NEWEST_VERSIONS``,
``COMMAND_VERSION`` for the rest), and the errors a decode raises. The
fields after the header, per kind and version, are tabled in commands.py,
which writes and reads them.

Invariants:

- A kind number is never reused. A change to a kind's fields gets a new
  version number and the old version's bytes never change; a node reads
  only the versions it knows (``NEWEST_VERSIONS``).
- ``read_header`` returns only a kind it was given a name for and a
  version from 1 to that kind's newest. Otherwise it raises
  ``MalformedCommand`` for bytes no version of this code writes (shorter
  than the header, version 0: the state machine rejects the entry with
  ``INVALID_COMMAND``, the same on every node) or ``UnsupportedCommand``
  for a kind or version this code does not know, written by a newer node
  (the controller replica must stop rather than apply the log differently
  from its upgraded peers).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping

from cluster.primitives.wire import Writer

__all__ = [
    "COMMAND_VERSION",
    "HEADER_BYTES",
    "NEWEST_VERSIONS",
    "CommandError",
    "CommandKind",
    "MalformedCommand",
    "UnsupportedCommand",
    "read_header",
    "write_header",
]

HEADER_BYTES = 2
"""``kind u8 | version u8``."""

COMMAND_VERSION = 1
"""The first version of every kind (most are still at it)."""


class CommandKind(enum.IntEnum):
    CREATE_TENANT = 1
    DELETE_TENANT = 2
    CREATE_API_KEY = 3
    REVOKE_API_KEY = 4
    CREATE_TOPIC = 5
    DELETE_TOPIC = 6
    REGISTER_NODE = 7
    SET_NODE_LIVENESS = 8
    DECOMMISSION_NODE = 9
    REMOVE_NODE = 10
    ADD_LEARNER = 11
    PROMOTE_LEARNER = 12
    REMOVE_REPLICA = 13
    ALTER_TOPIC_CONFIG = 14
    SET_QUOTA = 15
    SET_API_KEY_EXPIRY = 16


NEWEST_VERSIONS: dict[int, int] = {CommandKind.CREATE_TOPIC: 2, CommandKind.CREATE_API_KEY: 2}
"""Kinds past their first version: the newest version this code reads."""


class CommandError(ValueError):
    """Entry data that is not a command this code can apply."""


class MalformedCommand(CommandError):
    """Bytes no version of the format produces."""


class UnsupportedCommand(CommandError):
    """A command kind or version newer than this code: stop, do not skip."""


def write_header(kind: CommandKind, version: int) -> Writer:
    """A writer holding the header, for the command's fields to follow."""
    return Writer().u8(kind).u8(version)


def read_header(data: bytes, names: Mapping[int, str]) -> tuple[int, int]:
    """The kind and version of one entry's ``data``. ``names``: the kinds
    this code reads, each with its command's name (for messages). Raises as
    the module docstring says."""
    if len(data) < HEADER_BYTES:
        raise MalformedCommand(f"{len(data)} bytes of entry data is shorter than a command header")
    kind, version = data[0], data[1]
    name = names.get(kind)
    if name is None:
        raise UnsupportedCommand(
            f"unknown controller command kind {kind}: written by a newer version of raftlog? "
            "Upgrade this node before it applies the metadata log."
        )
    if version == 0:
        raise MalformedCommand(f"{name} version 0: no version of raftlog writes it")
    newest = NEWEST_VERSIONS.get(kind, COMMAND_VERSION)
    if version > newest:
        raise UnsupportedCommand(
            f"{name} version {version} (this code reads versions 1-{newest}): "
            "written by a newer version of raftlog? Upgrade this node before it applies the metadata log."
        )
    return kind, version
