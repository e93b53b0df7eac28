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
- ``UsageBoard``: the latest ``TenantUsage`` each *other* node reported
  (cluster/quotas/usage_poller.py asks every node about once a second);
  ``others(tenant)`` sums them. A node's report older than ``STALE_S`` is
  left out (a node that stopped answering stops counting: its partitions'
  new leaders report them).

Invariants:

1. ``RateMeter.rate(now)`` is ``(sum of amounts added in the window) /
   (window length)``, never negative; amounts older than the window are
   forgotten (memory per meter is bounded by ``WINDOW_S + 1`` buckets).
2. ``UsageBoard`` never holds this node's own report (``record`` ignores it:
   the live local figures are added by the caller instead).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, fields

__all__ = ["DESCRIBED_AS", "STALE_S", "USAGE_FIELDS", "WINDOW_S", "RateMeter", "TenantUsage", "UsageBoard"]

WINDOW_S = 5
"""Rates are averaged over this many seconds."""
STALE_S = 5.0
"""A node's report counts for this long after it arrived."""


class RateMeter:
    """See the module docstring."""

    __slots__ = ("_buckets",)

    def __init__(self) -> None:
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
        span = WINDOW_S + (now - second)
        return total / span if span > 0 else 0.0

    def _trim(self, second: float) -> None:
        while self._buckets and self._buckets[0][0] < second - WINDOW_S:
            self._buckets.popleft()

    @property
    def empty(self) -> bool:
        return not self._buckets


@dataclass(frozen=True, slots=True)
class TenantUsage:
    """One tenant's usage (on one node, or summed over nodes)."""

    stored_bytes: int = 0
    """Batch bytes of the tenant's partitions this node leads."""
    groups: int = 0
    """Consumer groups coordinated here (members or committed offsets)."""
    streams: int = 0
    """Open StreamFetch calls."""
    produce_bytes_s: float = 0.0
    fetch_bytes_s: float = 0.0
    requests_s: float = 0.0

    def __add__(self, other: TenantUsage) -> TenantUsage:
        return TenantUsage(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})

    @staticmethod
    def total(usages: Iterable[TenantUsage]) -> TenantUsage:
        result = TenantUsage()
        for usage in usages:
            result = result + usage
        return result


USAGE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(TenantUsage))
"""The figures, in order: ``TenantUsage``'s fields, and the names of the
matching ``TenantUsageEntry`` fields on the wire."""
DESCRIBED_AS: dict[str, str] = {"stored_bytes": "storage_bytes"}
"""A figure whose DescribeTenant name (``admin.proto`` ``TenantUsage``,
named like its quota) differs from its field name here."""


class UsageBoard:
    """The other nodes' latest reports (module docstring)."""

    __slots__ = ("_node_id", "_reports")

    def __init__(self, node_id: int) -> None:
        self._node_id = node_id
        # node -> (when it arrived, tenant -> usage)
        self._reports: dict[int, tuple[float, dict[str, TenantUsage]]] = {}

    def record(self, node_id: int, tenants: dict[str, TenantUsage], now: float) -> None:
        if node_id == self._node_id or node_id <= 0:
            return
        self._reports[node_id] = (now, tenants)

    def forget(self, keep: Iterable[int]) -> None:
        """Drop the reports of nodes not in ``keep`` (removed nodes)."""
        wanted = set(keep)
        for node in [n for n in self._reports if n not in wanted]:
            del self._reports[node]

    def others(self, tenant: str, now: float) -> TenantUsage:
        """``tenant``'s usage summed over the other nodes' fresh reports."""
        return TenantUsage.total(
            report[tenant]
            for at, report in self._reports.values()
            if now - at <= STALE_S and tenant in report
        )

    def nodes(self, now: float) -> list[int]:
        """The nodes with a fresh report."""
        return sorted(n for n, (at, _) in self._reports.items() if now - at <= STALE_S)
