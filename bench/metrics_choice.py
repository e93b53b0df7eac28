"""Which metrics library the node uses, by measurement: what the produce
path pays per call, and what a scrape costs, with prometheus-client against
the OpenTelemetry metrics SDK exporting through its Prometheus reader.

Per call, the work the front door does for every public call
(cluster/frontend/front_door.py step 6): one labeled counter increment
(``raftlog_rpc_server_handled_total{service,method,code}``) and one labeled
histogram observation (``raftlog_rpc_server_handling_seconds{service,method}``,
the node's buckets), with the labels resolved as the door resolves them —
once per method, not per call:

- prometheus-client: ``NodeMetrics.call_recorder`` itself (the counter child
  per code found in a dict, the histogram child bound), so the figure is the
  node's real cost;
- OpenTelemetry: a ``MeterProvider`` with a ``PrometheusMetricReader`` (the
  exporter a node would scrape), the attribute dicts built once per method
  and code, per call ``counter.add(1, attributes)`` and
  ``histogram.record(seconds, attributes)`` (the SDK looks its stream up from
  the attributes on every call; there is no bound instrument to hold).

Per scrape: the text exposition of the same figures after calls to 20
methods with two codes each (what a busy node's page holds), through the
same ``prometheus_client`` encoder for both (the OTel reader converts its
points to prometheus_client families at scrape time).

Each figure is the best of ``repeats`` runs (the least disturbed by the
other work on the machine), in µs per call and ms per scrape.
``python -m bench.metrics_choice`` prints the figures as JSON.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, generate_latest

from cluster.telemetry.node_metrics import RPC_SECONDS_BUCKETS, NodeMetrics

__all__ = ["measure"]

PRODUCE = "/raftlog.v1.LogService/Produce"
SCRAPE_METHODS = 20
"""Methods with figures on the scraped page (the public API has about 50)."""


def _best_per_call_us(call: Callable[[], None], calls: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        best = min(best, time.perf_counter() - start)
    return best / calls * 1e6


def _best_ms(call: Callable[[], object], times: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(times):
            call()
        best = min(best, time.perf_counter() - start)
    return best / times * 1e3


def _methods() -> list[str]:
    return [PRODUCE] + [f"/raftlog.v1.AdminService/Method{i}" for i in range(SCRAPE_METHODS - 1)]


def _prometheus_client(calls: int, repeats: int) -> dict[str, Any]:
    metrics = NodeMetrics(0, "127.0.0.1", 0, process=False)  # the call figures alone, like the OTel page
    record = metrics.call_recorder(PRODUCE)
    ok = grpc.StatusCode.OK
    per_call = _best_per_call_us(lambda: record(ok, 0.003), calls, repeats)
    for method in _methods():
        recorder = metrics.call_recorder(method)
        recorder(ok, 0.002)
        recorder(grpc.StatusCode.UNAVAILABLE, 0.02)
    page = metrics.registry
    scrape = _best_ms(lambda: generate_latest(page), 50, repeats)
    return {
        "version": version("prometheus-client"),
        "per_call_us": round(per_call, 3),
        "scrape_ms": round(scrape, 3),
        "page_bytes": len(generate_latest(page)),
    }


def _opentelemetry(calls: int, repeats: int) -> dict[str, Any]:
    from opentelemetry.exporter.prometheus import PrometheusMetricReader
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View

    registry = CollectorRegistry()
    reader = PrometheusMetricReader(disable_target_info=True, scope_info_enabled=False, registry=registry)
    provider = MeterProvider(
        metric_readers=[reader],
        views=[
            View(
                instrument_name="raftlog_rpc_server_handling",
                aggregation=ExplicitBucketHistogramAggregation(list(RPC_SECONDS_BUCKETS)),
            )
        ],
    )
    try:
        meter = provider.get_meter("raftlog.node")
        handled = meter.create_counter("raftlog_rpc_server_handled", description="calls")
        seconds = meter.create_histogram("raftlog_rpc_server_handling", unit="s", description="seconds")

        def recorder(method_path: str) -> Callable[[grpc.StatusCode, float], None]:
            service, _, method = method_path[1:].rpartition("/")
            timed = {"service": service, "method": method}
            by_code: dict[grpc.StatusCode, dict[str, str]] = {}
            add, observe = handled.add, seconds.record

            def record(code: grpc.StatusCode, elapsed: float) -> None:
                attributes = by_code.get(code)
                if attributes is None:
                    attributes = by_code[code] = {**timed, "code": code.name}
                add(1, attributes)
                observe(elapsed, timed)

            return record

        record = recorder(PRODUCE)
        ok = grpc.StatusCode.OK
        per_call = _best_per_call_us(lambda: record(ok, 0.003), calls, repeats)
        for method in _methods():
            each = recorder(method)
            each(ok, 0.002)
            each(grpc.StatusCode.UNAVAILABLE, 0.02)
        scrape = _best_ms(lambda: generate_latest(registry), 50, repeats)
        return {
            "version": version("opentelemetry-sdk"),
            "exporter": version("opentelemetry-exporter-prometheus"),
            "per_call_us": round(per_call, 3),
            "scrape_ms": round(scrape, 3),
            "page_bytes": len(generate_latest(registry)),
        }
    finally:
        provider.shutdown()


def measure(calls: int = 100_000, repeats: int = 5) -> dict[str, Any]:
    """Per-call (µs) and per-scrape (ms) costs of both libraries, and the choice."""
    prom = _prometheus_client(calls, repeats)
    otel = _opentelemetry(calls, repeats)
    return {
        "calls": calls,
        "repeats": repeats,
        "python": platform.python_version(),
        "prometheus_client": prom,
        "opentelemetry": otel,
        "per_call_ratio_otel_to_prometheus": round(otel["per_call_us"] / prom["per_call_us"], 2),
        "scrape_ratio_otel_to_prometheus": round(otel["scrape_ms"] / prom["scrape_ms"], 2),
        "cheaper_per_call": "prometheus-client"
        if prom["per_call_us"] <= otel["per_call_us"]
        else "opentelemetry",
    }


if __name__ == "__main__":
    json.dump(measure(), sys.stdout, indent=2)
    print()
