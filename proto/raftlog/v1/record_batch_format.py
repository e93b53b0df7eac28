"""The record batch's fixed parts: sizes and positions, the header struct,
the codec and attribute bits, the errors and the record tuples, and
``parse_header`` / ``with_base_offset``, which touch the header only.

Part of ``raftlog.v1.record_batch``, which documents the layout (the byte
tables) and is the one import path for every public name: import from
there, not from here. Imports only the standard library.

Invariants:

- ``_HEADER`` is the header table of ``record_batch``, field for field and
  big-endian: ``HEADER_SIZE`` is 57, and ``_LENGTH_FIELD_END`` and
  ``_CRC_START`` are byte positions in it.
- Nothing here checks a field: ``parse_header`` only unpacks (the checks
  are in ``record_batch_validate``), and ``with_base_offset`` changes the
  one field outside the CRC.
- ``InvalidBatchReason`` values are client API: add, never change.
"""

from __future__ import annotations

import enum
import struct
from typing import NamedTuple

BytesLike = bytes | bytearray | memoryview

MAGIC = 1

_HEADER = struct.Struct(">qiBIhiqqqhii")
_BASE_OFFSET = struct.Struct(">q")
_CRC = struct.Struct(">I")
HEADER_SIZE = _HEADER.size  # 57
_LENGTH_FIELD_END = 12  # batch_length counts the bytes after this position
_CRC_START = 17  # the CRC covers attributes .. end

_CODEC_MASK = 0x07
COMPACTED_ATTRIBUTE = 0x08
"""Attribute bit 3: the server's key compaction rewrote this batch."""
_MIN_FRAME_BODY = 6
_MIN_FRAME = 1 + _MIN_FRAME_BODY
_MAX_I32 = 2**31 - 1
_GZIP_WBITS = 31  # zlib's gzip container

MAX_UNCOMPRESSED_RECORDS_BYTES = 64 * 1024 * 1024
"""The consumer's bound on a compressed batch's records once decompressed
(``decode_records``): the server refuses anything over its own, smaller,
``max_batch_bytes`` at produce time, so this only caps what a consumer will
inflate whatever it is sent."""


class Codec(enum.IntEnum):
    """Compression of the records section (attribute bits 0-2)."""

    NONE = 0
    GZIP = 1


_CODECS = frozenset(int(c) for c in Codec)


class InvalidBatchReason(enum.StrEnum):
    """Why a batch was refused. The values are part of the client API."""

    BATCH_TOO_SHORT = "BATCH_TOO_SHORT"
    """Fewer bytes than the fixed header."""
    BATCH_TOO_LARGE = "BATCH_TOO_LARGE"
    """Over the server's max batch size."""
    DECOMPRESSED_TOO_LARGE = "DECOMPRESSED_TOO_LARGE"
    """A compressed batch whose records decompress to more than the max
    batch size (the server stops inflating at the limit)."""
    BAD_LENGTH = "BAD_LENGTH"
    """batch_length does not match the bytes received."""
    UNSUPPORTED_VERSION = "UNSUPPORTED_VERSION"
    """magic is not a version this code reads."""
    CORRUPT_BATCH = "CORRUPT_BATCH"
    """CRC32C mismatch."""
    UNSUPPORTED_CODEC = "UNSUPPORTED_CODEC"
    """Unknown compression codec."""
    UNSUPPORTED_ATTRIBUTES = "UNSUPPORTED_ATTRIBUTES"
    """Reserved attribute bits are set (or, from a producer, the compacted
    bit, which only the server sets)."""
    BAD_RECORD_COUNT = "BAD_RECORD_COUNT"
    """record_count < 1 or last_offset_delta != record_count - 1 (in a
    compacted batch: record_count outside 0 .. last_offset_delta + 1)."""
    BAD_TIMESTAMPS = "BAD_TIMESTAMPS"
    """A negative timestamp, or max_timestamp < first_timestamp."""
    BAD_PRODUCER_FIELDS = "BAD_PRODUCER_FIELDS"
    """producer_id, producer_epoch and base_sequence disagree."""
    MALFORMED_RECORDS = "MALFORMED_RECORDS"
    """The records section is not record_count well-formed frames."""


class InvalidBatch(ValueError):
    """A batch that must not be stored or decoded."""

    def __init__(self, reason: InvalidBatchReason, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


# Record, DecodedRecord and BatchHeader are NamedTuples, not frozen
# dataclasses: one is built per record on the producer's and the consumer's
# hot paths, and a frozen dataclass's __init__ (object.__setattr__ per field)
# costs about four times as much (measured: 2.1 vs 0.56 us for 7 fields).


class Record(NamedTuple):
    """One record as a producer builds it."""

    value: bytes | None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int = 0


class DecodedRecord(NamedTuple):
    """One record as a consumer reads it, with its offset."""

    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()


class BatchHeader(NamedTuple):
    """The fixed-size header, as stored (no field is checked by parsing)."""

    base_offset: int
    batch_length: int
    magic: int
    crc: int
    attributes: int
    last_offset_delta: int
    first_timestamp: int
    max_timestamp: int
    producer_id: int
    producer_epoch: int
    base_sequence: int
    record_count: int

    @property
    def size(self) -> int:
        """Total bytes of the batch, header included."""
        return _LENGTH_FIELD_END + self.batch_length

    @property
    def codec(self) -> int:
        """The compression codec number (a ``Codec`` once validated)."""
        return self.attributes & _CODEC_MASK

    @property
    def last_offset(self) -> int:
        return self.base_offset + self.last_offset_delta

    @property
    def compacted(self) -> bool:
        return bool(self.attributes & COMPACTED_ATTRIBUTE)

    @property
    def last_sequence(self) -> int:
        """Sequence number of the last offset the batch spans (wraps to 0
        after 2**31 - 1); -1 for a batch without a producer. The span, not
        the record count: a compacted batch keeps its sequences."""
        if self.producer_id < 0:
            return -1
        return (self.base_sequence + self.last_offset_delta) & _MAX_I32


def parse_header(buf: BytesLike) -> BatchHeader:
    """The header fields of ``buf``, unchecked. Raises ``InvalidBatch``
    (``BATCH_TOO_SHORT``) only when ``buf`` is shorter than a header."""
    if len(buf) < HEADER_SIZE:
        raise InvalidBatch(
            InvalidBatchReason.BATCH_TOO_SHORT,
            f"{len(buf)} bytes is shorter than the {HEADER_SIZE}-byte batch header; send a whole batch",
        )
    return BatchHeader._make(_HEADER.unpack_from(buf))


def with_base_offset(buf: BytesLike, base_offset: int) -> bytes:
    """``buf`` with its ``base_offset`` replaced. The CRC does not cover the
    base offset, so it stays valid."""
    return _BASE_OFFSET.pack(base_offset) + buf[8:]


def _malformed(message: str) -> InvalidBatch:
    return InvalidBatch(InvalidBatchReason.MALFORMED_RECORDS, message + "; rebuild the batch")
