"""Smoke test of the Raft core benchmark harness (the figure itself comes
from ``python -m bench.raft_core``, not from a timed test)."""

from __future__ import annotations

from bench.raft_core import measure


def test_every_proposal_is_applied_on_every_node() -> None:
    result = measure(seconds=0.2, size=128, batch=8)
    # +1: the leader's empty entry of its term is applied too.
    assert result["applied_on_every_node"] == result["proposed"] + 1
    assert result["raft_core_proposals_s"] > 0
