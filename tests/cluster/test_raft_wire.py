"""cluster/transport/raft_wire.py: Raft messages to protobuf and back.

Round trips are checked with hypothesis over every field of ``Message``; the
hand-framed batch encoding is checked against protobuf's own; decoding
rejects what the Raft core could never have sent, one message at a time.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.transport.raft_wire import (
    InboundMessage,
    WireError,
    decode_batch,
    encode_batch,
    encode_group_message,
    from_proto,
    to_proto,
)
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

U64 = st.integers(min_value=0, max_value=2**64 - 1)
NODE = st.integers(min_value=1, max_value=2**64 - 1)
SMALL_BYTES = st.binary(max_size=64)

entries = st.builds(
    Entry,
    term=U64,
    index=U64,
    kind=st.sampled_from(EntryKind),
    data=st.one_of(SMALL_BYTES, st.binary(min_size=1000, max_size=3000)),
)
snapshots = st.builds(
    Snapshot,
    metadata=st.builds(
        SnapshotMetadata,
        index=U64,
        term=U64,
        conf_state=st.builds(
            ConfState, voters=st.frozensets(NODE, max_size=5), learners=st.frozensets(NODE, max_size=3)
        ),
    ),
    data=SMALL_BYTES,
)
messages = st.builds(
    Message,
    type=st.sampled_from(MessageType),
    to=NODE,
    sender=NODE,
    term=U64,
    log_term=U64,
    index=U64,
    entries=st.lists(entries, max_size=4).map(tuple),
    commit=U64,
    reject=st.booleans(),
    reject_hint=U64,
    snapshot=st.none() | snapshots,
    context=SMALL_BYTES,
)


@given(group=U64, message=messages, quiesce=st.booleans())
def test_proto_round_trip(group: int, message: Message, quiesce: bool) -> None:
    assert from_proto(to_proto(group, message, quiesce=quiesce)) == InboundMessage(group, message, quiesce)


@given(
    batch=st.lists(st.tuples(U64, messages, st.booleans()), max_size=5),
    seq=st.integers(min_value=0, max_value=2**64 - 1),
)
def test_batch_round_trip_matches_protobuf_encoding(batch: list[tuple[int, Message, bool]], seq: int) -> None:
    data = encode_batch(seq, [encode_group_message(g, m, quiesce=q) for g, m, q in batch])
    # Hand framing == what protobuf itself writes for the same RaftBatch.
    expected = raft_pb2.RaftBatch(seq=seq)
    for g, m, q in batch:
        to_proto(g, m, quiesce=q, out=expected.messages.add())
    assert data == expected.SerializeToString()
    decoded = decode_batch(data)
    assert decoded.seq == seq
    assert decoded.errors == []
    assert decoded.messages == [InboundMessage(g, m, q) for g, m, q in batch]


def test_empty_batch_is_a_ping_with_only_its_seq() -> None:
    assert encode_batch(1, []) == b"\x10\x01"
    decoded = decode_batch(encode_batch(300, []))
    assert (decoded.seq, decoded.messages, decoded.errors) == (300, [], [])


def test_large_entries_survive_byte_for_byte() -> None:
    payloads = [bytes([i]) * 65536 for i in range(8)]
    message = Message(
        MessageType.APPEND,
        to=2,
        sender=1,
        term=3,
        index=10,
        log_term=3,
        commit=9,
        entries=tuple(Entry(3, 11 + i, data=p) for i, p in enumerate(payloads)),
    )
    decoded = decode_batch(encode_batch(1, [encode_group_message(7, message)]))
    (got,) = decoded.messages
    assert got.message == message
    assert [e.data for e in got.message.entries] == payloads
    assert all(type(e.data) is bytes for e in got.message.entries)


def test_snapshot_none_and_empty_snapshot_stay_distinct() -> None:
    bare = Message(MessageType.SNAPSHOT, to=2, sender=1)
    empty = Message(MessageType.SNAPSHOT, to=2, sender=1, snapshot=Snapshot())
    assert from_proto(to_proto(0, bare)).message.snapshot is None
    assert from_proto(to_proto(0, empty)).message.snapshot == Snapshot()


def _valid() -> raft_pb2.GroupMessage:
    return to_proto(5, Message(MessageType.HEARTBEAT, to=2, sender=1, term=4, commit=3))


def _broken(case: str) -> raft_pb2.GroupMessage:
    gm = _valid()
    if case == "type zero":
        gm.message.type = 0  # type: ignore[assignment]
    elif case == "type unknown":
        gm.message.type = 99  # type: ignore[assignment]
    elif case == "to zero":
        gm.message.to = 0
    elif case == "sender zero":
        gm.message.sender = 0
    elif case == "entry kind":
        gm.message.entries.add(term=1, index=1, kind=7, data=b"x")
    elif case == "snapshot voter zero":
        gm.message.snapshot.metadata.conf_state.voters.append(0)
    return gm


BROKEN = {
    "type zero": "unknown message type 0",
    "type unknown": "unknown message type 99",
    "to zero": "zero id",
    "sender zero": "zero id",
    "entry kind": "unknown kind 7",
    "snapshot voter zero": "node id 0",
}


@pytest.mark.parametrize(("case", "expected"), BROKEN.items())
def test_decode_rejects_what_raft_never_sends(case: str, expected: str) -> None:
    with pytest.raises(WireError, match=expected):
        from_proto(_broken(case))


def test_a_bad_message_does_not_spoil_its_batch() -> None:
    good = _valid()
    data = encode_batch(
        9,
        [good.SerializeToString(), _broken("type unknown").SerializeToString(), good.SerializeToString()],
    )
    decoded = decode_batch(data)
    assert decoded.seq == 9
    assert decoded.messages == [from_proto(good), from_proto(good)]
    assert len(decoded.errors) == 1
    assert "unknown message type 99" in decoded.errors[0]


def test_bytes_that_are_not_a_batch_raise_wire_error() -> None:
    with pytest.raises(WireError, match="not a RaftBatch"):
        decode_batch(b"\x0a\xff\xff\xff\xff\x0f")  # a length far past the end


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (Message(MessageType.HEARTBEAT, to=0, sender=1), "positive"),
        (Message(MessageType.HEARTBEAT, to=2, sender=0), "positive"),
        (Message(MessageType.HEARTBEAT, to=2, sender=1, term=-1), "cannot encode"),
        (
            Message(MessageType.APPEND, to=2, sender=1, entries=(Entry(1, 1, kind=5),)),  # type: ignore[arg-type]
            "unknown entry kind",
        ),
        (
            Message(
                MessageType.SNAPSHOT,
                to=2,
                sender=1,
                snapshot=Snapshot(SnapshotMetadata(1, 1, ConfState(voters=frozenset({0})))),
            ),
            "node id 0",
        ),
    ],
)
def test_encode_refuses_what_peers_would_refuse(message: Message, expected: str) -> None:
    with pytest.raises(WireError, match=expected):
        to_proto(1, message)
