"""``NodeMetrics``: a node's Prometheus registry, the per-call figures the
front door records, and the ``/metrics`` HTTP endpoint on ``metrics_port``.

What it holds:

- ``raftlog_rpc_server_handled_total{service,method,code}``: every public
  call the front door wrapped, by its final gRPC status name (``OK``,
  ``RESOURCE_EXHAUSTED``, ...) as the client receives it: after the door
  mapped the handler's error, refusals at the door (no key, wrong scope,
  a malformed request) and cancelled calls included;
- ``raftlog_rpc_server_handling_seconds{service,method}``: how long each
  took, from the door's first step to its status (a stream: how long it
  stayed open); buckets from 0.5 ms to 10 s, the range of this cluster's
  calls (a local produce is 2-10 ms, a long-poll fetch up to its wait);
- ``raftlog_produce_stage_seconds{stage}``: where the time of each
  successful produce call this node's replica led went, one observation
  per stage (``propose``, ``append``, ``sync``, ``replicate``, ``apply``,
  ``reply``, ``total``; partitions/proposal_timing.py says what each
  covers), recorded by the LogService (cluster/frontend/log_service.py)
  through ``produce_stages``;
- ``raftlog_event_loop_lag_seconds``: how late the node's event loop ran
  a timer (loop_lag.py), sampled while the endpoint is served;
- the tenant figures (cluster/quotas/tenant_metrics.py), registered here by
  the node;
- ``process_*`` (prometheus_client's ``ProcessCollector``: CPU seconds,
  resident memory, open file descriptors, start time);
- whatever scrape-time collectors the node registers
  (cluster/telemetry/node_collector.py).

Invariants:

- One registry per node, never the process-global one: several nodes in one
  process (tests) keep their own figures, and nothing registered by a
  library lands on a node's page by accident.
- The per-call cost is one dict lookup, one counter increment and one
  histogram observation: the labels of each method are resolved once, when
  the door builds its handler (``call_recorder``), and a method's counter
  child per code once, on the first call ending with that code.
- A produce call's stages cost one observation each and nothing else: the
  seven ``stage`` children are resolved once, here (``produce_stages``).
- A node whose ``metrics_port`` is 0 builds none of this (cluster/node.py),
  and its door then does no metric work at all (front_door.py), nor does
  its LogService (no marks, no stages), and no lag sampler runs.
- No ``*_created`` series: prometheus-client's are switched off for the
  process when this module is imported (they double every counter's and
  histogram's series for a timestamp Prometheus does not use with the text
  format, and an eighth of the scrape's time).
- The lag sampler runs from ``serve`` to ``close``, on the node's loop.
- ``/metrics`` runs the collectors on the node's event loop (the only place
  the node's state may be read from), in the text format 0.0.4, or
  OpenMetrics when the scraper's ``Accept`` asks for it; ``GET /`` names
  the path. Nothing else is served.

Why prometheus-client rather than the OpenTelemetry metrics SDK with its
Prometheus exporter: measured per call on the produce path's work (one
labeled counter increment and one histogram observation) and per scrape,
bench/metrics_choice.py; the figures and the decision are in the README's
"Observability" section.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc
from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from cluster.static_config import ConfigError
from cluster.telemetry.loop_lag import sample_loop_lag
from partitions.latency_buckets import LATENCY_BOUNDS_S
from partitions.proposal_timing import STAGES

__all__ = [
    "RPC_SECONDS_BUCKETS",
    "STAGE_SECONDS_BUCKETS",
    "CallRecord",
    "NodeMetrics",
    "metrics_host",
    "metrics_page",
]

log = logging.getLogger(__name__)

disable_created_metrics()  # process-wide (module docstring)

RPC_SECONDS_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""0.5 ms .. 10 s: a local call is a few ms, a forwarded or quorum-written
produce tens of ms, a long-poll fetch up to its wait (seconds).
bench/metrics_choice.py keeps a copy (bench/ may not import cluster/, and no
package both may import is the place for it: tests/test_layout.py);
tests/telemetry/test_metrics_choice.py keeps the two equal."""

STAGE_SECONDS_BUCKETS = LATENCY_BOUNDS_S
"""100 us .. 10 s (partitions/latency_buckets.py), for the produce stages
and the loop lag: finer at the bottom than ``RPC_SECONDS_BUCKETS``, since a
stage is often well under a millisecond (an apply, a reply on an idle
loop), and still tells 0.5 ms from 2 ms from 20 ms from 200 ms (buckets
0.5 / 2.5 / 25 / 250 ms)."""

CallRecord = Callable[[grpc.StatusCode, float], None]
"""Records one call of a method: its final status and its seconds."""


class NodeMetrics:
    """The node's registry and its ``/metrics`` server (module docstring).
    ``host``/``port``: where ``serve`` listens (port 0: any free port, for
    tests; ``bound_port`` says which)."""

    def __init__(self, node_id: int, host: str, port: int) -> None:
        self.node_id = node_id
        self.host = host
        self.port = port
        self.bound_port = 0
        # auto_describe off: registering a scrape-time collector must not
        # collect it (the node it reads is not built yet).
        self.registry = CollectorRegistry(auto_describe=False)
        ProcessCollector(registry=self.registry)
        self._handled = Counter(
            "raftlog_rpc_server_handled_total",
            "Public gRPC calls answered, by service, method and final status code.",
            ["service", "method", "code"],
            registry=self.registry,
        )
        self._seconds = Histogram(
            "raftlog_rpc_server_handling_seconds",
            "Time from the front door's first step to the call's status (a stream: how long it was open).",
            ["service", "method"],
            buckets=RPC_SECONDS_BUCKETS,
            registry=self.registry,
        )
        stage_seconds = Histogram(
            "raftlog_produce_stage_seconds",
            "Seconds of each stage of a successful produce call this node's replica led, by stage.",
            ["stage"],
            buckets=STAGE_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self.produce_stages: tuple[Callable[[float], None], ...] = tuple(
            stage_seconds.labels(stage).observe for stage in STAGES
        )
        """One observer per stage, in ``STAGES`` order (what
        ``partitions.proposal_timing.observe_stages`` takes)."""
        self._loop_lag = Histogram(
            "raftlog_event_loop_lag_seconds",
            "How much later than asked the node's event loop ran a periodic timer.",
            buckets=STAGE_SECONDS_BUCKETS,
            registry=self.registry,
        )
        self._runner: web.AppRunner | None = None
        self._lag_sampler: asyncio.Task[None] | None = None

    def register(self, collector: Collector) -> None:
        """Add a scrape-time collector (the node's state, read when scraped)."""
        self.registry.register(collector)

    def call_recorder(self, method_path: str) -> CallRecord:
        """The recorder of one method (``/package.Service/Method``), with
        its labels resolved now: the door calls it once per method."""
        service, _, method = method_path[1:].rpartition("/")
        observe = self._seconds.labels(service, method).observe
        handled = self._handled
        by_code: dict[grpc.StatusCode, Callable[[], None]] = {}

        def record(code: grpc.StatusCode, seconds: float) -> None:
            inc = by_code.get(code)
            if inc is None:
                inc = by_code[code] = handled.labels(service, method, code.name).inc
            inc()
            observe(seconds)

        return record

    # --- the endpoint ------------------------------------------------------------------

    async def serve(self) -> None:
        """Start the HTTP server on the running loop (returns once it listens)."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/", _index)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, self.host or None, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError as error:
            await runner.cleanup()
            raise ConfigError(
                f"node {self.node_id}: cannot serve /metrics on {self.host or '*'}:{self.port} "
                f"({error.strerror or error}); choose another metrics_port"
            ) from error
        self._runner = runner
        self._lag_sampler = asyncio.create_task(
            sample_loop_lag(self._loop_lag.observe), name=f"raftlog-loop-lag-{self.node_id}"
        )
        addresses = runner.addresses  # port 0 asked the OS for one: which
        self.bound_port = int(addresses[0][1]) if addresses else self.port
        log.info("node %d serves /metrics on %s:%d", self.node_id, self.host, self.bound_port)

    async def close(self) -> None:
        if self._lag_sampler is not None:
            sampler, self._lag_sampler = self._lag_sampler, None
            sampler.cancel()
            await asyncio.wait((sampler,))
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def _metrics(self, request: web.Request) -> web.Response:
        body, content_type = metrics_page(self.registry, request.headers.get("Accept", ""))
        return web.Response(body=body, headers={"Content-Type": content_type})


def metrics_host(grpc_address: str) -> str:
    """Where ``/metrics`` listens: the host the node's gRPC listener binds
    (its address, or ``--listen``'s), so a loopback node stays on loopback
    and a pod listening on 0.0.0.0 serves every interface ("" = all)."""
    host = grpc_address.rpartition(":")[0].strip("[]")
    return "" if host in ("0.0.0.0", "::") else host


def metrics_page(registry: CollectorRegistry, accept: str = "") -> tuple[bytes, str]:
    """The exposition of ``registry`` in the format ``accept`` asks for, and its content type."""
    encoder, content_type = choose_encoder(accept)
    return encoder(registry), content_type


async def _index(_request: web.Request) -> web.Response:
    return web.Response(text="raftlog node: Prometheus metrics at /metrics\n")
