"""Checking a batch without building a record: ``validate_header``,
``validate_batch``, and the bounded inflate of a gzip records section.

Part of ``raftlog.v1.record_batch`` (import from there). The server runs
this on every produce; its hot path is the walk over the frame lengths
(``_walk_frames``), which builds nothing per record.

Invariants:

- For any input bytes, ``InvalidBatch`` is the only exception raised.
- Checks run in a fixed order: size, length, version, CRC, header fields,
  then the frame walk; so damage is reported as ``CORRUPT_BATCH``, not as
  whichever field it hit.
- A gzip records section is inflated to at most ``limit + 1`` bytes, never
  in full.
- ``_validate`` returns the records section it walked (inflated when
  compressed): a decoder never inflates twice, and may rely on every frame
  lying inside that section.
"""

from __future__ import annotations

import zlib

import crc32c

from raftlog.v1.record_batch_format import (
    _CODEC_MASK,
    _CODECS,
    _CRC_START,
    _GZIP_WBITS,
    _LENGTH_FIELD_END,
    _MIN_FRAME,
    _MIN_FRAME_BODY,
    COMPACTED_ATTRIBUTE,
    HEADER_SIZE,
    MAGIC,
    BatchHeader,
    BytesLike,
    Codec,
    InvalidBatch,
    InvalidBatchReason,
    _malformed,
    parse_header,
)


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
