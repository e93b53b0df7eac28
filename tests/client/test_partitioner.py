"""The partitioner: murmur2 as Kafka computes it, stable across processes,
an even spread, and sticky or round-robin placement of keyless records."""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from client.partitioner import DefaultPartitioner, RoundRobinPartitioner, key_partition, murmur2

REPO = Path(__file__).resolve().parents[2]

# Kafka's own test vectors for its murmur2 (signed 32-bit results).
KAFKA_VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


# librdkafka's vectors for the same hash (src/rdmurmur2.c, unittest_murmur2,
# "java_murmur2_results"), as the unsigned 32-bit values it lists. Kafka's own
# vectors above have no input whose length is 1 modulo 4 (a one-byte tail);
# "kafka", "giberish123456789", "4" and "reAmble..." do.
LIBRDKAFKA_VECTORS = {
    b"kafka": 0xD067CF64,
    b"giberish123456789": 0x8F552B0C,
    b"1234": 0x9FC97B14,
    b"234": 0xE7C009CA,
    b"34": 0x873930DA,
    b"4": 0x5A4B5CA1,
    b"PreAmbleWillBeRemoved,ThePrePartThatIs": 0x78424F1C,
    b"reAmbleWillBeRemoved,ThePrePartThatIs": 0x4A62B377,
    b"eAmbleWillBeRemoved,ThePrePartThatIs": 0xE0E4E09E,
    b"AmbleWillBeRemoved,ThePrePartThatIs": 0x62B8B43F,
    b"": 0x106E08D9,
}


@pytest.mark.parametrize(("data", "expected"), sorted(KAFKA_VECTORS.items()))
def test_murmur2_matches_kafka(data: bytes, expected: int) -> None:
    assert murmur2(data) == expected


@pytest.mark.parametrize(("data", "unsigned"), sorted(LIBRDKAFKA_VECTORS.items()))
def test_murmur2_matches_librdkafka(data: bytes, unsigned: int) -> None:
    assert murmur2(data) == unsigned - (1 << 32) * (unsigned >> 31)


def test_the_published_vectors_cover_every_tail_length() -> None:
    lengths = {len(data) % 4 for data in [*KAFKA_VECTORS, *LIBRDKAFKA_VECTORS]}
    assert lengths == {0, 1, 2, 3}


def test_murmur2_covers_every_tail_length_and_empty_input() -> None:
    values = {murmur2(b"abcdefgh"[:n]) for n in range(9)}
    assert len(values) == 9
    assert all(-(2**31) <= v < 2**31 for v in values)


KEYS = [f"user-{i}".encode() for i in range(300)] + [bytes([i]) * (i % 13) for i in range(40)]


def test_key_partition_is_the_same_in_other_processes_with_other_hash_seeds() -> None:
    """``hash()`` of bytes changes with PYTHONHASHSEED; the partition must not."""
    here = [key_partition(k, 7) for k in KEYS]
    program = (
        "import json, sys\n"
        "from client.partitioner import key_partition\n"
        "keys = [bytes.fromhex(h) for h in json.load(sys.stdin)]\n"
        "print(json.dumps([key_partition(k, 7) for k in keys]))\n"
    )
    for seed in ("0", "1", "12345"):
        env = {
            **os.environ,
            "PYTHONHASHSEED": seed,
            "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "proto")]),
        }
        result = subprocess.run(
            [sys.executable, "-c", program],
            input=json.dumps([k.hex() for k in KEYS]),
            capture_output=True,
            text=True,
            env=env,
            cwd=REPO,
            timeout=60,
            check=True,
        )
        assert json.loads(result.stdout) == here, f"PYTHONHASHSEED={seed} moved keys"


def test_keys_spread_evenly() -> None:
    for partitions in (3, 7):
        counts = Counter(key_partition(f"k{i}".encode(), partitions) for i in range(21_000))
        expected = 21_000 / partitions
        assert set(counts) == set(range(partitions))
        assert all(abs(c - expected) < 0.1 * expected for c in counts.values()), counts


def test_key_partition_is_kafkas_positive_modulo() -> None:
    assert key_partition(b"foobar", 3) == (-790332482 & 0x7FFFFFFF) % 3
    assert key_partition(b"abc", 10) == 479470107 % 10
    with pytest.raises(ValueError):
        key_partition(b"x", 0)


def test_default_partitioner_sends_keys_by_hash_and_keyless_records_sticky() -> None:
    partitioner = DefaultPartitioner(sticky_bytes=1000, rng=random.Random(3))
    replay = random.Random(3)  # the draws the partitioner makes, in order
    for key in KEYS[:50]:
        assert partitioner.partition("t", key, 5, 100) == key_partition(key, 5)
    placed = [partitioner.partition("t", None, 5, 100) for _ in range(100)]
    runs = [placed[i : i + 10] for i in range(0, 100, 10)]
    assert all(len(set(run)) == 1 for run in runs), "ten 100-byte records per 1000 sticky bytes"
    assert all((b[0] - a[0]) % 5 == 1 for a, b in itertools.pairwise(runs)), "then the next"
    start = replay.randrange(5)
    assert [run[0] for run in runs] == [(start + i) % 5 for i in range(10)], "a random start"
    assert Counter(placed) == Counter({p: 20 for p in range(5)})
    # Another topic has its own sticky partition (its own random start).
    assert partitioner.partition("other", None, 2, 10) == replay.randrange(2)
    # Fewer partitions: a sticky partition beyond them is redrawn; within
    # them, it is full (1000 bytes went there), so the next one follows.
    # Then two 600-byte records per partition (the second crosses 1000).
    last = runs[-1][0]
    first = replay.randrange(2) if last >= 2 else (last + 1) % 2
    expected = [first, first, 1 - first, 1 - first] * 2 + [first, first]
    assert [partitioner.partition("t", None, 2, 600) for _ in range(10)] == expected


def test_round_robin_partitioner_moves_on_with_every_record() -> None:
    partitioner = RoundRobinPartitioner()
    assert [partitioner.partition("t", None, 3, 10) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]
    assert partitioner.partition("t", b"abc", 3, 10) == key_partition(b"abc", 3)
