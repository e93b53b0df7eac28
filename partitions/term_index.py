"""``TermIndex``: the term of every entry of a log, kept as runs of equal terms.

Raft terms never decrease along a log, and a term changes only when a new
leader appends, so a log of millions of entries has a handful of runs. Keeping
the runs in memory answers ``term(i)`` for every stored entry without reading
RocksDB (the core asks for terms on every append and append response).

Invariants (a ``TermIndex`` is immutable; every change returns a new one):

- ``starts`` is strictly increasing and ``terms`` strictly increasing, with
  equal lengths: run ``k`` covers ``[starts[k], starts[k + 1])`` with term
  ``terms[k]``, the last run ends at ``last``.
- An empty index has no runs and ``last == first - 1``; otherwise it covers
  exactly ``[starts[0], last]``.
- Adjacent runs never share a term (appending entries of the last run's term
  extends it).
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TermIndex:
    first: int
    last: int
    starts: tuple[int, ...] = ()
    terms: tuple[int, ...] = ()

    @classmethod
    def empty(cls, first: int) -> TermIndex:
        """No entries; the next appended entry has index ``first``."""
        return cls(first=first, last=first - 1)

    @classmethod
    def scan(cls, first: int, last: int, term_at: Callable[[int], int]) -> TermIndex:
        """Rebuild the runs of a stored log ``[first, last]`` from point reads.

        Binary search for each run's end: ``O(runs * log(entries))`` reads of
        ``term_at``, instead of reading the whole log at start-up.
        """
        starts: list[int] = []
        terms: list[int] = []
        lo = first
        while lo <= last:
            term = term_at(lo)
            a, b = lo, last
            while a < b:
                mid = (a + b + 1) // 2
                if term_at(mid) == term:
                    a = mid
                else:
                    b = mid - 1
            starts.append(lo)
            terms.append(term)
            lo = a + 1
        index = cls(first=first, last=last, starts=tuple(starts), terms=tuple(terms))
        index.check()
        return index

    def check(self) -> None:
        """Raise ``ValueError`` if the invariants do not hold."""
        if len(self.starts) != len(self.terms):
            raise ValueError("starts and terms differ in length")
        if not self.starts:
            if self.last != self.first - 1:
                raise ValueError(f"empty index must end at {self.first - 1}, not {self.last}")
            return
        if self.starts[0] != self.first or self.last < self.starts[-1]:
            raise ValueError(f"runs {self.starts} do not cover [{self.first}, {self.last}]")
        for k in range(1, len(self.starts)):
            if self.starts[k] <= self.starts[k - 1] or self.terms[k] <= self.terms[k - 1]:
                raise ValueError(f"runs out of order at {k}: {self.starts}, {self.terms}")

    def term(self, index: int) -> int:
        """The term of entry ``index``; ``first <= index <= last`` is the
        caller's to check."""
        if not self.first <= index <= self.last:
            raise IndexError(f"index {index} outside [{self.first}, {self.last}]")
        return self.terms[bisect.bisect_right(self.starts, index) - 1]

    def last_term(self) -> int | None:
        return self.terms[-1] if self.terms else None

    def truncate_after(self, index: int) -> TermIndex:
        """Keep entries ``<= index`` (``index >= first - 1``)."""
        if index >= self.last:
            return self
        if index < self.first:
            return TermIndex.empty(self.first)
        k = bisect.bisect_right(self.starts, index)
        return TermIndex(self.first, index, self.starts[:k], self.terms[:k])

    def append(self, first: int, terms: Iterable[int]) -> TermIndex:
        """Add entries ``first, first + 1, ...`` with ``terms``; ``first`` must
        be ``last + 1`` and the terms must not decrease (nor go below the last
        run's)."""
        if first != self.last + 1:
            raise ValueError(f"appending at {first}, expected {self.last + 1}")
        starts = list(self.starts)
        run_terms = list(self.terms)
        index = first - 1
        for index, term in enumerate(terms, start=first):
            if run_terms and term == run_terms[-1]:
                continue
            if run_terms and term < run_terms[-1]:
                raise ValueError(f"term {term} at {index} is below the previous term {run_terms[-1]}")
            starts.append(index)
            run_terms.append(term)
        if index < first:
            return self
        return TermIndex(self.first, index, tuple(starts), tuple(run_terms))

    def drop_through(self, index: int) -> TermIndex:
        """Forget entries ``<= index``: the index then starts at ``index + 1``."""
        if index < self.first:
            return self
        if index >= self.last:
            return TermIndex.empty(index + 1)
        k = bisect.bisect_right(self.starts, index + 1) - 1  # the run holding index + 1
        starts = (index + 1, *self.starts[k + 1 :])
        return TermIndex(index + 1, self.last, starts, self.terms[k:])
