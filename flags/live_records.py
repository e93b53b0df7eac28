"""What ``LiveFlags`` (flags/live.py) remembers of a tenant's applied
records beyond the store itself, in machine integers: the accepted records'
offsets per environment (``EnvHistory``, for history reads) and the latest
apply results by offset (``ResultWindow``, for writers waiting on theirs).

Invariants:

- ``EnvHistory`` holds offsets in the order added (ascending: the log's
  order), each with its flag's number (0: environment-level), 12 bytes a
  record; ``of_flag(f)`` is the environment-level records and ``f``'s own.
- ``ResultWindow.get(o)`` answers the result added for offset ``o`` while it
  is among the latest ``window`` added, None otherwise; memory stays within
  ``window * 9 / 8`` entries.
"""

from __future__ import annotations

import bisect
from array import array

from flags.store import ApplyResult

__all__ = ["EnvHistory", "ResultWindow"]


class EnvHistory:
    """Offsets of an environment's accepted records, ascending, each with the
    number of its flag (0: an environment-level record): 12 bytes a record,
    whatever the number of flags (an array per flag would cost ~80 bytes of
    overhead per flag). A flag's history is a scan: history is an admin read."""

    __slots__ = ("flag_numbers", "numbers", "offsets")

    def __init__(self) -> None:
        self.offsets: array[int] = array("q")
        self.numbers: array[int] = array("i")
        self.flag_numbers: dict[str, int] = {}

    def add(self, flag: str | None, offset: int) -> None:
        number = 0
        if flag is not None:
            number = self.flag_numbers.setdefault(flag, len(self.flag_numbers) + 1)
        self.offsets.append(offset)
        self.numbers.append(number)

    def of_flag(self, flag: str) -> list[int]:
        number = self.flag_numbers.get(flag, -1)
        return [offset for offset, n in zip(self.offsets, self.numbers, strict=True) if n in (0, number)]


class ResultWindow:
    """The latest ``window`` apply results of a tenant, by offset: offsets in a
    machine-integer array beside the results (found by bisection), trimmed in
    batches so each append costs O(1) amortised. About 16 bytes per result
    besides the result object (a dict and a deque would cost ~100)."""

    __slots__ = ("offsets", "results", "window")

    def __init__(self, window: int) -> None:
        self.window = window
        self.offsets: array[int] = array("q")
        self.results: list[ApplyResult] = []

    def add(self, offset: int, result: ApplyResult) -> None:
        self.offsets.append(offset)
        self.results.append(result)
        excess = len(self.results) - self.window
        if excess > self.window // 8:
            del self.offsets[:excess]
            del self.results[:excess]

    def get(self, offset: int) -> ApplyResult | None:
        index = bisect.bisect_left(self.offsets, offset)
        if index == len(self.offsets) or self.offsets[index] != offset:
            return None
        # Entries past the window wait for the next batch trim: hide them now.
        if index < len(self.offsets) - self.window:
            return None
        return self.results[index]

    def __len__(self) -> int:
        return min(len(self.results), self.window)
