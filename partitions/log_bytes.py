"""``LogBytes``: how many bytes of a replica's log lie after a given index,
for a leader's follower-lag-in-bytes gauge.

The replica records every entry it stores (index and ``Entry.size()``, the
size Raft's own limits count) as a running total; bytes after index ``i``
are then the total at the last index minus the total at ``i``: one bisect,
read at scrape time only.

Invariants:

- ``indexes`` is strictly increasing and ``totals[k] - base`` is the sum
  of the sizes of the recorded entries up to ``indexes[k]`` (``base``: the
  total of the records dropped from the front). Storing an entry at
  an index already recorded (a follower's log overwritten by a new leader)
  first forgets that index and every later one.
- Memory stays bounded: past ``keep_at_most`` records the oldest are
  dropped, down to the lowest index still wanted (``trim``'s ``floor``, the
  slowest follower's match on a leader) but never keeping more than
  ``keep_at_most``. Bytes below the oldest record are estimated at the
  window's average entry size (``bytes_after`` says whether it estimated).
- A snapshot install resets the record (the entries before it are gone).
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Sequence

from raft.types import Entry

__all__ = ["DEFAULT_KEEP", "LogBytes"]

DEFAULT_KEEP = 1024
"""Records kept per replica: 16 KiB of arrays at most (two int64 each)."""


class LogBytes:
    __slots__ = ("_base", "_indexes", "_keep", "_totals")

    def __init__(self, keep_at_most: int = DEFAULT_KEEP) -> None:
        self._keep = keep_at_most
        self._indexes = array("q")
        self._totals = array("q")
        self._base = 0

    def __len__(self) -> int:
        return len(self._indexes)

    def record(self, entries: Sequence[Entry]) -> None:
        """Entries just stored, in index order."""
        if not entries:
            return
        indexes = self._indexes
        totals = self._totals
        if indexes and entries[0].index <= indexes[-1]:
            cut = bisect_right(indexes, entries[0].index - 1)
            del indexes[cut:]
            del totals[cut:]
        total = totals[-1] if totals else self._base
        for entry in entries:
            total += len(entry.data) + 16  # Entry.size(), without the call
            indexes.append(entry.index)
            totals.append(total)

    def needs_trim(self) -> bool:
        return len(self._indexes) > 2 * self._keep

    def trim(self, floor: int) -> None:
        """Drop records below ``floor`` (an index nobody asks about any
        more), and in any case all but the newest ``keep_at_most``."""
        indexes = self._indexes
        cut = max(bisect_right(indexes, floor - 1), len(indexes) - self._keep)
        if cut > 0:
            self._base = self._totals[cut - 1]
            del indexes[:cut]
            del self._totals[:cut]

    def reset(self) -> None:
        del self._indexes[:]
        del self._totals[:]
        self._base = 0

    def bytes_after(self, index: int, last_index: int) -> tuple[int, bool]:
        """Bytes of the entries in ``(index, last_index]`` and whether part
        of it is an estimate (entries older than the oldest record, or
        newer than the newest, counted at the average recorded size)."""
        if last_index <= index:
            return 0, False
        indexes = self._indexes
        totals = self._totals
        if not indexes:
            return 0, True
        base = self._base
        average = (totals[-1] - base) // len(totals)
        first = indexes[0]
        if last_index < first:
            return (last_index - index) * average, True
        upto = bisect_right(indexes, last_index) - 1
        end_total = totals[upto] if upto >= 0 else base
        estimated = False
        if last_index > indexes[-1]:
            end_total += (last_index - indexes[-1]) * average
            estimated = True
        if index >= first - 1:
            at = bisect_right(indexes, index) - 1
            return max(0, end_total - (totals[at] if at >= 0 else base)), estimated
        # Below the window: everything recorded up to last_index, plus the
        # unrecorded entries in (index, first) at the average size.
        below = (first - 1 - index) * average
        return max(0, end_total - base + below), True
