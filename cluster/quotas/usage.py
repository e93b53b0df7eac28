"""What a tenant uses: rates measured on this node, and the cluster-wide
figures nodes learn from each other (pure: time passed in).

- ``RateMeter``: amounts added per whole second, the rate over the last
  ``WINDOW_S`` complete seconds plus the current one (what ``usage``
  reports; a tenant idle for ``WINDOW_S`` reads 0).
- ``TenantUsage``: one tenant's figures on one node, or summed over nodes.
  Its fields are the one list of figures: the NodeAdmin report
  (usage_poller.py) and the DescribeTenant figures (node_quotas.py) are
  derived from them (``USAGE_FIELDS``, ``DESCRIBED_AS``), and the report's
  ``TenantUsageEntry`` fields carry the same names.
- ``GroupSize``: the stored bytes of one partition as its leader saw them,
  with the leader's Raft term and the moment (wall clock) it looked.
- ``NodeReport``: what one node reports: per tenant its ``TenantUsage``,
  the ``GroupSize`` of each partition it leads and its offered load
  (``Demand``, which sizes the rate shares: shares.py).
- ``UsageBoard``: the latest ``NodeReport`` each *other* node sent
  (cluster/quotas/usage_poller.py asks every node about once a second).
  A node's report older than ``STALE_S`` is left out (a node that stopped
  answering stops counting: its partitions' new leaders report them).
- ``stored_total``: a tenant's stored bytes over the cluster: per
  partition, the *newest* size any node reported (highest leader term,
  then latest look), so a partition whose leadership moved is counted
  once, whichever of the old and new leader's figures arrive.

Invariants:

1. ``RateMeter.rate(now)`` is ``(sum of amounts added in the window) /
   (window length)``, never negative; amounts older than the window are
   forgotten (memory per meter is bounded by ``WINDOW_S + 1`` buckets).
2. ``UsageBoard`` never holds this node's own report (``record`` ignores it:
   the live local figures are added by the caller instead).
3. ``stored_total`` counts each partition group at most once, with the
   size of its newest view; groups not named in ``groups`` (deleted, or
   not the tenant's) count nothing.
4. Summing usage over nodes sums every figure except ``streams``, which is
   the most on any one node (``combined``): the streams quota is per node.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields

__all__ = [
    "ASK_TIMEOUT_S",
    "DEMAND_FIELDS",
    "DESCRIBED_AS",
    "IDLE_POLL_S",
    "POLL_S",
    "STALE_S",
    "USAGE_FIELDS",
    "WINDOW_S",
    "Demand",
    "GroupSize",
    "NodeReport",
    "RateMeter",
    "TenantUsage",
    "UsageBoard",
    "stored_total",
]

WINDOW_S = 5
"""Rates are averaged over this many seconds."""
STALE_S = 5.0
"""A node's report counts for this long after it arrived."""
POLL_S = 0.5
"""Every node asks every other node for its report this often while some
tenant with a rate quota has demand (the shares follow it)."""
IDLE_POLL_S = 2.0
"""... and this often otherwise: the reports then only carry storage,
groups and usage for DescribeTenant, and an idle node of 1,000 partitions
should not spend its CPU swapping them (bench density: 10.9 % of a core
per node polling every 0.5 s, against 5.2 % before quotas)."""
ASK_TIMEOUT_S = 1.0
"""An ask that takes longer is given up (the answer never counts)."""


class RateMeter:
    """See the module docstring (``window_s``: ``WINDOW_S`` unless given)."""

    __slots__ = ("_buckets", "_window")

    def __init__(self, window_s: int = WINDOW_S) -> None:
        self._window = window_s
        self._buckets: deque[list[float]] = deque()  # [second, amount], oldest first

    def add(self, amount: float, now: float) -> None:
        second = math.floor(now)
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += amount
        else:
            self._buckets.append([second, amount])
            self._trim(second)

    def rate(self, now: float) -> float:
        """Per second over the last ``WINDOW_S`` seconds (the current second
        counted in part: the window is ``WINDOW_S`` whole seconds plus the
        elapsed part of this one)."""
        second = math.floor(now)
        self._trim(second)
        total = sum(amount for _, amount in self._buckets)
        span = self._window + (now - second)
        return total / span if span > 0 else 0.0

    def _trim(self, second: float) -> None:
        while self._buckets and self._buckets[0][0] < second - self._window:
            self._buckets.popleft()


@dataclass(frozen=True, slots=True)
class TenantUsage:
    """One tenant's usage on one node, or over the cluster (``combined``)."""

    stored_bytes: int = 0
    """Batch bytes of the tenant's partitions this node leads (over the
    cluster: ``stored_total``, each partition once)."""
    groups: int = 0
    """Consumer groups coordinated here (members or committed offsets)."""
    streams: int = 0
    """Open StreamFetch calls (over the cluster: the most on any one node,
    since the streams quota is per node)."""
    produce_bytes_s: float = 0.0
    fetch_bytes_s: float = 0.0
    requests_s: float = 0.0

    @staticmethod
    def combined(usages: Iterable[TenantUsage]) -> TenantUsage:
        """Several nodes' figures: summed, but ``streams`` the most on one
        node (invariant 4)."""
        totals = dict.fromkeys(USAGE_FIELDS, 0)
        streams = 0
        for usage in usages:
            for name in USAGE_FIELDS:
                totals[name] += getattr(usage, name)
            streams = max(streams, usage.streams)
        totals["streams"] = streams
        return TenantUsage(**totals)


USAGE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(TenantUsage))
"""The figures, in order: ``TenantUsage``'s fields, and the names of the
matching ``TenantUsageEntry`` fields on the wire."""
DESCRIBED_AS: dict[str, str] = {"stored_bytes": "storage_bytes"}
"""A figure whose DescribeTenant name (``admin.proto`` ``TenantUsage``,
named like its quota) differs from its field name here."""


@dataclass(frozen=True, slots=True)
class GroupSize:
    """One partition's stored bytes as a leader saw them."""

    size: int
    term: int
    """The Raft term of the leader that looked (a later leader: a higher term)."""
    seen_ms: int
    """When it looked (wall clock, ms): orders two looks of one term."""

    def newer_than(self, other: GroupSize) -> bool:
        return (self.term, self.seen_ms) > (other.term, other.seen_ms)


@dataclass(frozen=True, slots=True)
class Demand:
    """One tenant's offered load on one node, per second over
    ``shares.DEMAND_WINDOW_S``: admitted, refused, and delayed once more
    (cluster/quotas/shares.py)."""

    produce_bytes_s: float = 0.0
    fetch_bytes_s: float = 0.0
    requests_s: float = 0.0


DEMAND_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Demand))


@dataclass(frozen=True, slots=True)
class NodeReport:
    """What one node reports about every tenant (module docstring)."""

    usage: Mapping[str, TenantUsage] = field(default_factory=dict)
    sizes: Mapping[str, Mapping[int, GroupSize]] = field(default_factory=dict)
    """tenant -> partition group -> size, of the groups the node leads."""
    demand: Mapping[str, Demand] = field(default_factory=dict)
    report_id: int = 0
    """Names this report when the receiver next asks (shares.DemandLedger)."""


def stored_total(groups: Iterable[int], views: Iterable[Mapping[int, GroupSize]]) -> int:
    """The stored bytes of ``groups``: each one's newest size in ``views``
    (invariant 3)."""
    newest: dict[int, GroupSize] = {}
    for view in views:
        for group, size in view.items():
            held = newest.get(group)
            if held is None or size.newer_than(held):
                newest[group] = size
    return sum(newest[g].size for g in set(groups) if g in newest)


class UsageBoard:
    """The other nodes' latest reports (module docstring)."""

    __slots__ = ("_node_id", "_reports")

    def __init__(self, node_id: int) -> None:
        self._node_id = node_id
        # node -> (when it arrived, its report)
        self._reports: dict[int, tuple[float, NodeReport]] = {}

    def record(self, node_id: int, report: NodeReport, now: float) -> None:
        if node_id == self._node_id or node_id <= 0:
            return
        self._reports[node_id] = (now, report)

    def forget(self, keep: Iterable[int]) -> None:
        """Drop the reports of nodes not in ``keep`` (removed nodes)."""
        wanted = set(keep)
        for node in [n for n in self._reports if n not in wanted]:
            del self._reports[node]

    def fresh(self, now: float) -> list[NodeReport]:
        """The other nodes' reports at most ``STALE_S`` old."""
        return [report for at, report in self._reports.values() if now - at <= STALE_S]

    def others(self, tenant: str, now: float) -> list[TenantUsage]:
        """``tenant``'s usage in each other node's fresh report."""
        return [r.usage[tenant] for r in self.fresh(now) if tenant in r.usage]

    def demands(self, tenant: str, now: float) -> list[Demand]:
        """``tenant``'s offered load in each other node's fresh report."""
        return [r.demand[tenant] for r in self.fresh(now) if tenant in r.demand]

    def report_id(self, node_id: int, now: float) -> int:
        """The id of ``node_id``'s report counted here (0: none, or stale:
        then its demand counts as 0 here, and the node must know it)."""
        held = self._reports.get(node_id)
        return held[1].report_id if held is not None and now - held[0] <= STALE_S else 0

    def sizes(self, tenant: str, now: float) -> list[Mapping[int, GroupSize]]:
        """``tenant``'s partition sizes in each other node's fresh report."""
        return [r.sizes[tenant] for r in self.fresh(now) if tenant in r.sizes]
