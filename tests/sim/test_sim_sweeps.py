"""Seed sweeps: no violation on seeds 1-300 of each profile (3 nodes), and a
shorter sweep with 5 nodes. Chunked so ``pytest -n 2`` spreads them."""

from __future__ import annotations

import pytest

from raft.sim import run_seed

pytestmark = pytest.mark.slow

CHUNKS = [range(1, 101), range(101, 201), range(201, 301)]


def _failures(seeds: range, profile: str, nodes: int = 3) -> list[str]:
    failures = []
    for seed in seeds:
        result = run_seed(seed, nodes=nodes, profile=profile)
        if not result.ok:
            failures.append(f"{result.replay_command()}: {result.violations[0]}")
    return failures


@pytest.mark.parametrize("seeds", CHUNKS, ids=lambda r: f"{r.start}-{r.stop - 1}")
def test_safety_sweep(seeds: range) -> None:
    assert _failures(seeds, "safety") == []


@pytest.mark.parametrize("seeds", CHUNKS, ids=lambda r: f"{r.start}-{r.stop - 1}")
def test_liveness_sweep(seeds: range) -> None:
    assert _failures(seeds, "liveness") == []


@pytest.mark.parametrize("profile", ["safety", "liveness"])
def test_five_node_sweep(profile: str) -> None:
    assert _failures(range(1, 41), profile, nodes=5) == []
