"""Value types of the Raft core: entries, messages, hard state, snapshots.

Invariants:
- Every type here is a frozen, slotted dataclass: once built it never changes,
  so a message or entry can be shared between the core, storage and the
  network without copying.
- Node ids are positive ints; ``NO_NODE`` (0) means "nobody" (no vote, no
  known leader).
- Log indexes start at 1; index 0 with term 0 is the empty log's sentinel.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

NO_NODE = 0


class EntryKind(enum.IntEnum):
    """What an entry carries: application data or a membership change."""

    NORMAL = 0
    CONF_CHANGE = 1


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. ``data`` is opaque to the core (for NORMAL entries)."""

    term: int
    index: int
    kind: EntryKind = EntryKind.NORMAL
    data: bytes = b""

    def size(self) -> int:
        """Approximate bytes this entry costs in a message or in memory."""
        return len(self.data) + 16


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before the node promises anything based on it."""

    term: int = 0
    vote: int = NO_NODE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class ConfState:
    """The membership: voters decide elections and commits, learners only
    receive the log."""

    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()

    def all_nodes(self) -> frozenset[int]:
        return self.voters | self.learners


class ConfChangeType(enum.IntEnum):
    """One-server-at-a-time membership changes (see raft/membership.py)."""

    ADD_VOTER = 0  # also promotes an existing learner
    ADD_LEARNER = 1  # also demotes an existing voter
    REMOVE_NODE = 2


@dataclass(frozen=True, slots=True)
class ConfChange:
    type: ConfChangeType
    node_id: int
    context: bytes = b""


@dataclass(frozen=True, slots=True)
class SnapshotMetadata:
    index: int = 0
    term: int = 0
    conf_state: ConfState = field(default_factory=ConfState)


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A state-machine image covering the log up to ``metadata.index``."""

    metadata: SnapshotMetadata = field(default_factory=SnapshotMetadata)
    data: bytes = b""

    def is_empty(self) -> bool:
        return self.metadata.index == 0


class MessageType(enum.IntEnum):
    APPEND = 1
    APPEND_RESPONSE = 2
    VOTE = 3
    VOTE_RESPONSE = 4
    PRE_VOTE = 5
    PRE_VOTE_RESPONSE = 6
    HEARTBEAT = 7
    HEARTBEAT_RESPONSE = 8
    SNAPSHOT = 9
    TIMEOUT_NOW = 10
    READ_INDEX = 11
    READ_INDEX_RESPONSE = 12
    TRANSFER_LEADER = 13


@dataclass(frozen=True, slots=True)
class Message:
    """A message between two members of one Raft group.

    Field use by type (unused fields keep their defaults):
    - APPEND: ``index``/``log_term`` identify the entry before ``entries``;
      ``commit`` is the leader's commit index.
    - APPEND_RESPONSE: ``index`` is the last index now matching (accept) or
      the rejected ``index`` (reject) with ``reject_hint``/``log_term`` giving
      the follower's best guess of where the logs agree.
    - VOTE/PRE_VOTE: ``index``/``log_term`` are the candidate's last entry;
      ``context`` is ``CAMPAIGN_TRANSFER`` for a leader transfer.
    - HEARTBEAT(_RESPONSE): ``commit`` and ``context`` (read-index round);
      ``index`` is the leader's tick count when it sent the heartbeat, echoed
      back so the leader knows how old its lease is.
    - TRANSFER_LEADER: ``index`` is the node to hand leadership to.
    - SNAPSHOT: ``snapshot``.
    - READ_INDEX(_RESPONSE): ``context`` identifies the read; ``index`` is the
      read index in the response.
    """

    type: MessageType
    to: int
    sender: int
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""


CAMPAIGN_TRANSFER = b"raft:transfer"


class Role(enum.IntEnum):
    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile state worth reporting: who leads and what this node is."""

    leader: int = NO_NODE
    role: Role = Role.FOLLOWER


@dataclass(frozen=True, slots=True)
class ReadState:
    """A linearizable read may be served once ``index`` has been applied."""

    index: int
    context: bytes
