"""A node's share of a tenant's cluster-wide rate quota, from the demand
each node measures (pure: reports and time passed in).

Every node charges a tenant's calls against token buckets of its own
(nodes do not ask each other per call: that would put a network round trip
on every produce). So each node is given a *share* of the tenant's quota,
and the shares must never add up to more than the quota while following
where the tenant's traffic actually goes (a tenant writing to one of its
100 partitions must get its whole quota there, not 1 %).

The rule. Every node measures, per tenant and per rate (produce bytes,
fetch bytes, requests), its *offered* load over the last
``DEMAND_WINDOW_S``: what it admitted, plus what it refused, plus what it
delayed once more (work that found the bucket in debt is counted twice, so
a node whose share is too small shows more demand than it serves). The
nodes exchange these figures about once a second (usage_poller.py). Node
``i`` of ``n`` then runs at

    share_i = quota * (floor + (1 - n * floor) * own_i / (own_i + sum_j other_j))

where ``floor = FLOOR_TOTAL / n`` (so a node that has seen no demand yet
still admits at once), ``other_j`` is the latest fresh report of node ``j``
(``usage.STALE_S``) and ``own_i`` is *the smallest of the figures node i
has published that another node may still hold* (``DemandLedger``), and its
live figure. When the sum is 0 (nobody has demand data: a tenant idle
until now) the node falls back to ``quota * (floor + (1 - n * floor) *
fallback_i)`` with ``fallback_i`` the fraction of the tenant's partitions
it leads (bytes: the SDK sends produce and fetch to leaders) or ``1 / n``
(requests, which reach every node).

Why the shares never add up to more than the quota. Write ``d_i`` for the
``own_i`` node i uses. Every other node j holds some figure node i
published (or none, which counts as 0), and ``own_i`` is at most each of
those (the ledger keeps every figure an asker may hold: the one it says it
holds and those answered to it since; an asker holding none makes it 0),
so in node j's denominator ``other_i >= d_i``. Hence node i's
fraction ``d_i / (d_i + sum_j other_j) <= d_i / sum_k d_k``, and the
fractions of all nodes add up to at most ``sum_i d_i / sum_k d_k = 1``;
with the floors, ``sum_i share_i <= quota * (n * floor + (1 - n * floor))
= quota``. A node in the fallback sees every ``other_j = 0``, so every node
that reports to it has ``d_j = 0`` and runs at its floor; the fallback
fractions add up to at most 1 (one leader per partition; ``1 / n`` each),
so a mix of fallback and demand nodes stays within the quota too. The
assumptions: every node hears every other node within ``STALE_S`` (a node
whose reports stop is taken to have no demand: it is down, or cut off from
the majority and not leading for long), the nodes agree on ``n`` (a node
joining or leaving: until every node has applied it) and on who leads
(during a leadership move, the fallback may count a partition on both its
old and new leader for ``RECOMPUTE_S``).

How fast it follows the traffic (all of a tenant's traffic moving to node
A): the other nodes' offered meters empty within ``DEMAND_WINDOW_S`` + 1 s
(whole-second buckets) and A hears it with their next report (``POLL_S``,
0.5 s, + the ask); A's ``own`` is positive once two polls of every other
node have seen A's demand (about 2 * ``POLL_S``); A recomputes within
``RECOMPUTE_S``. So A reaches ``quota * (1 - (n - 1) * floor)`` (>= 95 %
of the quota) about 4 s after the move, and a tenant idle until then
(nothing to empty) in about 1.5 s, at its fallback share before that.
These are the rule's own delays: a node at its floor sees only the
demand its clients retry with (a refusal's retry-after is at most
``quota_service.MAX_RETRY_AFTER_S`` so that they come back soon), so
when traffic moves from a node that was busy, the new node's share grows
with its clients' retries and can take several seconds more.

Invariants (tests/quotas/test_shares.py checks them with hypothesis):

1. ``demand_share`` is in ``[quota * floor, quota]``; one node (``n = 1``)
   gets the whole quota.
2. For any published figures, any choice of which of a node's published
   figures each other node holds, and fallback fractions adding up to at
   most 1, the shares add up to at most the quota.
3. A node carrying all the demand reaches ``quota * (1 - (n - 1) *
   floor)`` once the others report none and its own figure is acknowledged.
4. ``DemandLedger.own`` is at most every figure an asker may hold, and at
   most the live figure.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "BURST_S",
    "DEMAND_WINDOW_S",
    "FLOOR_TOTAL",
    "DemandKey",
    "DemandLedger",
    "burst_for",
    "demand_share",
    "leader_fraction",
]

BURST_S = 0.5
"""A bucket's burst, in seconds of its rate: what a tenant idle for a while
may send at once before its rate applies."""
DEMAND_WINDOW_S = 2
"""Offered load is measured over this many whole seconds (plus the current
one): short, so that shares follow moving traffic within seconds."""
FLOOR_TOTAL = 0.05
"""The floors of all nodes together, as a fraction of the quota (each node
``FLOOR_TOTAL / n``): what a node admits before it has demand data, and
what a node carrying all the demand leaves unused on the others."""


def demand_share(quota: float, own: float, others: Iterable[float], nodes: int, fallback: float) -> float:
    """This node's share of a rate ``quota`` (module docstring): ``own``
    this node's acknowledged demand, ``others`` the other nodes' reported
    demands, ``nodes`` how many nodes the cluster has, ``fallback`` this
    node's fraction when nobody has demand data (``leader_fraction``)."""
    nodes = max(1, nodes)
    floor = FLOOR_TOTAL / nodes
    own = max(0.0, own)
    total = own + sum(max(0.0, d) for d in others)
    fraction = own / total if total > 0 else min(1.0, max(0.0, fallback))
    return quota * (floor + (1 - nodes * floor) * fraction)


def leader_fraction(led: int, partitions: int, nodes: int) -> float:
    """The fallback for byte rates: the fraction of the tenant's partitions
    this node leads (an even split when it has none)."""
    if partitions <= 0:
        return 1 / max(1, nodes)
    return min(max(led, 0), partitions) / partitions


def burst_for(rate_per_s: float) -> float:
    """The burst of a bucket of ``rate_per_s``: ``BURST_S`` of it, at least
    one unit (one request)."""
    return max(1.0, rate_per_s * BURST_S)


DemandKey = tuple[str, str]
"""``(tenant, rate)``: the rate is a ``usage.Demand`` field name."""


@dataclass(slots=True)
class _Asker:
    last_at: float
    held: int
    answered: list[int] = field(default_factory=list)


class DemandLedger:
    """What this node published of its demand, and which of it the other
    nodes may still hold (module docstring; invariant 4).

    Each answer to another node (an *asker*) gets a new report id; the
    asker's next request names the id of the report it holds (0: none).
    An asker may hold the report it named or any answered to it since; one
    that names none counts this node's demand as 0 (so ``own`` is 0 until it
    names one); an asker silent for ``hold_s`` has dropped them all (it
    keeps a report ``STALE_S`` after receiving it, received at most the ask
    timeout after it was answered)."""

    __slots__ = ("_askers", "_hold_s", "_next_id", "_published")

    def __init__(self, hold_s: float, first_id: int = 1) -> None:
        self._hold_s = hold_s
        self._next_id = max(1, first_id)
        self._askers: dict[int, _Asker] = {}
        self._published: dict[int, Mapping[DemandKey, float]] = {}

    def publish(self, asker: int, held: int, figures: Mapping[DemandKey, float], now: float) -> int:
        """Record the ``figures`` answered to ``asker`` (which said it holds
        report ``held``) and return the answer's report id."""
        report = self._next_id
        self._next_id += 1
        self._published[report] = dict(figures)
        entry = self._askers.get(asker)
        if entry is None:
            entry = self._askers[asker] = _Asker(now, held)
        entry.last_at, entry.held = now, held
        # Ids before the one it holds are gone from it.
        entry.answered = [r for r in entry.answered if r >= held] + [report]
        self._collect(now)
        return report

    def own(self, key: DemandKey, live: float, now: float) -> float:
        """The figure this node may use for itself: at most ``live`` and
        every figure an asker may hold for ``key`` (absent: 0)."""
        self._collect(now)
        smallest = live
        for entry in self._askers.values():
            if entry.held not in self._published:
                # It holds none of our reports (it counts us as 0 meanwhile),
                # or one we cannot see (an earlier process of ours).
                return 0.0
            for report in [entry.held, *entry.answered]:
                smallest = min(smallest, self._published[report].get(key, 0.0))
        return max(0.0, smallest)

    def _collect(self, now: float) -> None:
        for asker in [a for a, e in self._askers.items() if now - e.last_at > self._hold_s]:
            del self._askers[asker]
        wanted = {r for e in self._askers.values() for r in (e.held, *e.answered)}
        for report in [r for r in self._published if r not in wanted]:
            del self._published[report]
