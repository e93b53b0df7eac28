"""``shares``: a node's share of a tenant's cluster-wide rate, against the
numbered invariants of cluster/quotas/shares.py."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.quotas.shares import burst_for, byte_share, led_count, request_share


def test_shares_follow_the_partitions_a_node_leads() -> None:
    assert byte_share(1_000_000, led=3, partitions=6) == 500_000
    assert byte_share(1_000_000, led=0, partitions=4) == 250_000  # the floor: one partition's share
    assert byte_share(1_000_000, led=0, partitions=0) == 1_000_000  # no partitions: all of it
    assert request_share(90, led=0, partitions=9, nodes=3) == 30  # at least an even split
    assert led_count([1, 2, 3, 4], {2, 4}.__contains__) == 2
    assert burst_for(0) == 1 and burst_for(1000) == 500


@settings(max_examples=300, deadline=None)
@given(
    quota=st.integers(0, 10**12),
    nodes=st.integers(1, 9),
    leaders=st.lists(st.integers(0, 8), min_size=1, max_size=200),
)
def test_the_shares_of_the_leading_nodes_add_up_to_the_quota(
    quota: int, nodes: int, leaders: list[int]
) -> None:
    """Invariants 1-3 of shares.py, whichever nodes lead which partitions."""
    partitions = len(leaders)
    led = [sum(1 for leader in leaders if leader % nodes == n) for n in range(nodes)]
    shares = [byte_share(quota, led[n], partitions) for n in range(nodes)]
    assert sum(s for n, s in enumerate(shares) if led[n]) == pytest.approx(quota)
    for n in range(nodes):
        assert quota / partitions - 1e-6 <= shares[n] <= quota + 1e-6
        assert request_share(quota, led[n], partitions, nodes) >= max(shares[n], quota / nodes) - 1e-6
