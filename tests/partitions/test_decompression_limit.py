"""Compressed batches against the decompressed-size limit (issue 14).

A 61 KB gzip batch of 60 MiB of zeros (a "zip bomb") must be refused
``DECOMPRESSED_TOO_LARGE`` after inflating at most the limit, by the
codec, by a consumer's decoder and by a replica's produce path (which then
appends nothing). The cost is measured in bytes zlib produced, counted by
wrapping ``zlib.decompressobj``, not in time.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from partitions.replica_errors import ProduceRejected
from raftlog.v1.record_batch import (
    HEADER_SIZE,
    Codec,
    InvalidBatch,
    InvalidBatchReason,
    Record,
    decode_records,
    encode_batch,
    validate_batch,
)
from tests.partitions.replica_cluster import InProcessCluster

pytestmark = pytest.mark.timeout(60)

MiB = 1 << 20
BOMB_RECORDS = 60
SERVER_MAX_BATCH_BYTES = MiB  # ReplicaConfig's (and the cluster config's) default


class _Inflations:
    """Stands in for ``zlib.decompressobj``: counts the inflaters made and
    every byte they produce."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.inflaters = 0
        self.bytes_out = 0

    def __call__(self, *args: Any, **kwargs: Any) -> _CountingInflater:
        self.inflaters += 1
        return _CountingInflater(self._real(*args, **kwargs), self)


class _CountingInflater:
    def __init__(self, inner: Any, counts: _Inflations) -> None:
        self._inner = inner
        self._counts = counts

    def decompress(self, data: Any, max_length: int = 0) -> bytes:
        out: bytes = self._inner.decompress(data, max_length)
        self._counts.bytes_out += len(out)
        return out

    def __getattr__(self, name: str) -> Any:  # eof, unused_data, unconsumed_tail
        return getattr(self._inner, name)


@pytest.fixture
def inflations(monkeypatch: pytest.MonkeyPatch) -> Iterator[_Inflations]:
    counts = _Inflations(zlib.decompressobj)
    monkeypatch.setattr(zlib, "decompressobj", counts)
    yield counts


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """A well-formed gzip batch: 60 records of 1 MiB of zeros, built by the
    SDK's own encoder (the inflated form is only held while building)."""
    buf = encode_batch([Record(b"\0" * MiB, timestamp_ms=1_700_000_000_000)] * BOMB_RECORDS, codec=Codec.GZIP)
    assert len(buf) < 64 * 1024  # the attacker's 61 KB
    return buf


def test_the_bomb_is_a_real_batch_that_only_its_size_refuses(bomb: bytes) -> None:
    header = validate_batch(
        bomb, max_batch_bytes=SERVER_MAX_BATCH_BYTES, max_uncompressed_bytes=BOMB_RECORDS * 2 * MiB
    )
    assert header.record_count == BOMB_RECORDS


def test_a_bomb_is_refused_after_inflating_at_most_the_limit(bomb: bytes, inflations: _Inflations) -> None:
    with pytest.raises(InvalidBatch) as info:
        validate_batch(bomb, max_batch_bytes=SERVER_MAX_BATCH_BYTES)
    assert info.value.reason == InvalidBatchReason.DECOMPRESSED_TOO_LARGE
    assert "send fewer records" in info.value.message
    limit = SERVER_MAX_BATCH_BYTES - HEADER_SIZE
    assert 0 < inflations.bytes_out <= limit + 1  # not the 60 MiB the bomb expands to


def test_the_default_limit_is_the_max_size_of_an_uncompressed_batch() -> None:
    records = [Record(b"\0" * 5000), Record(b"ab" * 700, key=b"k")]
    plain_size = len(encode_batch(records))
    packed = encode_batch(records, codec=Codec.GZIP)
    assert len(packed) < plain_size // 10
    # Fits exactly where the uncompressed batch fits, and not a byte less.
    validate_batch(packed, max_batch_bytes=plain_size)
    validate_batch(encode_batch(records), max_batch_bytes=plain_size)
    with pytest.raises(InvalidBatch) as info:
        validate_batch(packed, max_batch_bytes=plain_size - 1)
    assert info.value.reason == InvalidBatchReason.DECOMPRESSED_TOO_LARGE


def test_a_consumer_inflates_a_bomb_at_most_to_its_limit(bomb: bytes, inflations: _Inflations) -> None:
    with pytest.raises(InvalidBatch) as info:
        decode_records(bomb, max_uncompressed_bytes=MiB)
    assert info.value.reason == InvalidBatchReason.DECOMPRESSED_TOO_LARGE
    assert inflations.bytes_out <= MiB + 1


def test_a_consumer_inflates_each_batch_once(inflations: _Inflations) -> None:
    records = [Record(b"v%d" % i * 100) for i in range(50)]
    packed = encode_batch(records, codec=Codec.GZIP)
    assert [r.value for r in decode_records(packed)] == [r.value for r in records]
    assert inflations.inflaters == 1
    assert inflations.bytes_out == len(encode_batch(records)) - HEADER_SIZE


@pytest.fixture
async def cluster(tmp_path: Path) -> AsyncIterator[InProcessCluster]:
    c = InProcessCluster(tmp_path)
    await c.start()
    yield c
    await c.close()


async def test_a_replica_refuses_a_bomb_and_appends_nothing(
    cluster: InProcessCluster, bomb: bytes, inflations: _Inflations
) -> None:
    leader = await cluster.leader()
    assert cluster.config.replica.max_batch_bytes == SERVER_MAX_BATCH_BYTES
    small = encode_batch([Record(b"\0" * 10_000, timestamp_ms=1_700_000_000_000)], codec=Codec.GZIP)
    await leader.produce(small)  # compressed batches within the limit still go through
    before = leader.status()
    inflations.bytes_out = 0
    with pytest.raises(ProduceRejected) as info:
        await leader.produce(bomb)
    assert info.value.reason == InvalidBatchReason.DECOMPRESSED_TOO_LARGE
    assert inflations.bytes_out <= SERVER_MAX_BATCH_BYTES
    after = leader.status()
    assert before.high_watermark == 1
    assert (after.high_watermark, after.last_index) == (before.high_watermark, before.last_index)
