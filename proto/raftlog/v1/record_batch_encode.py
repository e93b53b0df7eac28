"""Building batches: ``encode_batch`` (the producer) and
``encode_compacted_batch`` (the server's key compaction).

Part of ``raftlog.v1.record_batch`` (import from there).

Invariants:

- Arguments that would make an invalid batch raise ``ValueError`` before
  anything is built; what is returned passes ``validate_batch``
  (``allow_compacted`` for a compacted rewrite).
- A batch is built as one list of byte strings joined once at the end: no
  per-record bytearray, and each record's bytes are copied exactly once.
- ``encode_compacted_batch`` is deterministic: the same arguments give the
  same bytes on every replica (gzip with mtime 0 and a fixed level).
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import crc32c

from raftlog.v1.record_batch_format import (
    _CODECS,
    _CRC,
    _CRC_START,
    _GZIP_WBITS,
    _HEADER,
    _LENGTH_FIELD_END,
    _MAX_I32,
    COMPACTED_ATTRIBUTE,
    HEADER_SIZE,
    MAGIC,
    BatchHeader,
    Codec,
    Record,
)


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
