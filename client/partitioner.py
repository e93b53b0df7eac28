"""Choosing a partition for a record.

- A record with a key goes to ``murmur2(key) & 0x7fffffff`` modulo the
  partition count: the same key always lands on the same partition, in any
  process, on any Python version and platform (the hash is computed here
  from the bytes, never with ``hash()``, which is salted per process). The
  hash is Kafka's default one (MurmurHash2, seed ``0x9747b28c``), so keys
  spread over partitions the way Kafka clients spread them.
- A record without a key has no placement to keep. ``DefaultPartitioner``
  sends such records to one partition ("sticky") until ``sticky_bytes`` of
  them went there, then moves to the next partition: batches fill up (fewer,
  larger produce requests) and every partition still gets its share.
  ``RoundRobinPartitioner`` moves on with every record instead.

A partitioner is called from one event loop, only from ``Producer.send``.
"""

from __future__ import annotations

import random
from typing import Protocol

__all__ = [
    "DefaultPartitioner",
    "Partitioner",
    "RoundRobinPartitioner",
    "key_partition",
    "murmur2",
]

_MASK32 = 0xFFFFFFFF
_M = 0x5BD1E995
_SEED = 0x9747B28C


def murmur2(data: bytes) -> int:
    """32-bit MurmurHash2 of ``data`` with Kafka's seed, as a signed 32-bit
    integer (the value Kafka's Java client computes for the same bytes)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK32
    whole = length - length % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * _M) & _MASK32
        k ^= k >> 24
        k = (k * _M) & _MASK32
        h = ((h * _M) & _MASK32) ^ k
    tail = length - whole
    if tail:
        # The trailing 1-3 bytes, little-endian, mixed in once.
        h ^= int.from_bytes(data[whole:], "little")
        h = (h * _M) & _MASK32
    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def key_partition(key: bytes, num_partitions: int) -> int:
    """The partition of a keyed record (stable; see the module docstring)."""
    if num_partitions < 1:
        raise ValueError(f"num_partitions must be >= 1, got {num_partitions}")
    return (murmur2(key) & 0x7FFFFFFF) % num_partitions


class Partitioner(Protocol):
    """Chooses the partition of a record that names none."""

    def partition(self, topic: str, key: bytes | None, num_partitions: int, record_bytes: int) -> int:
        """A partition in ``range(num_partitions)``; ``record_bytes`` is the
        record's encoded size (for partitioners that balance bytes)."""
        ...


class DefaultPartitioner:
    """Keys by murmur2; keyless records sticky for ``sticky_bytes``."""

    def __init__(self, sticky_bytes: int = 256 * 1024, *, rng: random.Random | None = None) -> None:
        if sticky_bytes < 1:
            raise ValueError(f"sticky_bytes must be >= 1, got {sticky_bytes}")
        self.sticky_bytes = sticky_bytes
        self._rng = rng or random.Random()
        # topic -> (current partition, bytes sent to it so far)
        self._sticky: dict[str, tuple[int, int]] = {}

    def partition(self, topic: str, key: bytes | None, num_partitions: int, record_bytes: int) -> int:
        if key is not None:
            return key_partition(key, num_partitions)
        current = self._sticky.get(topic)
        if current is None or current[0] >= num_partitions:
            # A random start, so that many producers do not all begin on
            # partition 0.
            current = (self._rng.randrange(num_partitions), 0)
        partition, used = current
        if used >= self.sticky_bytes:
            partition, used = (partition + 1) % num_partitions, 0
        self._sticky[topic] = (partition, used + record_bytes)
        return partition


class RoundRobinPartitioner:
    """Keys by murmur2; keyless records to each partition in turn."""

    def __init__(self) -> None:
        self._next: dict[str, int] = {}

    def partition(self, topic: str, key: bytes | None, num_partitions: int, record_bytes: int) -> int:
        if key is not None:
            return key_partition(key, num_partitions)
        partition = self._next.get(topic, 0) % num_partitions
        self._next[topic] = partition + 1
        return partition
