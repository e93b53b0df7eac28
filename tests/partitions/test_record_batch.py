"""The record batch format (raftlog.v1.record_batch): round trips, every
refusal reason, and robustness against arbitrary and mutated bytes."""

from __future__ import annotations

import struct
import zlib
from typing import Any

import crc32c
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftlog.v1.record_batch import (
    HEADER_SIZE,
    BatchHeader,
    Codec,
    DecodedRecord,
    InvalidBatch,
    InvalidBatchReason,
    Record,
    decode_records,
    decode_records_as,
    encode_batch,
    parse_header,
    validate_batch,
    validate_header,
    with_base_offset,
)

R = InvalidBatchReason
MAX = 1 << 20

# Byte positions of the header fields (see the layout table in the module).
ATTRIBUTES = (17, ">h")
LAST_OFFSET_DELTA = (19, ">i")
FIRST_TIMESTAMP = (23, ">q")
MAX_TIMESTAMP = (31, ">q")
PRODUCER_ID = (39, ">q")
PRODUCER_EPOCH = (47, ">h")
BASE_SEQUENCE = (49, ">i")
RECORD_COUNT = (53, ">i")
MAGIC_AT = (12, ">B")
LENGTH_AT = (8, ">i")


def reseal(buf: bytes | bytearray) -> bytes:
    """``buf`` with its CRC recomputed (to test the checks after the CRC)."""
    out = bytearray(buf)
    struct.pack_into(">I", out, 13, crc32c.crc32c(bytes(out[17:])))
    return bytes(out)


def patched(buf: bytes, *fields: tuple[tuple[int, str], int]) -> bytes:
    out = bytearray(buf)
    for (pos, fmt), value in fields:
        struct.pack_into(fmt, out, pos, value)
    return reseal(out)


def sample(n: int = 3, **kwargs: object) -> bytes:
    records = [
        Record(value=b"value-%d" % i, key=b"key-%d" % i, timestamp_ms=1_000 + i, headers=(("h", b"x"),))
        for i in range(n)
    ]
    return encode_batch(records, **kwargs)  # type: ignore[arg-type]


def reason_of(buf: bytes, **kwargs: Any) -> InvalidBatchReason:
    with pytest.raises(InvalidBatch) as info:
        validate_batch(buf, max_batch_bytes=kwargs.pop("max_batch_bytes", MAX), **kwargs)
    assert info.value.message  # says what is wrong
    assert str(info.value).startswith(info.value.reason)
    return info.value.reason


# --- round trips ---------------------------------------------------------------------

records_strategy = st.lists(
    st.builds(
        Record,
        value=st.none() | st.binary(max_size=300),
        key=st.none() | st.binary(max_size=40),
        headers=st.lists(st.tuples(st.text(max_size=10), st.binary(max_size=20)), max_size=3).map(tuple),
        timestamp_ms=st.integers(0, 2**62),
    ),
    min_size=1,
    max_size=20,
)
producer_strategy = st.one_of(
    st.just((-1, -1, -1)),
    st.tuples(st.integers(0, 2**63 - 1), st.integers(0, 2**15 - 1), st.integers(0, 2**31 - 1)),
)


@given(records_strategy, producer_strategy, st.sampled_from(Codec), st.integers(0, 2**62))
def test_round_trip(
    records: list[Record], producer: tuple[int, int, int], codec: Codec, base_offset: int
) -> None:
    pid, epoch, seq = producer
    buf = encode_batch(
        records,
        producer_id=pid,
        producer_epoch=epoch,
        base_sequence=seq,
        codec=codec,
        base_offset=base_offset,
    )
    # A compressed batch passes a limit its uncompressed form fits (and, as
    # gzip can grow small data, its own size): the decompressed-size check
    # refuses nothing an uncompressed batch of the same records would pass.
    plain_size = len(encode_batch(records, producer_id=pid, producer_epoch=epoch, base_sequence=seq))
    header = validate_batch(buf, max_batch_bytes=max(len(buf), plain_size))
    assert header == parse_header(buf) == validate_header(buf, max_batch_bytes=len(buf))
    assert header.size == len(buf)
    assert header.base_offset == base_offset
    assert header.record_count == len(records) == header.last_offset_delta + 1
    assert header.codec == codec
    assert (header.producer_id, header.producer_epoch, header.base_sequence) == producer
    assert header.first_timestamp == records[0].timestamp_ms
    assert header.max_timestamp == max(r.timestamp_ms for r in records)
    assert decode_records(buf) == [
        DecodedRecord(base_offset + i, r.timestamp_ms, r.key, r.value, r.headers)
        for i, r in enumerate(records)
    ]


@given(
    # Sizes drawn from the whole range (st.binary alone stays under 64
    # bytes): one-, two- and three-byte length varints.
    st.lists(st.integers(0, 20_000).map(lambda n: b"v" * n) | st.none(), min_size=1, max_size=4),
    st.integers(0, 2**40),
)
def test_decode_records_as_builds_each_record_with_the_given_callable(
    values: list[bytes | None], base_offset: int
) -> None:
    records = [Record(value=v, key=b"k%d" % i, timestamp_ms=5_000 - i) for i, v in enumerate(values)]
    buf = with_base_offset(encode_batch(records), base_offset)
    built = decode_records_as(buf, lambda *fields: ("built", *fields))
    assert built == [("built", base_offset + i, 5_000 - i, b"k%d" % i, v, ()) for i, v in enumerate(values)]


def test_header_fields_and_layout() -> None:
    buf = sample(4, producer_id=9, producer_epoch=2, base_sequence=2**31 - 2)
    h = parse_header(buf)
    assert HEADER_SIZE == 57
    assert h == BatchHeader(
        base_offset=0,
        batch_length=len(buf) - 12,
        magic=1,
        crc=crc32c.crc32c(buf[17:]),
        attributes=0,
        last_offset_delta=3,
        first_timestamp=1_000,
        max_timestamp=1_003,
        producer_id=9,
        producer_epoch=2,
        base_sequence=2**31 - 2,
        record_count=4,
    )
    assert h.last_sequence == 1  # 2**31-2, 2**31-1, 0, 1
    assert h.last_offset == 3
    assert parse_header(sample(2)).last_sequence == -1


def test_with_base_offset_keeps_the_crc_valid() -> None:
    buf = sample(3)
    moved = with_base_offset(buf, 1234)
    assert validate_batch(moved, max_batch_bytes=MAX).base_offset == 1234
    assert moved[8:] == buf[8:]
    assert [r.offset for r in decode_records(moved)] == [1234, 1235, 1236]
    assert with_base_offset(memoryview(buf), 7)[:8] == struct.pack(">q", 7)


def test_validate_accepts_memoryview_and_bytearray() -> None:
    buf = sample(3, codec=Codec.GZIP)
    assert validate_batch(memoryview(buf), max_batch_bytes=MAX) == validate_batch(
        bytearray(buf), max_batch_bytes=MAX
    )


def test_gzip_compresses_the_records_section() -> None:
    records = [Record(value=b"a" * 1000) for _ in range(10)]
    plain = encode_batch(records)
    packed = encode_batch(records, codec=Codec.GZIP)
    assert len(packed) < len(plain) // 10
    assert packed[HEADER_SIZE : HEADER_SIZE + 2] == b"\x1f\x8b"  # a gzip member
    assert decode_records(packed) == decode_records(plain)


@pytest.mark.parametrize(
    ("kwargs", "records"),
    [
        ({}, []),
        ({"producer_id": -1, "producer_epoch": 0}, [Record(b"x")]),
        ({"producer_id": 1, "producer_epoch": -1, "base_sequence": 0}, [Record(b"x")]),
        ({"producer_id": 1, "producer_epoch": 0, "base_sequence": 2**31}, [Record(b"x")]),
        ({}, [Record(b"x", timestamp_ms=-5)]),
    ],
)
def test_encode_refuses_what_would_be_invalid(kwargs: dict[str, int], records: list[Record]) -> None:
    with pytest.raises(ValueError):
        encode_batch(records, **kwargs)  # type: ignore[arg-type]


# --- every refusal, with its reason ------------------------------------------------------


def test_too_short() -> None:
    buf = sample()
    assert reason_of(buf[: HEADER_SIZE - 1]) == R.BATCH_TOO_SHORT
    assert reason_of(b"") == R.BATCH_TOO_SHORT
    with pytest.raises(InvalidBatch) as info:
        parse_header(buf[:10])
    assert info.value.reason == R.BATCH_TOO_SHORT


def test_too_large() -> None:
    buf = sample()
    assert reason_of(buf, max_batch_bytes=len(buf) - 1) == R.BATCH_TOO_LARGE
    validate_batch(buf, max_batch_bytes=len(buf))  # exactly at the limit is fine


def test_compressed_records_that_expand_too_far_are_too_large() -> None:
    buf = encode_batch([Record(b"\0" * 100_000)], codec=Codec.GZIP)
    assert len(buf) < 1000
    assert reason_of(buf, max_uncompressed_bytes=50_000) == R.DECOMPRESSED_TOO_LARGE
    validate_batch(buf, max_batch_bytes=MAX, max_uncompressed_bytes=200_000)


def test_bad_length() -> None:
    buf = sample()
    assert reason_of(buf[:-1]) == R.BAD_LENGTH
    assert reason_of(buf + b"\0") == R.BAD_LENGTH
    assert reason_of(buf + sample()) == R.BAD_LENGTH  # two batches are not one
    assert reason_of(patched(buf, (LENGTH_AT, len(buf) - 11))) == R.BAD_LENGTH


@pytest.mark.parametrize("magic", [0, 2, 255])
def test_unsupported_version(magic: int) -> None:
    assert reason_of(patched(sample(), (MAGIC_AT, magic))) == R.UNSUPPORTED_VERSION


def test_corrupt_batch() -> None:
    buf = bytearray(sample())
    buf[-3] ^= 0x01  # a bit of the last record's header value
    assert reason_of(bytes(buf)) == R.CORRUPT_BATCH
    buf = bytearray(sample())
    buf[13] ^= 0x80  # the CRC itself
    assert reason_of(bytes(buf)) == R.CORRUPT_BATCH
    buf = bytearray(sample())
    buf[40] ^= 0x01  # producer id: covered by the CRC
    assert reason_of(bytes(buf)) == R.CORRUPT_BATCH


@pytest.mark.parametrize("codec", [2, 3, 7])
def test_unsupported_codec(codec: int) -> None:
    assert reason_of(patched(sample(), (ATTRIBUTES, codec))) == R.UNSUPPORTED_CODEC


@pytest.mark.parametrize("attributes", [0x08, 0x10, 0x4000, -0x8000])
def test_reserved_attribute_bits(attributes: int) -> None:
    assert reason_of(patched(sample(), (ATTRIBUTES, attributes))) == R.UNSUPPORTED_ATTRIBUTES


@pytest.mark.parametrize(
    ("count", "last_delta"),
    [(0, -1), (-1, -2), (3, 3), (3, 1), (4, 2)],
)
def test_bad_record_count(count: int, last_delta: int) -> None:
    buf = patched(sample(3), (RECORD_COUNT, count), (LAST_OFFSET_DELTA, last_delta))
    assert reason_of(buf) == R.BAD_RECORD_COUNT


@pytest.mark.parametrize(("first", "maximum"), [(1_000, 999), (-1, 5), (-5, -1)])
def test_bad_timestamps(first: int, maximum: int) -> None:
    buf = patched(sample(), (FIRST_TIMESTAMP, first), (MAX_TIMESTAMP, maximum))
    assert reason_of(buf) == R.BAD_TIMESTAMPS


@pytest.mark.parametrize(
    ("pid", "epoch", "seq"),
    [(-1, 0, -1), (-1, -1, 0), (-1, 3, 7), (5, -1, 0), (5, 0, -1), (5, -1, -1), (-2, -1, -1), (-7, 0, 0)],
)
def test_bad_producer_fields(pid: int, epoch: int, seq: int) -> None:
    buf = patched(sample(), (PRODUCER_ID, pid), (PRODUCER_EPOCH, epoch), (BASE_SEQUENCE, seq))
    assert reason_of(buf) == R.BAD_PRODUCER_FIELDS


def test_record_count_disagreeing_with_the_frames_is_a_bad_record_count() -> None:
    buf = sample(3)
    more = patched(buf, (RECORD_COUNT, 4), (LAST_OFFSET_DELTA, 3))
    fewer = patched(buf, (RECORD_COUNT, 2), (LAST_OFFSET_DELTA, 1))
    huge = patched(buf, (RECORD_COUNT, 2**31 - 1), (LAST_OFFSET_DELTA, 2**31 - 2))
    assert reason_of(more) == R.BAD_RECORD_COUNT
    assert reason_of(fewer) == R.BAD_RECORD_COUNT
    assert reason_of(huge) == R.BAD_RECORD_COUNT
    # Trailing bytes that are not whole frames are garbage, not a count.
    garbage = bytearray(buf) + b"\x7f"
    struct.pack_into(">i", garbage, 8, len(garbage) - 12)
    assert reason_of(reseal(garbage)) == R.MALFORMED_RECORDS


def test_frame_lengths_are_checked() -> None:
    buf = bytearray(sample(1))
    first_length = buf[HEADER_SIZE]
    buf[HEADER_SIZE] = first_length + 1  # the frame runs past the end
    assert reason_of(reseal(buf)) == R.MALFORMED_RECORDS
    buf[HEADER_SIZE] = 2  # below the smallest possible frame
    assert reason_of(reseal(buf)) == R.MALFORMED_RECORDS
    buf[HEADER_SIZE] = 0xFF  # a varint that never ends
    buf[HEADER_SIZE + 1 : HEADER_SIZE + 7] = b"\xff" * 6
    assert reason_of(reseal(buf)) == R.MALFORMED_RECORDS


def test_long_frame_length_varints_take_the_slow_path() -> None:
    big = encode_batch([Record(b"x" * 40_000), Record(b"y" * 20)])  # a 3-byte length varint
    assert validate_batch(big, max_batch_bytes=MAX).record_count == 2
    assert [len(r.value or b"") for r in decode_records(big)] == [40_000, 20]
    cut = bytearray(big[: HEADER_SIZE + 10])  # inside the first frame's body
    struct.pack_into(">i", cut, 8, len(cut) - 12)
    assert reason_of(patched(bytes(cut), (RECORD_COUNT, 1), (LAST_OFFSET_DELTA, 0))) == R.MALFORMED_RECORDS


def test_bad_gzip_sections_are_malformed() -> None:
    buf = encode_batch([Record(b"abc" * 50)], codec=Codec.GZIP)
    section = buf[HEADER_SIZE:]

    def with_section(new: bytes) -> bytes:
        out = bytearray(buf[:HEADER_SIZE] + new)
        struct.pack_into(">i", out, 8, len(out) - 12)
        return reseal(out)

    assert reason_of(with_section(b"not gzip at all")) == R.MALFORMED_RECORDS
    assert reason_of(with_section(section[:-4])) == R.MALFORMED_RECORDS  # truncated stream
    assert reason_of(with_section(section + b"junk")) == R.MALFORMED_RECORDS  # trailing bytes
    # a valid gzip stream whose content is not record frames
    assert reason_of(with_section(zlib.compress(b"\x01" * 30, wbits=31))) == R.MALFORMED_RECORDS


def test_decode_checks_inside_the_frames() -> None:
    buf = bytearray(sample(2))
    # record 0: length varint, attributes, timestamp delta, offset delta
    offset_delta_at = HEADER_SIZE + 3
    assert buf[offset_delta_at] == 0
    buf[offset_delta_at] = 1
    resealed = reseal(buf)
    validate_batch(resealed, max_batch_bytes=MAX)  # frames are fine as frames
    with pytest.raises(InvalidBatch) as info:
        decode_records(resealed)
    assert info.value.reason == R.MALFORMED_RECORDS
    assert "offset_delta" in info.value.message


def test_decode_validates_first() -> None:
    buf = bytearray(sample(2))
    buf[-1] ^= 0xFF
    with pytest.raises(InvalidBatch) as info:
        decode_records(bytes(buf))
    assert info.value.reason == R.CORRUPT_BATCH


# --- robustness ---------------------------------------------------------------------------


def _validate_then_decode(buf: bytes) -> None:
    """Either may refuse ``buf``, but only with InvalidBatch."""
    try:
        header = validate_batch(buf, max_batch_bytes=MAX, max_uncompressed_bytes=1 << 16)
    except InvalidBatch as exc:
        assert exc.reason in set(InvalidBatchReason)
        return
    assert header.size == len(buf)
    try:
        records = decode_records(buf, max_uncompressed_bytes=1 << 16)
    except InvalidBatch as exc:
        assert exc.reason == R.MALFORMED_RECORDS
        return
    assert len(records) == header.record_count


@given(st.binary(max_size=300))
def test_arbitrary_bytes_raise_only_invalid_batch(data: bytes) -> None:
    _validate_then_decode(data)
    _validate_then_decode(reseal(data) if len(data) >= HEADER_SIZE else data)


@given(st.binary(max_size=300))
def test_arbitrary_records_behind_a_plausible_header(section: bytes) -> None:
    for codec in (Codec.NONE, Codec.GZIP):
        for count in (1, 2, 5):
            head = bytearray(sample(1, codec=codec)[:HEADER_SIZE])
            struct.pack_into(">i", head, 8, HEADER_SIZE - 12 + len(section))
            struct.pack_into(">i", head, 53, count)
            struct.pack_into(">i", head, 19, count - 1)
            _validate_then_decode(reseal(bytes(head) + section))
        gz = bytearray(sample(1, codec=codec)[:HEADER_SIZE])
        packed = zlib.compress(section, wbits=31)
        struct.pack_into(">i", gz, 8, HEADER_SIZE - 12 + len(packed))
        struct.pack_into(">h", gz, 17, 1)
        _validate_then_decode(reseal(bytes(gz) + packed))


@given(
    records_strategy,
    st.sampled_from(Codec),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=5),
    st.booleans(),
    st.integers(0, 10_000),
)
def test_mutated_batches_raise_only_invalid_batch(
    records: list[Record], codec: Codec, flips: list[tuple[int, int]], fix_crc: bool, cut: int
) -> None:
    buf = bytearray(encode_batch(records, codec=codec))
    for position, value in flips:
        buf[position % len(buf)] = value
    mutated = bytes(buf[: max(cut, len(buf) // 2)])
    if fix_crc and len(mutated) >= HEADER_SIZE:
        mutated = reseal(mutated)
    _validate_then_decode(mutated)
    changed_covered_bytes = bytes(buf[17:]) != encode_batch(records, codec=codec)[17:]
    if not fix_crc and changed_covered_bytes and len(mutated) == len(buf):
        with pytest.raises(InvalidBatch):
            validate_batch(mutated, max_batch_bytes=MAX)
