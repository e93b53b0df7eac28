"""Raft messages on the wire: ``raft.types.Message`` <-> ``raftlog.internal.v1``.

The Raft core never sees protobuf; the transport converts here, at the
boundary, in both directions.

Invariants:

- Round trip: ``from_proto(to_proto(g, m, quiesce=q))`` equals
  ``InboundMessage(g, m, q)`` for every message the core can produce, and so
  does ``decode_batch(encode_batch(seq, [encode_group_message(g, m, ...)]))``.
- Decoding validates what the protobuf schema cannot: a known message type,
  non-zero ``to``/``sender``, a known entry kind, non-zero node ids in a
  snapshot's membership. Anything else raises ``WireError`` naming the field;
  nothing half-decoded escapes. Encoding applies the same checks, so a node
  never sends what its peers would refuse.
- The transport does not interpret ids beyond that: whether ``to`` is really
  this node is the node's business.
- Payload bytes are copied as little as protobuf allows. Encoding sets each
  entry's ``data`` straight into the message being built (one copy into
  protobuf memory) and serializes it once per message, when the message is
  queued; a batch is then framed by hand from those serialized messages with
  a single ``join`` (no re-encoding of entries at flush time, no protobuf
  object per batch). Decoding parses a batch once; reading ``data`` from the
  parsed message makes the ``bytes`` object the Raft core keeps.

Batch framing: a ``RaftBatch`` is ``repeated GroupMessage messages = 1``,
``uint64 seq = 2`` and an optional ``LeaderAnnouncement leaders = 3``; its
encoding is, per message, the tag byte ``0x0A``, the message length as a
varint and the serialized ``GroupMessage``, followed by the tag byte ``0x10``
and ``seq`` as a varint, then (when there is one) the tag byte ``0x1A``, the
announcement's length as a varint and the serialized announcement. That is
exactly what ``RaftBatch.SerializeToString`` produces (checked by the
tests), so any protobuf parser reads it.

Leader announcements (cluster/routing/) ride the batches: ``encode_leaders``
serializes one ``(group, term)`` list once for every peer; decoding checks
that its two lists have the same length and positive ids and terms, and
drops only the announcement (``errors`` says why) when they do not.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from google.protobuf.message import DecodeError

from raft.types import (
    ConfState,
    Entry,
    EntryKind,
    Message,
    MessageType,
    Snapshot,
    SnapshotMetadata,
)
from raftlog.internal.v1 import raft_pb2

__all__ = [
    "DecodedBatch",
    "InboundMessage",
    "WireError",
    "decode_batch",
    "encode_batch",
    "encode_group_message",
    "encode_leaders",
    "from_proto",
    "to_proto",
]


class WireError(ValueError):
    """A message that cannot cross the wire: it violates a rule of the Raft
    message format (see the module docstring). The text names the field."""


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """One Raft message received for ``group`` on this node. ``quiesce`` is
    set on the heartbeats of a leader that is about to hibernate."""

    group: int
    message: Message
    quiesce: bool = False


@dataclass(frozen=True, slots=True)
class DecodedBatch:
    """One received ``RaftBatch``: its stream position, the messages that
    decoded, and one line per message (or announcement) that did not (those
    are dropped). ``leaders``: the sender's leader announcement as
    ``(group, term)`` pairs, None when the batch carries none."""

    seq: int
    messages: list[InboundMessage]
    errors: list[str]
    leaders: list[tuple[int, int]] | None = None


# Lookup tables instead of calling the enums: a dict hit is several times
# cheaper than ``MessageType(n)`` and gives None (not an exception) for an
# unknown number.
_MESSAGE_TYPES: dict[int, MessageType] = {int(t): t for t in MessageType}
_ENTRY_KINDS: dict[int, EntryKind] = {int(k): k for k in EntryKind}

_GROUP_MESSAGE_TAG = b"\x0a"  # field 1 (messages), wire type 2 (length-delimited)
_SEQ_TAG = b"\x10"  # field 2 (seq), wire type 0 (varint)
_LEADERS_TAG = b"\x1a"  # field 3 (leaders), wire type 2 (length-delimited)


# --- encoding -----------------------------------------------------------------------------------


def to_proto(
    group: int, message: Message, *, quiesce: bool = False, out: raft_pb2.GroupMessage | None = None
) -> raft_pb2.GroupMessage:
    """``message`` for ``group`` as a protobuf ``GroupMessage``, written into
    ``out`` (which must be empty, e.g. ``batch.messages.add()``) or a new one.

    Raises ``WireError`` for a message peers would refuse (zero ids, an
    unknown type or entry kind) or a negative number."""
    if message.to <= 0 or message.sender <= 0:
        raise WireError(f"message ids must be positive: to={message.to} sender={message.sender}")
    if message.type not in _MESSAGE_TYPES:
        raise WireError(f"unknown message type {message.type!r}")
    gm = raft_pb2.GroupMessage() if out is None else out
    try:
        gm.group = group
        if quiesce:
            gm.quiesce = True
        pb = gm.message
        # Plain ints: the protobuf enum fields accept any int; the Python
        # IntEnum values are the wire numbers (tests/test_proto.py).
        pb.type = int(message.type)  # type: ignore[assignment]
        pb.to = message.to
        pb.sender = message.sender
        # Only non-default fields are set: proto3 would not send defaults
        # anyway, and each skipped assignment is a C call saved.
        if message.term:
            pb.term = message.term
        if message.log_term:
            pb.log_term = message.log_term
        if message.index:
            pb.index = message.index
        if message.commit:
            pb.commit = message.commit
        if message.reject:
            pb.reject = True
        if message.reject_hint:
            pb.reject_hint = message.reject_hint
        if message.context:
            pb.context = message.context
        if message.entries:
            add = pb.entries.add
            for entry in message.entries:
                if entry.kind not in _ENTRY_KINDS:
                    raise WireError(f"unknown entry kind {entry.kind!r} at index {entry.index}")
                add(term=entry.term, index=entry.index, kind=int(entry.kind), data=entry.data)
        if message.snapshot is not None:
            _snapshot_to_proto(message.snapshot, pb.snapshot)
    except (ValueError, TypeError) as exc:
        if isinstance(exc, WireError):
            raise
        raise WireError(f"cannot encode {message.type!r} for group {group}: {exc}") from exc
    return gm


def _snapshot_to_proto(snapshot: Snapshot, out: raft_pb2.Snapshot) -> None:
    out.SetInParent()  # present even when every field is a default: None != Snapshot()
    meta = snapshot.metadata
    out.metadata.SetInParent()
    if meta.index:
        out.metadata.index = meta.index
    if meta.term:
        out.metadata.term = meta.term
    conf = meta.conf_state
    if 0 in conf.voters or 0 in conf.learners:
        raise WireError("snapshot conf_state holds node id 0")
    out.metadata.conf_state.SetInParent()
    # Sorted: a frozenset's order is arbitrary, and a stable encoding makes
    # equal snapshots encode to equal bytes.
    out.metadata.conf_state.voters.extend(sorted(conf.voters))
    out.metadata.conf_state.learners.extend(sorted(conf.learners))
    if snapshot.data:
        out.data = snapshot.data


def encode_group_message(group: int, message: Message, *, quiesce: bool = False) -> bytes:
    """The serialized ``GroupMessage`` (what ``encode_batch`` frames)."""
    return to_proto(group, message, quiesce=quiesce).SerializeToString()


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_leaders(groups_and_terms: Iterable[tuple[int, int]]) -> bytes:
    """A serialized ``LeaderAnnouncement``: the sender leads each
    ``(group, term)``. ``WireError`` for a non-positive group or term."""
    announcement = raft_pb2.LeaderAnnouncement()
    groups: list[int] = []
    terms: list[int] = []
    for group, term in groups_and_terms:
        if group <= 0 or term <= 0:
            raise WireError(f"leader announcement: group {group} term {term} must both be positive")
        groups.append(group)
        terms.append(term)
    announcement.groups.extend(groups)
    announcement.terms.extend(terms)
    return announcement.SerializeToString()


def encode_batch(seq: int, encoded_messages: Iterable[bytes], leaders: bytes = b"") -> bytes:
    """A serialized ``RaftBatch`` holding ``encoded_messages`` (each from
    ``encode_group_message``) in order, with ``seq`` and, unless empty, the
    ``leaders`` announcement (from ``encode_leaders``). One copy of the
    payload (the join); see the module docstring for the framing."""
    if seq < 0:
        raise WireError(f"batch seq must not be negative: {seq}")
    parts: list[bytes] = []
    append = parts.append
    for body in encoded_messages:
        append(_GROUP_MESSAGE_TAG)
        append(_varint(len(body)))
        append(body)
    if seq:
        append(_SEQ_TAG)
        append(_varint(seq))
    if leaders:
        append(_LEADERS_TAG)
        append(_varint(len(leaders)))
        append(leaders)
    return b"".join(parts)


# --- decoding -----------------------------------------------------------------------------------


def from_proto(gm: raft_pb2.GroupMessage) -> InboundMessage:
    """A received ``GroupMessage`` as an ``InboundMessage``; ``WireError``
    if it breaks a rule of the format (the text names the field)."""
    pb = gm.message
    message_type = _MESSAGE_TYPES.get(pb.type)
    if message_type is None:
        raise WireError(f"group {gm.group}: unknown message type {pb.type}")
    if pb.to == 0 or pb.sender == 0:
        raise WireError(
            f"group {gm.group}: {message_type.name} with a zero id (to={pb.to} sender={pb.sender})"
        )
    entries: tuple[Entry, ...] = ()
    if pb.entries:
        decoded: list[Entry] = []
        for e in pb.entries:
            kind = _ENTRY_KINDS.get(e.kind)
            if kind is None:
                raise WireError(f"group {gm.group}: entry {e.index} has unknown kind {e.kind}")
            decoded.append(Entry(e.term, e.index, kind, e.data))
        entries = tuple(decoded)
    snapshot = _snapshot_from_proto(gm.group, pb.snapshot) if pb.HasField("snapshot") else None
    message = Message(
        message_type,
        pb.to,
        pb.sender,
        pb.term,
        pb.log_term,
        pb.index,
        entries,
        pb.commit,
        pb.reject,
        pb.reject_hint,
        snapshot,
        pb.context,
    )
    return InboundMessage(gm.group, message, gm.quiesce)


def _snapshot_from_proto(group: int, pb: raft_pb2.Snapshot) -> Snapshot:
    meta = pb.metadata
    voters = frozenset(meta.conf_state.voters)
    learners = frozenset(meta.conf_state.learners)
    if 0 in voters or 0 in learners:
        raise WireError(f"group {group}: snapshot conf_state holds node id 0")
    return Snapshot(SnapshotMetadata(meta.index, meta.term, ConfState(voters, learners)), pb.data)


def decode_batch(data: bytes) -> DecodedBatch:
    """Parse a serialized ``RaftBatch``. A message that fails ``from_proto``
    is left out and described in ``errors``; the others are kept in order.
    Raises ``WireError`` only when the bytes are not a ``RaftBatch`` at all."""
    try:
        batch = raft_pb2.RaftBatch.FromString(data)
    except DecodeError as exc:
        raise WireError(f"not a RaftBatch ({len(data)} bytes): {exc}") from exc
    messages: list[InboundMessage] = []
    errors: list[str] = []
    for gm in batch.messages:
        try:
            messages.append(from_proto(gm))
        except WireError as exc:
            errors.append(str(exc))
    leaders = None
    if batch.HasField("leaders"):
        try:
            leaders = _leaders_from_proto(batch.leaders)
        except WireError as exc:
            errors.append(str(exc))
    return DecodedBatch(batch.seq, messages, errors, leaders)


def _leaders_from_proto(pb: raft_pb2.LeaderAnnouncement) -> list[tuple[int, int]]:
    groups, terms = pb.groups, pb.terms
    if len(groups) != len(terms):
        raise WireError(f"leader announcement: {len(groups)} groups but {len(terms)} terms")
    pairs = list(zip(groups, terms, strict=True))
    if any(group == 0 or term == 0 for group, term in pairs):
        raise WireError("leader announcement: a group id or term is 0")
    return pairs
