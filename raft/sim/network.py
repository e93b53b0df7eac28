"""The simulated network: latency, drop, duplicate, delay spikes, partitions.

Invariants:
- Every random choice comes from the ``random.Random`` handed in; there is no
  other source of nondeterminism, so the same seed and the same calls give
  the same fates.
- Latencies are whole time units >= 1: a delivery is always strictly in the
  future, so the event loop makes progress. Reordering is not a separate
  fault; it falls out of independent latencies.
- Links are directed: ``(a, b)`` blocked means a's messages do not reach b.
  A symmetric partition blocks both directions of every pair across groups;
  a one-way cut blocks one direction; clogged links are kept in a list so
  they can be restored one at a time in random order. The three sources are
  independent: healing a partition does not undo a cut.
- Whether a link is blocked is decided at *delivery* (a partition also cuts
  messages already in flight); the random drop is decided at send time.
- ``faults`` counts every fault the network injected: each dropped or
  duplicated or delayed message and each partition, cut or clog.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

Link = tuple[int, int]


@dataclass(slots=True)
class LinkFaults:
    """Per-message fault probabilities and latency bounds (time units)."""

    drop: float = 0.0
    duplicate: float = 0.0
    spike: float = 0.0
    min_latency: int = 1
    max_latency: int = 5
    spike_min: int = 20
    spike_max: int = 200


class Network:
    def __init__(self, rng: random.Random, faults: LinkFaults | None = None) -> None:
        self._rng = rng
        self.rates = faults if faults is not None else LinkFaults()
        self._partition: set[Link] = set()
        self._cuts: set[Link] = set()
        self._clogged: list[Link] = []
        self._blocked: frozenset[Link] = frozenset()
        self.faults = 0
        self.dropped = 0
        self.duplicated = 0
        self.delayed = 0

    # --- per message ---

    def plan(self) -> list[int]:
        """Latencies of the copies of one message about to be sent: empty
        when it is dropped, two entries when it is duplicated."""
        rates = self.rates
        rng = self._rng
        if rates.drop and rng.random() < rates.drop:
            self.faults += 1
            self.dropped += 1
            return []
        copies = 1
        if rates.duplicate and rng.random() < rates.duplicate:
            self.faults += 1
            self.duplicated += 1
            copies = 2
        latencies = []
        for _ in range(copies):
            latency = rng.randint(rates.min_latency, rates.max_latency)
            if rates.spike and rng.random() < rates.spike:
                self.faults += 1
                self.delayed += 1
                latency += rng.randint(rates.spike_min, rates.spike_max)
            latencies.append(latency)
        return latencies

    def blocked(self, sender: int, to: int) -> bool:
        """Whether ``sender``'s messages cannot reach ``to`` right now."""
        return (sender, to) in self._blocked

    # --- link faults ---

    def partition(self, groups: Sequence[Iterable[int]]) -> None:
        """Split the nodes into ``groups``: nothing crosses between groups
        (replaces any previous partition; cuts and clogs stay)."""
        members = [sorted(group) for group in groups]
        links: set[Link] = set()
        for i, group in enumerate(members):
            for other in members[i + 1 :]:
                for a in group:
                    for b in other:
                        links.add((a, b))
                        links.add((b, a))
        self._partition = links
        self.faults += 1
        self._rebuild()

    def heal_partition(self) -> None:
        self._partition = set()
        self._rebuild()

    def cut(self, sender: int, to: int) -> None:
        """One-way: ``sender`` can no longer reach ``to`` (the reverse works)."""
        self._cuts.add((sender, to))
        self.faults += 1
        self._rebuild()

    def restore_cut(self, sender: int, to: int) -> None:
        self._cuts.discard((sender, to))
        self._rebuild()

    def clog(self, sender: int, to: int, both_ways: bool = True) -> None:
        """Clog one link (both directions unless told otherwise)."""
        for link in ((sender, to), (to, sender)) if both_ways else ((sender, to),):
            if link not in self._clogged:
                self._clogged.append(link)
        self.faults += 1
        self._rebuild()

    def unclog_one(self) -> Link | None:
        """Restore one clogged link, chosen at random; None if none is."""
        if not self._clogged:
            return None
        link = self._clogged.pop(self._rng.randrange(len(self._clogged)))
        self._rebuild()
        return link

    @property
    def clogged(self) -> tuple[Link, ...]:
        return tuple(self._clogged)

    def heal(self) -> None:
        """Make the network whole and fault free (latency stays normal)."""
        self._partition = set()
        self._cuts = set()
        self._clogged = []
        self._blocked = frozenset()
        self.rates = LinkFaults(min_latency=self.rates.min_latency, max_latency=self.rates.max_latency)

    def _rebuild(self) -> None:
        self._blocked = frozenset(self._partition | self._cuts | set(self._clogged))
