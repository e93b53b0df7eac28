"""Which metrics library the node uses, by measurement: what the produce
path pays per call, and what a scrape costs, with prometheus-client against
the OpenTelemetry metrics SDK exporting through its Prometheus reader.

Per call, the work the front door does for every public call
(cluster/frontend/front_door.py step 6): one labeled counter increment
(``raftlog_rpc_server_handled_total{service,method,code}``) and one labeled
histogram observation (``raftlog_rpc_server_handling_seconds{service,method}``,
the node's buckets), with the labels resolved as the door resolves them —
once per method, not per call:

- prometheus-client: what ``NodeMetrics.call_recorder``
  (cluster/telemetry/node_metrics.py) does, written again here because
  bench/ may not import cluster/ (tests/test_layout.py): the counter child
  per code found in a dict, the histogram child bound, the node's buckets
  (``RPC_SECONDS_BUCKETS``; tests/telemetry/test_metrics_choice.py checks
  they are the node's);
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
from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, generate_latest

__all__ = ["measure"]

PRODUCE = "/raftlog.v1.LogService/Produce"
RPC_SECONDS_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""The node's call histogram buckets (cluster/telemetry/node_metrics.py)."""
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


Record = Callable[[grpc.StatusCode, float], None]


def _prometheus_client(calls: int, repeats: int) -> dict[str, Any]:
    disable_created_metrics()  # as the node does (process-wide, like there)
    page = CollectorRegistry(auto_describe=False)
    handled = Counter(
        "raftlog_rpc_server_handled_total", "calls", ["service", "method", "code"], registry=page
    )
    seconds = Histogram(
        "raftlog_rpc_server_handling_seconds",
        "seconds",
        ["service", "method"],
        buckets=RPC_SECONDS_BUCKETS,
        registry=page,
    )

    def recorder(method_path: str) -> Record:
        service, _, method = method_path[1:].rpartition("/")
        observe = seconds.labels(service, method).observe
        by_code: dict[grpc.StatusCode, Callable[[], None]] = {}

        def record(code: grpc.StatusCode, elapsed: float) -> None:
            inc = by_code.get(code)
            if inc is None:
                inc = by_code[code] = handled.labels(service, method, code.name).inc
            inc()
            observe(elapsed)

        return record

    return {"version": version("prometheus-client"), **_costs(recorder, page, calls, repeats)}


def _costs(
    recorder: Callable[[str], Record], page: CollectorRegistry, calls: int, repeats: int
) -> dict[str, Any]:
    """What one library costs: the best per-call time of the Produce
    recorder, then, with every method's figures recorded, a scrape's time
    and size (the same steps for both libraries)."""
    record = recorder(PRODUCE)
    ok = grpc.StatusCode.OK
    per_call = _best_per_call_us(lambda: record(ok, 0.003), calls, repeats)
    for method in _methods():
        each = recorder(method)
        each(ok, 0.002)
        each(grpc.StatusCode.UNAVAILABLE, 0.02)
    scrape = _best_ms(lambda: generate_latest(page), 50, repeats)
    return {
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

        def recorder(method_path: str) -> Record:
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

        return {
            "version": version("opentelemetry-sdk"),
            "exporter": version("opentelemetry-exporter-prometheus"),
            **_costs(recorder, registry, calls, repeats),
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
