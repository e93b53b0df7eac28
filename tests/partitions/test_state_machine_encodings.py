"""The encodings the partition state machine relies on: the produce command
round-trips without copying the batch, bad commands raise
``MalformedCommand`` or ``UnsupportedCommand``; plus ``PartitionConfig``
validation and the batch index's refusal of holes.
"""

from __future__ import annotations

import struct

import pytest

from partitions.commands import (
    PRODUCE_VERSION,
    CommandKind,
    MalformedCommand,
    ProduceCommand,
    UnsupportedCommand,
    decode_command,
    encode_produce,
)
from partitions.offset_index import BatchIndex
from partitions.state_machine import PartitionConfig, PartitionStateMachine
from tests.partitions.state_machine_feed import batch

# --- the encodings --------------------------------------------------------------------------------


def test_produce_command_round_trip_keeps_the_batch_bytes() -> None:
    raw = batch(3)
    data = encode_produce(raw, 1_234)
    assert data[:2] == bytes([CommandKind.PRODUCE, PRODUCE_VERSION])
    assert data[10:] == raw
    command = decode_command(data)
    assert command == ProduceCommand(1_234, memoryview(raw))
    assert isinstance(command.batch, memoryview) and command.batch.obj is data  # no copy
    assert bytes(command.batch) == raw


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", MalformedCommand),
        (b"\x01\x01\x00", MalformedCommand),
        (b"\x01\x01" + struct.pack(">q", -1) + batch(), MalformedCommand),
        (b"\x00" + bytes(20), UnsupportedCommand),
        (b"\x02" + bytes(20), UnsupportedCommand),
        (b"\x01\x02" + bytes(20), UnsupportedCommand),
    ],
)
def test_bad_commands(data: bytes, error: type[Exception]) -> None:
    with pytest.raises(error):
        decode_command(data)


def test_encode_produce_refuses_a_negative_time() -> None:
    with pytest.raises(ValueError):
        encode_produce(batch(), -1)


@pytest.mark.parametrize(
    "config",
    [
        PartitionConfig(retention_ms=0),
        PartitionConfig(retention_bytes=-1),
        PartitionConfig(producer_expiry_ms=0),
        PartitionConfig(checkpoint_interval_bytes=0),
        PartitionConfig(dedup_window=0),
        PartitionConfig(dedup_window=256),
    ],
)
def test_config_validation(config: PartitionConfig) -> None:
    with pytest.raises(ValueError):
        config.validate()
    with pytest.raises(ValueError):
        PartitionStateMachine(config)


def test_default_config_is_valid() -> None:
    PartitionConfig().validate()
    assert PartitionConfig().dedup_window == 5
    assert PartitionConfig().producer_expiry_ms == 86_400_000


def test_batch_index_refuses_holes() -> None:
    index = BatchIndex(10)
    index.append(1, 10, 2, 100, 0, 0)
    with pytest.raises(ValueError):
        index.append(2, 13, 1, 100, 0, 0)
    with pytest.raises(ValueError):
        index.append(1, 12, 1, 100, 0, 0)
