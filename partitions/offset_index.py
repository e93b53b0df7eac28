"""Where each retained batch of a partition is: its Raft entry, offsets, size
and times, in compact parallel arrays.

One row per appended batch, in log order, kept in six ``array('q')``
columns (48 bytes per batch, no Python object per batch):

- ``raft_index``: the Raft entry holding the batch (strictly increasing);
- ``base_offset``: its first offset (strictly increasing, contiguous: a
  batch ends where the next begins; the last ends at ``end_offset``);
- ``cum_end``: bytes of all batches ever appended up to and including this
  one (a batch's size is the difference with the row before, or with
  ``cum_start`` for the first row), so byte sums are one subtraction;
- ``append_time``: the state machine's clock when it was appended
  (non-decreasing, so time retention is a prefix found by bisection);
- ``max_timestamp``: the batch's ``max_timestamp`` (producer time, any
  order);
- ``ts_prefix``: the running maximum of ``max_timestamp`` over the retained
  rows, non-decreasing, so "first batch whose ``max_timestamp`` >= t" is a
  bisection. Recomputed when rows are dropped (retention, rare).

Invariants: the columns have equal lengths; rows are only appended at the
end and dropped from the front (``drop_through``); a row's size changes
only when key compaction rewrote its batch (``resize``).
"""

from __future__ import annotations

import itertools
from array import array
from bisect import bisect_left, bisect_right
from dataclasses import dataclass

__all__ = ["BatchIndex", "BatchLocation", "OffsetOutOfRange"]


class OffsetOutOfRange(LookupError):
    """A fetch offset outside ``log_start_offset .. high_watermark``."""

    def __init__(self, offset: int, log_start_offset: int, high_watermark: int) -> None:
        super().__init__(
            f"offset {offset} is out of range: the partition holds offsets {log_start_offset} "
            f"to {high_watermark - 1} (next offset {high_watermark}); fetch from one of those"
        )
        self.offset = offset
        self.log_start_offset = log_start_offset
        self.high_watermark = high_watermark


@dataclass(frozen=True, slots=True)
class BatchLocation:
    """One batch to serve: read Raft entry ``raft_index``, patch its base
    offset to ``base_offset``."""

    raft_index: int
    base_offset: int
    last_offset: int
    size_bytes: int


class BatchIndex:
    """The retained batches of one partition (see the module docstring)."""

    __slots__ = (
        "_append_time",
        "_base_offset",
        "_cum_end",
        "_cum_start",
        "_max_timestamp",
        "_raft_index",
        "_ts_prefix",
        "end_offset",
    )

    def __init__(self, start_offset: int = 0) -> None:
        self._raft_index = array("q")
        self._base_offset = array("q")
        self._cum_end = array("q")
        self._append_time = array("q")
        self._max_timestamp = array("q")
        self._ts_prefix = array("q")
        self._cum_start = 0
        self.end_offset = start_offset
        """The offset after the last batch (the next offset to assign)."""

    def __len__(self) -> int:
        return len(self._raft_index)

    @property
    def retained_bytes(self) -> int:
        """Batch bytes of all rows."""
        return self._cum_end[-1] - self._cum_start if self._cum_end else 0

    @property
    def first_offset(self) -> int:
        """Base offset of the first row, or ``end_offset`` when empty."""
        return self._base_offset[0] if self._base_offset else self.end_offset

    def raft_index_at(self, row: int) -> int:
        return self._raft_index[row]

    def memory_bytes(self) -> int:
        """Bytes held by the six columns (with the arrays' spare capacity)."""
        columns = (
            self._raft_index,
            self._base_offset,
            self._cum_end,
            self._append_time,
            self._max_timestamp,
            self._ts_prefix,
        )
        return sum(column.buffer_info()[1] * column.itemsize for column in columns)

    def append(
        self, raft_index: int, base_offset: int, record_count: int, size: int, append_time: int, max_ts: int
    ) -> None:
        if base_offset != self.end_offset or record_count < 1:
            raise ValueError(f"batch at {base_offset} (+{record_count}) does not follow {self.end_offset}")
        if self._raft_index and raft_index <= self._raft_index[-1]:
            raise ValueError(f"raft index {raft_index} does not follow {self._raft_index[-1]}")
        self._raft_index.append(raft_index)
        self._base_offset.append(base_offset)
        self._cum_end.append((self._cum_end[-1] if self._cum_end else self._cum_start) + size)
        self._append_time.append(append_time)
        self._max_timestamp.append(max_ts)
        self._ts_prefix.append(max(self._ts_prefix[-1], max_ts) if self._ts_prefix else max_ts)
        self.end_offset = base_offset + record_count

    def end_of_rows(self, rows: int) -> int:
        """The offset after the first ``rows`` rows."""
        return self._base_offset[rows] if rows < len(self._base_offset) else self.end_offset

    def append_time_at(self, row: int) -> int:
        return self._append_time[row]

    def bytes_after(self, offset: int) -> int:
        """Batch bytes of the rows whose base offset is after ``offset``."""
        row = bisect_right(self._base_offset, offset)
        if row >= len(self._cum_end):
            return 0
        before = self._cum_end[row - 1] if row else self._cum_start
        return self._cum_end[-1] - before

    def row_after(self, offset: int) -> int:
        """The first row whose base offset is after ``offset``."""
        return bisect_right(self._base_offset, offset)

    def resize(self, sizes: dict[int, int]) -> int:
        """Set the size of the rows of Raft entries ``sizes`` maps (others
        are ignored); returns the bytes this removed. One pass over the
        rows from the first changed one."""
        if not sizes:
            return 0
        raft = self._raft_index
        first = min(bisect_left(raft, index) for index in sizes)
        cum_end = self._cum_end
        before = cum_end[first - 1] if first else self._cum_start
        old_total = cum_end[-1] if cum_end else self._cum_start
        running = before
        for row in range(first, len(cum_end)):
            size = cum_end[row] - before
            before = cum_end[row]
            running += sizes.get(raft[row], size)
            cum_end[row] = running
        return old_total - (cum_end[-1] if cum_end else self._cum_start)

    def locate(self, offset: int, max_bytes: int) -> list[BatchLocation]:
        """Batches from the one holding ``offset`` (which must be in
        ``first_offset .. end_offset - 1``) while their total size stays
        within ``max_bytes``, always at least one."""
        row = bisect_right(self._base_offset, offset) - 1
        if row < 0 or offset >= self.end_offset:
            raise ValueError(f"offset {offset} is not in {self.first_offset}..{self.end_offset - 1}")
        cum_end = self._cum_end
        before = cum_end[row - 1] if row else self._cum_start
        stop = max(bisect_right(cum_end, before + max_bytes, row), row + 1)
        bases = self._base_offset
        raft = self._raft_index
        n = len(bases)
        found = []
        for i in range(row, stop):
            next_base = bases[i + 1] if i + 1 < n else self.end_offset
            found.append(BatchLocation(raft[i], bases[i], next_base - 1, cum_end[i] - before))
            before = cum_end[i]
        return found

    def offset_for_timestamp(self, timestamp_ms: int) -> int | None:
        """Base offset of the first batch whose ``max_timestamp`` >= the
        timestamp, or None."""
        row = bisect_left(self._ts_prefix, timestamp_ms)
        return self._base_offset[row] if row < len(self._ts_prefix) else None

    def rows_appended_before(self, time_ms: int) -> int:
        """How many leading rows were appended strictly before ``time_ms``."""
        return bisect_left(self._append_time, time_ms)

    def rows_beyond_bytes(self, keep_bytes: int) -> int:
        """How many leading rows can go while the rest still holds at least
        ``keep_bytes`` batch bytes."""
        if not self._cum_end:
            return 0
        return bisect_right(self._cum_end, self._cum_end[-1] - keep_bytes)

    def drop_through(self, raft_index: int) -> int:
        """Drop the rows of entries at or before ``raft_index``; returns how many."""
        rows = bisect_right(self._raft_index, raft_index)
        if rows == 0:
            return 0
        self._cum_start = self._cum_end[rows - 1]
        for column in (
            self._raft_index,
            self._base_offset,
            self._cum_end,
            self._append_time,
            self._max_timestamp,
        ):
            del column[:rows]
        self._ts_prefix = array("q", itertools.accumulate(self._max_timestamp, max))
        return rows
