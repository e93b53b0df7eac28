"""The record batch: raftlog's unit of produce, replication, storage and fetch.

A producer packs records into one batch; the batch travels as opaque bytes in
a ``ProduceRequest``, becomes one Raft entry, is stored once per replica and
is served as-is to consumers (only ``base_offset`` is patched on the way
out). The server never builds a Python object per record: it checks a batch
with ``validate_batch`` (header fields, CRC, and a walk over the record
frame lengths) and works with the fixed-size header from then on.

This module is shared by the client SDK and the server, so it imports only
the standard library and ``crc32c``.

Batch layout, version (magic) 1. All integers big-endian; offsets are byte
positions in the batch.

====== ===== ================= ==========================================
offset size  field             meaning
====== ===== ================= ==========================================
0      8     base_offset i64   offset of the first record; the producer
                               sends 0, the server patches it when it serves
                               the batch (outside the CRC)
8      4     batch_length i32  bytes after this field (total size - 12)
12     1     magic u8          format version, 1
13     4     crc u32           CRC32C of every byte after this field
17     2     attributes i16    bits 0-2: compression codec (0 none,
                               1 gzip); bit 3: compacted (set only by the
                               server's key compaction, refused from a
                               producer); bits 4-15 reserved, must be 0
19     4     last_offset_delta the batch's offset span - 1: record_count
             i32               - 1, except in a compacted batch
23     8     first_timestamp   timestamp (ms) of the first record
             i64
31     8     max_timestamp i64 largest record timestamp (ms)
39     8     producer_id i64   -1: not an idempotent producer
47     2     producer_epoch    -1 when producer_id is -1
             i16
49     4     base_sequence i32 sequence number of the first record; -1 when
                               producer_id is -1
53     4     record_count i32  >= 1; in a compacted batch 0 ..
                               last_offset_delta + 1
57     ...   records           record_count record frames, compressed as
                               one gzip stream when the codec is not none
====== ===== ================= ==========================================

Record frame (varint = unsigned LEB128; zvarint = zigzag-encoded signed
varint):

====================== ==================================================
field                  meaning
====================== ==================================================
length varint          bytes of the frame after this field
attributes u8          reserved, 0
timestamp_delta        record timestamp - first_timestamp
zvarint
offset_delta varint    record offset - base_offset: the record's position
                       in a batch as produced; strictly increasing and at
                       most last_offset_delta in a compacted batch
key_length zvarint     -1: null key
key bytes
value_length zvarint   -1: null value (a tombstone)
value bytes
header_count varint
headers                each: key_length varint, key (UTF-8),
                       value_length varint, value bytes
====================== ==================================================

The smallest frame is 7 bytes (a length of 6 plus the six one-byte fields of
a record with null key and value and no headers).

Sequence numbers are per producer and per record: a batch covers
``base_sequence .. base_sequence + last_offset_delta``, wrapping from
``2**31 - 1`` to 0 (its span, not its count: compaction removes records
but never changes what a batch covers).

Compacted batches (partitions/compaction.py): key compaction rewrites a
stored batch keeping only some records, with the same base offset,
``last_offset_delta``, timestamps and producer fields, fewer records (maybe
none: a header-only batch, codec none) and attribute bit 3 set. Producers
may not send the bit (``validate_batch`` refuses it unless
``allow_compacted``); stored-batch checks and the decoders accept it, and
decoders give each record ``base_offset + offset_delta``.

Decompression is bounded: a gzip records section is inflated at most one
byte past its limit (``zlib``'s ``max_length``), never in full, so a small
batch that would expand into gigabytes (a "zip bomb") costs the server and
a consumer only that limit. The server's limit is the one it applies to an
uncompressed batch: the records must fit ``max_batch_bytes - HEADER_SIZE``
once decompressed (``validate_batch``'s default). A consumer, which does not
know the server's setting, uses ``MAX_UNCOMPRESSED_RECORDS_BYTES``, and
inflates each batch once.

Errors: ``validate_batch`` and ``decode_records`` raise only ``InvalidBatch``
for bad input, whose ``reason`` is one of ``InvalidBatchReason`` (stable,
machine-readable, sent to clients) and whose ``message`` says what is wrong
and what to fix.
"""

from __future__ import annotations

import enum
import struct
import zlib
from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar

import crc32c

__all__ = [
    "COMPACTED_ATTRIBUTE",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_UNCOMPRESSED_RECORDS_BYTES",
    "BatchHeader",
    "BytesLike",
    "Codec",
    "DecodedRecord",
    "InvalidBatch",
    "InvalidBatchReason",
    "Record",
    "RecordBuilder",
    "decode_records",
    "decode_records_as",
    "encode_batch",
    "encode_compacted_batch",
    "parse_header",
    "validate_batch",
    "validate_header",
    "with_base_offset",
]

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


def validate_header(buf: BytesLike, *, max_batch_bytes: int, allow_compacted: bool = False) -> BatchHeader:
    """Every check that needs only the fixed header and the size of ``buf``:
    size, length, version, attributes, record count, timestamps and producer
    fields. No CRC and no record walk (``validate_batch`` does those).
    ``allow_compacted``: a stored batch, which may be compacted."""
    h = _check_framing(buf, max_batch_bytes)
    _check_fields(h, allow_compacted)
    return h


def _check_framing(buf: BytesLike, max_batch_bytes: int) -> BatchHeader:
    size = len(buf)
    if size > max_batch_bytes:
        raise InvalidBatch(
            InvalidBatchReason.BATCH_TOO_LARGE,
            f"batch of {size} bytes exceeds the limit of {max_batch_bytes}; send fewer records per batch",
        )
    h = parse_header(buf)
    if h.batch_length != size - _LENGTH_FIELD_END:
        raise InvalidBatch(
            InvalidBatchReason.BAD_LENGTH,
            f"batch_length says {h.batch_length} bytes follow it but {size - _LENGTH_FIELD_END} do; "
            "send exactly one whole batch",
        )
    if h.magic != MAGIC:
        raise InvalidBatch(
            InvalidBatchReason.UNSUPPORTED_VERSION,
            f"batch format version {h.magic} is not supported (this server reads version {MAGIC}); "
            "use a client that writes version 1",
        )
    return h


def _check_fields(h: BatchHeader, allow_compacted: bool) -> None:
    codec = h.attributes & _CODEC_MASK
    if codec not in _CODECS:
        raise InvalidBatch(
            InvalidBatchReason.UNSUPPORTED_CODEC,
            f"compression codec {codec} is unknown (supported: 0 none, 1 gzip)",
        )
    compacted = h.attributes & COMPACTED_ATTRIBUTE
    if compacted and not allow_compacted:
        raise InvalidBatch(
            InvalidBatchReason.UNSUPPORTED_ATTRIBUTES,
            f"attributes {h.attributes:#06x} set bit 3 (compacted), which only the server's "
            "compaction sets; clear it",
        )
    if h.attributes & ~(_CODEC_MASK | COMPACTED_ATTRIBUTE):
        raise InvalidBatch(
            InvalidBatchReason.UNSUPPORTED_ATTRIBUTES,
            f"attributes {h.attributes:#06x} set reserved bits (only bits 0-2 are defined); clear them",
        )
    if compacted:
        if h.last_offset_delta < 0 or not 0 <= h.record_count <= h.last_offset_delta + 1:
            raise InvalidBatch(
                InvalidBatchReason.BAD_RECORD_COUNT,
                f"compacted batch with record_count {h.record_count} and last_offset_delta "
                f"{h.last_offset_delta}: it may hold at most the records its span had",
            )
    elif h.record_count < 1 or h.last_offset_delta != h.record_count - 1:
        raise InvalidBatch(
            InvalidBatchReason.BAD_RECORD_COUNT,
            f"record_count {h.record_count} with last_offset_delta {h.last_offset_delta}: a batch needs "
            "at least one record and last_offset_delta = record_count - 1",
        )
    if h.first_timestamp < 0 or h.max_timestamp < h.first_timestamp:
        raise InvalidBatch(
            InvalidBatchReason.BAD_TIMESTAMPS,
            f"first_timestamp {h.first_timestamp} and max_timestamp {h.max_timestamp}: timestamps "
            "must be >= 0 and max_timestamp >= first_timestamp",
        )
    pid = h.producer_id
    if pid == -1:
        if h.producer_epoch != -1 or h.base_sequence != -1:
            raise InvalidBatch(
                InvalidBatchReason.BAD_PRODUCER_FIELDS,
                f"producer_id -1 (no idempotent producer) needs producer_epoch -1 and base_sequence -1, "
                f"got {h.producer_epoch} and {h.base_sequence}",
            )
    elif pid < 0 or h.producer_epoch < 0 or h.base_sequence < 0:
        raise InvalidBatch(
            InvalidBatchReason.BAD_PRODUCER_FIELDS,
            f"producer_id {pid}, producer_epoch {h.producer_epoch}, base_sequence {h.base_sequence}: "
            "an idempotent producer needs all three >= 0 (or all three -1 without one)",
        )


def validate_batch(
    buf: BytesLike,
    *,
    max_batch_bytes: int,
    max_uncompressed_bytes: int | None = None,
    allow_compacted: bool = False,
) -> BatchHeader:
    """Check that ``buf`` is exactly one well-formed batch; return its header.

    The hot path of a produce: no object is built per record. Checks run
    in this order: size, length, version, CRC (so damage is reported as
    ``CORRUPT_BATCH``, not as whichever field it hit), the header fields of
    ``validate_header``, then a walk over the frame lengths of
    the records section (decompressed first when compressed) to see that it
    holds exactly ``record_count`` frames. Raises ``InvalidBatch`` and
    nothing else for any input bytes.

    ``max_uncompressed_bytes`` bounds a compressed records section once
    decompressed (``DECOMPRESSED_TOO_LARGE`` past it, after inflating at
    most one byte more). By default it is ``max_batch_bytes - HEADER_SIZE``:
    a compressed batch must fit the limit an uncompressed one must fit.

    ``allow_compacted``: accept a batch the server's compaction rewrote
    (attribute bit 3); a produce leaves it False.
    """
    if max_uncompressed_bytes is None:
        max_uncompressed_bytes = max(max_batch_bytes - HEADER_SIZE, 0)
    return _validate(buf, max_batch_bytes, max_uncompressed_bytes, allow_compacted)[0]


def _validate(
    buf: BytesLike, max_batch_bytes: int, max_uncompressed_bytes: int, allow_compacted: bool = False
) -> tuple[BatchHeader, BytesLike]:
    """``validate_batch``, also returning the records section (inflated when
    compressed) so that a decoder does not inflate it a second time."""
    h = _check_framing(buf, max_batch_bytes)
    view = buf if isinstance(buf, memoryview) else memoryview(buf)
    actual = crc32c.crc32c(view[_CRC_START:])
    if actual != h.crc:
        raise InvalidBatch(
            InvalidBatchReason.CORRUPT_BATCH,
            f"CRC32C is {actual:#010x} but the header says {h.crc:#010x}: the batch was damaged "
            "in transit or built wrongly; rebuild and resend it",
        )
    _check_fields(h, allow_compacted)
    if h.attributes & _CODEC_MASK == Codec.NONE:
        _walk_frames(buf, HEADER_SIZE, h.record_count)
        return h, view[HEADER_SIZE:]
    records = _decompress(view[HEADER_SIZE:], max_uncompressed_bytes)
    _walk_frames(records, 0, h.record_count)
    return h, records


def with_base_offset(buf: BytesLike, base_offset: int) -> bytes:
    """``buf`` with its ``base_offset`` replaced. The CRC does not cover the
    base offset, so it stays valid."""
    return _BASE_OFFSET.pack(base_offset) + buf[8:]


def _malformed(message: str) -> InvalidBatch:
    return InvalidBatch(InvalidBatchReason.MALFORMED_RECORDS, message + "; rebuild the batch")


def _walk_frames(buf: BytesLike, pos: int, count: int) -> None:
    """Skip ``count`` frames from ``pos`` by their length prefixes; they must
    end exactly at the end of ``buf``. The one- and two-byte length varints
    (frames up to 16 KiB) take a fast path: this loop is the hot path."""
    end = len(buf)
    if count > (end - pos) // _MIN_FRAME:
        raise _wrong_count(
            f"record_count {count} cannot fit in a {end - pos}-byte records section "
            f"(a record takes at least {_MIN_FRAME} bytes)"
        )
    i = 0
    try:
        for i in range(count):
            if pos == end:
                raise _wrong_count(f"record_count says {count} records but the batch holds {i}")
            b = buf[pos]
            if b < 0x80:
                length = b
                pos += 1
            else:
                b2 = buf[pos + 1]
                if b2 < 0x80:
                    length = (b & 0x7F) | (b2 << 7)
                    pos += 2
                else:
                    length, pos = _long_length(buf, pos, end, i)
            if length < _MIN_FRAME_BODY:
                raise _malformed(f"record {i}: frame length {length} is below the minimum {_MIN_FRAME_BODY}")
            pos += length
    except IndexError:
        raise _malformed(f"records section ends inside record {i} of {count}") from None
    if pos != end:
        if pos > end:
            raise _malformed(f"record {count - 1} runs {pos - end} bytes past the end of the batch")
        extra = _whole_frames(buf, pos)
        if extra:
            raise _wrong_count(f"record_count says {count} records but the batch holds {count + extra}")
        raise _malformed(f"{end - pos} bytes follow the last of {count} records")


def _wrong_count(message: str) -> InvalidBatch:
    return InvalidBatch(
        InvalidBatchReason.BAD_RECORD_COUNT, message + "; set record_count to the records sent"
    )


def _whole_frames(buf: BytesLike, pos: int) -> int:
    """How many whole frames fill ``buf[pos:]`` exactly (0 if they do not):
    tells a wrong record_count from trailing garbage. Error path only."""
    end = len(buf)
    frames = 0
    while pos < end:
        try:
            length, pos = _long_length(buf, pos, end, frames)
        except InvalidBatch:
            return 0
        if length < _MIN_FRAME_BODY:
            return 0
        pos += length
        frames += 1
    return frames if pos == end else 0


def _long_length(buf: BytesLike, pos: int, end: int, i: int) -> tuple[int, int]:
    """A frame length varint of three or more bytes (at most five)."""
    length = 0
    for shift in range(0, 35, 7):
        if pos >= end:
            break
        b = buf[pos]
        pos += 1
        length |= (b & 0x7F) << shift
        if not b & 0x80:
            return length, pos
    raise _malformed(f"record {i}: length varint is truncated or longer than 5 bytes")


def _decompress(data: BytesLike, limit: int) -> bytes:
    """The gzip stream ``data`` inflated, if it inflates to at most ``limit``
    bytes. Never produces more than ``limit + 1`` bytes: ``max_length``
    stops zlib there and leaves the rest of the input unconsumed, so a bomb
    costs ``limit`` bytes of output, not its full expansion."""
    inflater = zlib.decompressobj(wbits=_GZIP_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise _malformed(f"gzip records section does not decompress ({exc})") from None
    # Over the limit, or stopped at max_length with input left: either way
    # the stream holds more than ``limit`` bytes and is not inflated further.
    if len(out) > limit or inflater.unconsumed_tail:
        raise InvalidBatch(
            InvalidBatchReason.DECOMPRESSED_TOO_LARGE,
            f"the gzip records section decompresses to more than {limit} bytes, the most a batch "
            f"may hold uncompressed; send fewer records per batch",
        )
    if not inflater.eof:
        raise _malformed("gzip records section is truncated")
    if inflater.unused_data:
        raise _malformed(f"{len(inflater.unused_data)} bytes follow the gzip records section")
    return out


# --- encoding (producer side) ------------------------------------------------------
#
# A batch is built as one list of byte strings joined once at the end: no
# per-record bytearray, and each record's bytes are copied exactly once.


def _uvarint_bytes(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


# Every varint below 2**14 (one or two bytes) precomputed: the frame
# lengths, deltas and field lengths of records up to 16 KiB are looked up.
_SMALL_VARINT_LIMIT = 1 << 14
_SMALL_VARINTS: tuple[bytes, ...] = tuple(_uvarint_bytes(n) for n in range(_SMALL_VARINT_LIMIT))
_NULL_LENGTH = _SMALL_VARINTS[1]  # zigzag(-1)
_ATTRIBUTES = b"\x00"


def _uvarint(n: int) -> bytes:
    return _SMALL_VARINTS[n] if n < _SMALL_VARINT_LIMIT else _uvarint_bytes(n)


def _zvarint(n: int) -> bytes:
    return _uvarint((n << 1) ^ (n >> 63))


def _add_record(parts: list[bytes], record: Record, offset_delta: int, first_timestamp: int) -> None:
    """Append the frame of ``record`` to ``parts``: its length prefix, then
    the pieces of its body."""
    value, key, headers, timestamp_ms = record
    body = [_ATTRIBUTES, _zvarint(timestamp_ms - first_timestamp), _uvarint(offset_delta)]
    for part in (key, value):
        if part is None:
            body.append(_NULL_LENGTH)
        else:
            body.append(_uvarint(len(part) << 1))  # zigzag of a length >= 0
            body.append(part)
    body.append(_uvarint(len(headers)))
    for name, header_value in headers:
        encoded = name.encode("utf-8")
        body += (_uvarint(len(encoded)), encoded, _uvarint(len(header_value)), header_value)
    parts.append(_uvarint(sum(map(len, body))))
    parts += body


def encode_batch(
    records: Sequence[Record],
    *,
    producer_id: int = -1,
    producer_epoch: int = -1,
    base_sequence: int = -1,
    codec: Codec = Codec.NONE,
    base_offset: int = 0,
) -> bytes:
    """One batch holding ``records`` (at least one). Raises ``ValueError``
    for arguments that would make an invalid batch."""
    if not records:
        raise ValueError("a batch needs at least one record")
    if producer_id == -1:
        if producer_epoch != -1 or base_sequence != -1:
            raise ValueError("producer_epoch and base_sequence must be -1 without a producer_id")
    elif not (0 <= producer_id < 2**63 and 0 <= producer_epoch < 2**15 and 0 <= base_sequence <= _MAX_I32):
        raise ValueError(
            f"producer_id {producer_id}, producer_epoch {producer_epoch}, base_sequence {base_sequence} "
            "out of range"
        )
    if codec not in _CODECS:
        raise ValueError(f"unknown codec {codec}")
    timestamps = [r.timestamp_ms for r in records]
    if min(timestamps) < 0:
        raise ValueError("record timestamps must be >= 0")
    first_timestamp = timestamps[0]
    parts: list[bytes] = []
    for i, record in enumerate(records):
        _add_record(parts, record, i, first_timestamp)
    payload = b"".join(parts)
    if codec == Codec.GZIP:
        payload = zlib.compress(payload, 6, wbits=_GZIP_WBITS)
    count = len(records)
    batch_length = HEADER_SIZE - _LENGTH_FIELD_END + len(payload)
    if batch_length > _MAX_I32:
        raise ValueError(f"batch of {batch_length} bytes is too large for the format")
    header = _HEADER.pack(
        base_offset,
        batch_length,
        MAGIC,
        0,
        int(codec),
        count - 1,
        first_timestamp,
        max(timestamps),
        producer_id,
        producer_epoch,
        base_sequence,
        count,
    )
    crc = crc32c.crc32c(payload, crc32c.crc32c(memoryview(header)[_CRC_START:]))
    return b"".join((header[:13], _CRC.pack(crc), header[_CRC_START:], payload))


def encode_compacted_batch(header: BatchHeader, frames: Sequence[tuple[int, Record]]) -> bytes:
    """The compacted rewrite of a stored batch with header ``header``,
    keeping ``frames`` (``(offset_delta, record)``, increasing deltas within
    the span): same base offset, span, timestamps and producer fields, same
    codec (none when nothing is kept), attribute bit 3 set, CRC recomputed.
    Deterministic: the same arguments give the same bytes."""
    parts: list[bytes] = []
    previous = -1
    for offset_delta, record in frames:
        if not previous < offset_delta <= header.last_offset_delta:
            raise ValueError(f"offset_delta {offset_delta} after {previous} outside the batch's span")
        previous = offset_delta
        _add_record(parts, record, offset_delta, header.first_timestamp)
    payload = b"".join(parts)
    codec = header.codec if frames else int(Codec.NONE)
    if codec == Codec.GZIP:
        # mtime=0 and a fixed level: the same records compress to the same
        # bytes on every replica (gzip's header would otherwise hold a clock).
        payload = _gzip_compress(payload)
    header_bytes = _HEADER.pack(
        header.base_offset,
        HEADER_SIZE - _LENGTH_FIELD_END + len(payload),
        MAGIC,
        0,
        codec | COMPACTED_ATTRIBUTE,
        header.last_offset_delta,
        header.first_timestamp,
        header.max_timestamp,
        header.producer_id,
        header.producer_epoch,
        header.base_sequence,
        len(frames),
    )
    crc = crc32c.crc32c(payload, crc32c.crc32c(memoryview(header_bytes)[_CRC_START:]))
    return b"".join((header_bytes[:13], _CRC.pack(crc), header_bytes[_CRC_START:], payload))


def _gzip_compress(payload: bytes) -> bytes:
    """``payload`` as a gzip stream, the same bytes for the same input
    (zlib's gzip container writes mtime 0)."""
    return zlib.compress(payload, 6, wbits=_GZIP_WBITS)


# --- decoding (consumer side) ------------------------------------------------------
#
# ``validate_batch`` has walked the frame lengths before any record is
# decoded, so every frame is known to lie inside the records section; what
# is checked per frame is that its fields fill it exactly. Error messages
# are built only on the error path.

T = TypeVar("T")
RecordBuilder = Callable[[int, int, bytes | None, bytes | None, tuple[tuple[str, bytes], ...]], T]
"""Builds one decoded record from (offset, timestamp_ms, key, value, headers)."""


def _get_uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    """The unsigned varint at ``pos`` and the position after it. Raises
    ``IndexError`` when ``buf`` ends inside it, ``ValueError`` when it is
    longer than 10 bytes."""
    result = 0
    for shift in range(0, 70, 7):
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
    raise ValueError("varint longer than 10 bytes")


def _get_zvarint(buf: bytes, pos: int) -> tuple[int, int]:
    b = buf[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    z, pos = _get_uvarint(buf, pos)
    return (z >> 1) ^ -(z & 1), pos


def _get_field(buf: bytes, pos: int, end: int) -> tuple[bytes | None, int]:
    """A zigzag length (-1: null) and that many bytes, inside ``[pos, end)``.
    Lengths below 8 KiB (one- and two-byte varints) are read inline, like
    the frame lengths in ``_walk_frames``: one call per field less, twice
    per record on the consumer's hot path."""
    b = buf[pos]
    if b < 0x80:
        z = b
        pos += 1
    else:
        b2 = buf[pos + 1]
        if b2 < 0x80:
            z = (b & 0x7F) | (b2 << 7)
            pos += 2
        else:
            z, pos = _get_uvarint(buf, pos)
    if z & 1:
        if z == 1:
            return None, pos
        raise ValueError(f"length {(z >> 1) ^ -1}")
    stop = pos + (z >> 1)
    if stop > end:
        raise ValueError(f"length {z >> 1} runs past the end of the record")
    return buf[pos:stop], stop


def _get_headers(buf: bytes, pos: int, end: int) -> tuple[tuple[tuple[str, bytes], ...], int]:
    count, pos = _get_uvarint(buf, pos)
    headers: list[tuple[str, bytes]] = []
    for _ in range(count):
        n, pos = _get_uvarint(buf, pos)
        raw_name = buf[pos : pos + n]
        pos += n
        n, pos = _get_uvarint(buf, pos)
        value = buf[pos : pos + n]
        pos += n
        if pos > end:
            raise ValueError("a header runs past the end of the record")
        try:
            name = raw_name.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("a header key is not valid UTF-8") from None
        headers.append((name, value))
    return tuple(headers), pos


def decode_records(
    buf: BytesLike, *, max_uncompressed_bytes: int = MAX_UNCOMPRESSED_RECORDS_BYTES
) -> list[DecodedRecord]:
    """Every record of one batch, with its offset and timestamp. Validates
    the batch first (CRC included); raises ``InvalidBatch``."""
    return decode_records_as(buf, DecodedRecord, max_uncompressed_bytes=max_uncompressed_bytes)


def decode_records_as(
    buf: BytesLike,
    build: RecordBuilder[T],
    *,
    max_uncompressed_bytes: int = MAX_UNCOMPRESSED_RECORDS_BYTES,
) -> list[T]:
    """Like ``decode_records``, but each record is ``build(offset,
    timestamp_ms, key, value, headers)``: a consumer builds its own record
    type directly instead of converting a ``DecodedRecord``."""
    h, section = _validate(buf, len(buf), max_uncompressed_bytes, allow_compacted=True)
    compacted = h.attributes & COMPACTED_ATTRIBUTE
    last_delta = h.last_offset_delta
    # The decoders below slice ``data`` into the records' keys and values,
    # which must be bytes: an inflated section already is, and a plain one
    # is copied once here.
    data = section if isinstance(section, bytes) else bytes(section)
    records: list[T] = []
    append = records.append
    base_offset = h.base_offset
    first_timestamp = h.first_timestamp
    no_headers: tuple[tuple[str, bytes], ...] = ()
    pos = 0
    i = 0
    previous_delta = -1
    try:
        for i in range(h.record_count):
            b = data[pos]
            if b < 0x80:
                end = pos + 1 + b
                pos += 1
            else:
                length, pos = _get_uvarint(data, pos)
                end = pos + length
            if data[pos]:
                raise ValueError(f"attributes {data[pos]} set reserved bits")
            b = data[pos + 1]
            if b < 0x80:
                ts_delta = (b >> 1) ^ -(b & 1)
                pos += 2
            else:
                ts_delta, pos = _get_zvarint(data, pos + 1)
            b = data[pos]
            if b < 0x80:
                offset_delta = b
                pos += 1
            else:
                offset_delta, pos = _get_uvarint(data, pos)
            if offset_delta != i and not (compacted and previous_delta < offset_delta <= last_delta):
                raise ValueError(f"offset_delta is {offset_delta}, expected {i}")
            previous_delta = offset_delta
            key, pos = _get_field(data, pos, end)
            value, pos = _get_field(data, pos, end)
            if data[pos] == 0:
                headers = no_headers
                pos += 1
            else:
                headers, pos = _get_headers(data, pos, end)
            if pos != end:
                if pos > end:
                    raise ValueError("its fields run past the end of its frame")
                raise ValueError(f"{end - pos} bytes left over inside the frame")
            append(build(base_offset + offset_delta, first_timestamp + ts_delta, key, value, headers))
    except IndexError:
        raise _malformed(f"record {i}: its fields run past the end of the records section") from None
    except ValueError as exc:
        raise _malformed(f"record {i}: {exc}") from None
    return records
