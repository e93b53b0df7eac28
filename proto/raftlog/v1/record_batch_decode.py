"""Reading the records of a batch: ``decode_records`` and
``decode_records_as`` (consumers, and the server's compaction and dumps).

Part of ``raftlog.v1.record_batch`` (import from there).

Invariants:

- A batch is validated (CRC included) and its frame lengths walked by
  ``_validate`` before any record is decoded, so every frame is known to lie
  inside the records section; what is checked per frame is that its fields
  fill it exactly.
- For bad bytes, ``InvalidBatch`` is the only exception raised; error
  messages are built only on the error path.
- A record's offset is ``base_offset + offset_delta``: the deltas are 0, 1,
  2, ... except in a compacted batch, where they strictly increase within
  the batch's span.
- The per-record loop reads one- and two-byte varints in place: it is the
  consumer's hot path, so no helper call is added to it per record.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from raftlog.v1.record_batch_format import (
    COMPACTED_ATTRIBUTE,
    MAX_UNCOMPRESSED_RECORDS_BYTES,
    BytesLike,
    DecodedRecord,
    _malformed,
)
from raftlog.v1.record_batch_validate import _validate

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
