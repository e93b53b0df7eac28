"""``EntryCache``: the newest durable entries of one group, kept in memory.

Right after an entry is written it is read back twice on the hot path: the
replica applies it once it commits, and consumers tailing the partition
fetch it. Both would otherwise read it from RocksDB (a copy of up to 1 MiB
per entry, and ~3% of a node's CPU under load, py-spy). The cache keeps the
tail of the log that ``GroupStorage`` already holds in the Entry objects it
was given to write.

Invariants:

- The cached entries are contiguous (``first .. last``) and are exactly what
  the group has durably stored at those indexes: the storage updates the
  cache only from ``apply_prepared`` (after the write is durable), drops a
  suffix the log overwrote or truncated, and drops a prefix compaction or a
  snapshot removed.
- At most ``max_bytes`` (by ``Entry.size()``) are kept; the oldest go first.
  The newest entry is always kept, however large.
- ``get`` answers only a range it holds completely, else None (the caller
  reads RocksDB), so a hit and a miss return the same entries.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

from raft.storage import limit_size
from raft.types import Entry

DEFAULT_CACHE_BYTES = 4 << 20


class EntryCache:
    __slots__ = ("_bytes", "_entries", "max_bytes")

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._entries: deque[Entry] = deque()
        self._bytes = 0

    @property
    def first(self) -> int:
        """Index of the oldest cached entry (0 when empty)."""
        return self._entries[0].index if self._entries else 0

    @property
    def last(self) -> int:
        return self._entries[-1].index if self._entries else 0

    def __len__(self) -> int:
        return len(self._entries)

    def append(self, entries: Sequence[Entry]) -> None:
        """``entries`` (contiguous) are now durable; they replace any cached
        entries from their first index on. A gap before them empties the
        cache first, so it stays contiguous."""
        if not entries or self.max_bytes <= 0:  # 0 turns the cache off
            return
        start = entries[0].index
        if self._entries and not self.first <= start <= self.last + 1:
            self.clear()
        else:
            self.truncate_after(start - 1)
        for entry in entries:
            self._entries.append(entry)
            self._bytes += entry.size()
        while len(self._entries) > 1 and self._bytes > self.max_bytes:
            self._bytes -= self._entries.popleft().size()

    def replace(self, entries: Sequence[Entry]) -> None:
        """Entries rewritten in place (same index and term, new data: key
        compaction): swap the cached copies of those indexes, if any."""
        cached = self._entries
        if not cached:
            return
        first, last = self.first, self.last
        for entry in entries:
            if first <= entry.index <= last:
                position = entry.index - first
                self._bytes += entry.size() - cached[position].size()
                cached[position] = entry

    def truncate_after(self, index: int) -> None:
        """Forget entries after ``index`` (the log was cut there)."""
        while self._entries and self._entries[-1].index > index:
            self._bytes -= self._entries.pop().size()

    def drop_through(self, index: int) -> None:
        """Forget entries up to ``index`` (compacted or replaced by a snapshot)."""
        while self._entries and self._entries[0].index <= index:
            self._bytes -= self._entries.popleft().size()

    def clear(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def get(self, lo: int, hi: int, max_bytes: int | None) -> list[Entry] | None:
        """Entries ``[lo, hi)`` limited like ``Storage.entries``, or None
        when the cache does not hold all of them."""
        if not self._entries or lo < self.first or hi - 1 > self.last:
            return None
        offset = lo - self.first
        wanted = [self._entries[i] for i in range(offset, offset + (hi - lo))]
        return limit_size(wanted, max_bytes)
