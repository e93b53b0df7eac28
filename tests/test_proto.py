"""The generated protobuf code imports as ``raftlog...`` and the Raft wire
messages in proto/raftlog/internal/v1/raft.proto stay in step with the
dataclasses in raft/types.py (same field names, same enum numbers)."""

from __future__ import annotations

import dataclasses
import enum

import pytest
from google.protobuf.descriptor import Descriptor, EnumDescriptor

from raft import types
from raftlog.internal.v1 import raft_pb2
from raftlog.v1 import errors_pb2

MIRRORED_MESSAGES = [
    types.Entry,
    types.HardState,
    types.ConfState,
    types.ConfChange,
    types.SnapshotMetadata,
    types.Snapshot,
    types.Message,
]

# Python enum -> (proto enum, prefix of its value names).
MIRRORED_ENUMS: list[tuple[type[enum.IntEnum], EnumDescriptor, str]] = [
    (types.EntryKind, raft_pb2.EntryKind.DESCRIPTOR, "ENTRY_KIND_"),
    (types.ConfChangeType, raft_pb2.ConfChangeType.DESCRIPTOR, "CONF_CHANGE_TYPE_"),
    (types.MessageType, raft_pb2.MessageType.DESCRIPTOR, "MESSAGE_TYPE_"),
]


@pytest.mark.parametrize("cls", MIRRORED_MESSAGES, ids=lambda c: c.__name__)
def test_message_fields_mirror_the_dataclass(cls: type) -> None:
    descriptor: Descriptor = getattr(raft_pb2, cls.__name__).DESCRIPTOR
    assert {f.name for f in dataclasses.fields(cls)} == set(descriptor.fields_by_name)


@pytest.mark.parametrize(
    ("py_enum", "pb_enum", "prefix"), MIRRORED_ENUMS, ids=lambda x: getattr(x, "__name__", "")
)
def test_enum_numbers_mirror_the_python_enum(
    py_enum: type[enum.IntEnum], pb_enum: EnumDescriptor, prefix: str
) -> None:
    expected = {prefix + m.name: m.value for m in py_enum}
    actual = {v.name: v.number for v in pb_enum.values}
    # A Python enum without a zero member gets an UNSPECIFIED zero in proto3.
    if 0 not in expected.values():
        expected[prefix + "UNSPECIFIED"] = 0
    assert actual == expected


def test_raft_batch_round_trips() -> None:
    message = raft_pb2.Message(
        type=raft_pb2.MESSAGE_TYPE_APPEND,
        to=2,
        sender=1,
        term=3,
        log_term=2,
        index=10,
        entries=[raft_pb2.Entry(term=3, index=11, data=b"batch")],
        commit=9,
    )
    batch = raft_pb2.RaftBatch(messages=[raft_pb2.GroupMessage(group=7, message=message)])
    decoded = raft_pb2.RaftBatch.FromString(batch.SerializeToString())
    assert decoded == batch
    assert decoded.messages[0].message.entries[0].data == b"batch"
    assert not decoded.messages[0].message.HasField("snapshot")


def test_error_info_round_trips() -> None:
    info = errors_pb2.ErrorInfo(
        reason="NOT_LEADER",
        message="node 2 leads partition 0",
        leader_address="127.0.0.1:7102",
        metadata={"topic": "orders", "partition": "0"},
    )
    decoded = errors_pb2.ErrorInfo.FromString(info.SerializeToString())
    assert decoded == info
    assert decoded.retry_after_ms == 0
