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

Where the code is (one job per module; this module is the one import path
for every name below, and its docstring the one statement of the format):

========================= ==============================================
module                    what
========================= ==============================================
``record_batch_format``   constants, the header struct, ``Codec``, the
                          errors, ``Record`` / ``DecodedRecord`` /
                          ``BatchHeader``, ``parse_header``,
                          ``with_base_offset``
``record_batch_validate`` ``validate_header``, ``validate_batch``, the
                          frame walk and the bounded inflate
``record_batch_encode``   ``encode_batch``, ``encode_compacted_batch``
``record_batch_decode``   ``decode_records``, ``decode_records_as``
========================= ==============================================

The names are re-exported, not wrapped: ``record_batch.encode_batch`` is the
function itself, so the hot paths pay no extra call.
"""

from __future__ import annotations

from raftlog.v1.record_batch_decode import RecordBuilder, decode_records, decode_records_as

# Private, re-exported for tests/client/test_producer_many.py (it checks the
# SDK's varint sizing against the encoder's varints).
from raftlog.v1.record_batch_encode import _uvarint_bytes as _uvarint_bytes
from raftlog.v1.record_batch_encode import encode_batch, encode_compacted_batch
from raftlog.v1.record_batch_format import (
    COMPACTED_ATTRIBUTE,
    HEADER_SIZE,
    MAGIC,
    MAX_UNCOMPRESSED_RECORDS_BYTES,
    BatchHeader,
    BytesLike,
    Codec,
    DecodedRecord,
    InvalidBatch,
    InvalidBatchReason,
    Record,
    parse_header,
    with_base_offset,
)
from raftlog.v1.record_batch_validate import validate_batch, validate_header

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
