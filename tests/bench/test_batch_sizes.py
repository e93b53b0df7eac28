"""Smoke test of ``python -m bench.batch_sizes`` (a diagnostic run by hand):
one row per size, and each size reaches the producer. The figures
themselves mean nothing at this length; bench/README.md cites a real run."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench import batch_sizes


@pytest.mark.timeout(120)
def test_a_row_per_size_with_batches_bounded_by_that_size(tmp_path: Path) -> None:
    rows = asyncio.run(batch_sizes.measure(tmp_path, [4096, 65536], seconds=0.5, warmup_s=0.3))
    assert [row["max_batch_bytes"] for row in rows] == [4096, 65536]
    small, large = rows
    # A 4 KiB batch holds at most three 1 KiB records (header and framing
    # take the rest); without the size reaching the producer the SDK's
    # 1 MiB default would fill batches with hundreds.
    assert small["records_per_batch"] is not None and small["records_per_batch"] <= 3
    assert large["records_per_batch"] > small["records_per_batch"]
    for row in rows:
        assert row["mb_s"] > 0 and row["nodes_cpu_ms_per_mb"] > 0, row
        assert row["transport_batches_sent"] > 0, row
