"""A node's share of a tenant's cluster-wide rate quota (pure).

Every node charges a tenant's calls against token buckets of its own
(nodes do not ask each other per call: that would put a network round trip
on every produce). So each node must be given a *share* of the tenant's
quota such that, whichever nodes lead the tenant's partitions, the shares
of the nodes doing the work add up to the quota. The rule:

    share(node) = quota * max(led, 1) / partitions

where ``partitions`` is the number of partitions the tenant has and ``led``
how many of them this node leads now (0 partitions: the whole quota).

Why the shares add up to the quota, whichever nodes lead: produce and
fetch bytes are charged only on the node whose replica leads the
partition (cluster/quotas/quota_stage.py; a node that forwards a call to the
leader, or answers ``NOT_LEADER``, charges no bytes: the leader charges
them). The SDK sends produce and fetch to the leader. Raft elects at most
one leader per partition per term, so across the nodes that lead at least
one of the tenant's partitions the ``led`` counts add up to ``partitions``
and the shares to ``quota``, however the leaders are spread: all on one
node (that node gets the whole quota) or one per node. If leadership moves,
each node's share follows at its next recompute (the stage recomputes on a
metadata change and at least every ``RECOMPUTE_S``), so for that long the
old and new leaders may both hold a share for the moved partition: the
overshoot is bounded by one partition's share for about ``RECOMPUTE_S``.

The floor of one partition's share on a node that leads none is for that
window and for stale routing: a node that has just become leader (or a
topic just created) would otherwise start at a rate of 0 and refuse the
first calls. Bytes are never charged on a node that leads none of the
partition, so the floor adds nothing to what the tenant can get in steady
state.

Requests per second are charged on every node a call reaches (metadata,
group and admin calls go to any node, and a forwarded call counts on both
nodes). Their share uses the same rule with a larger floor: at least an
even split over the cluster's nodes (``nodes``), so a node that leads none
of the tenant's partitions still serves its group heartbeats and metadata
calls. The cluster-wide request rate a tenant can reach is therefore
between the quota and ``quota * (1 + (nodes - 1) / nodes)`` (at most twice
the quota), the price of not coordinating nodes per call.

Invariants (tests/quotas/test_shares.py checks them with hypothesis):

1. ``byte_share`` is in ``[quota / partitions, quota]`` for
   ``0 <= led <= partitions``; with ``partitions == 0`` it is ``quota``.
2. For any assignment of each of ``partitions`` partitions to one leader
   among the nodes, the byte shares of the nodes that lead at least one add
   up to exactly ``quota``.
3. ``request_share >= byte_share`` and ``request_share >= quota / nodes``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

__all__ = ["BURST_S", "burst_for", "byte_share", "led_count", "request_share"]

BURST_S = 0.5
"""A bucket's burst, in seconds of its rate: what a tenant idle for a while
may send at once before its rate applies."""


def byte_share(quota: float, led: int, partitions: int) -> float:
    """This node's share of a byte-rate ``quota`` (module docstring)."""
    if partitions <= 0:
        return float(quota)
    return quota * min(max(led, 1), partitions) / partitions


def request_share(quota: float, led: int, partitions: int, nodes: int) -> float:
    """This node's share of a requests/s ``quota``: the byte rule, with at
    least an even split over ``nodes`` (module docstring)."""
    even = quota / nodes if nodes > 0 else float(quota)
    return max(byte_share(quota, led, partitions), even)


def burst_for(rate_per_s: float) -> float:
    """The burst of a bucket of ``rate_per_s``: ``BURST_S`` of it, at least
    one unit (one request)."""
    return max(1.0, rate_per_s * BURST_S)


def led_count(groups: Iterable[int], leads: Callable[[int], bool]) -> int:
    """How many of ``groups`` (a tenant's partition groups) this node leads."""
    return sum(1 for group in groups if leads(group))
