"""bench/metrics_choice.py stays importable and measures both libraries
(a small run: the figures themselves are the bench's, not a test's)."""

from __future__ import annotations

from bench import metrics_choice
from bench.metrics_choice import measure
from cluster.telemetry.node_metrics import RPC_SECONDS_BUCKETS


def test_measure_times_both_libraries_per_call_and_per_scrape() -> None:
    figures = measure(calls=500, repeats=1)
    for library in ("prometheus_client", "opentelemetry"):
        assert figures[library]["per_call_us"] > 0 and figures[library]["scrape_ms"] > 0
        assert figures[library]["page_bytes"] > 1000  # 20 methods' figures on the page
    assert figures["cheaper_per_call"] in {"prometheus-client", "opentelemetry"}


def test_the_bench_times_the_nodes_buckets() -> None:
    assert metrics_choice.RPC_SECONDS_BUCKETS == RPC_SECONDS_BUCKETS
