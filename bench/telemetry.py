"""What telemetry costs: produce throughput with metrics on and with tracing
at 1 % sampling, each as a ratio to everything off, in the same run.

Three configurations of the same 3-node ``LocalCluster`` (RF 3, a
16-partition topic, the flat-out produce of ``bench.cluster_figures``:
1 KiB records through the SDK's defaults):

- ``off``: no ``/metrics`` port (``LocalCluster(metrics=False)``: the door
  records nothing) and no ``OTEL_*`` variables (no tracer, no interceptor);
- ``metrics``: the default, every node serving ``/metrics`` (scraped once
  a second during the run, as a Prometheus would, so the scrape's cost
  counts too);
- ``tracing``: metrics on, and every node exporting spans over OTLP to a
  fake receiver in this process (``harness.otlp_receiver``) with
  ``OTEL_TRACES_SAMPLER=traceidratio``, ``OTEL_TRACES_SAMPLER_ARG=0.01``.

The configurations alternate for ``rounds`` rounds, each on a fresh
cluster, and each round starts with the next one (off, metrics, tracing;
metrics, tracing, off; ...), so a drift of the machine during the step, or
a slow first run, lands on all three alike; a ratio is the mean MB/s of one
configuration over the mean of ``off``. Targets (issue 19): both >= 0.95.
The client-side choice between prometheus-client and the OpenTelemetry
metrics SDK is measured here too (``bench.metrics_choice``: per-call
cost on the produce path), reported in ``details``.
"""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import mean
from typing import Any

from bench import metrics_choice
from bench.cluster_access import NodeAdmin, running_cluster
from bench.cluster_figures import produce_flat_out
from harness.local_cluster import LocalCluster, TopicSpec
from harness.otlp_receiver import OtlpReceiver

KiB = 1024
CONFIGS = ("off", "metrics", "tracing")


@dataclass(frozen=True)
class TelemetryParams:
    rounds: int = 3
    partitions: int = 16
    warmup_s: float = 2.0
    seconds: float = 8.0
    sampling_ratio: float = 0.01
    scrape_interval_s: float = 1.0


def _tracing_env(endpoint: str, ratio: float) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OTEL_TRACES_SAMPLER": "traceidratio",
        "OTEL_TRACES_SAMPLER_ARG": str(ratio),
    }


async def _scrape_every(cluster: LocalCluster, interval_s: float) -> None:
    """GET every node's /metrics once per interval (a Prometheus's load)."""
    urls = [f"http://{cluster.metrics_address(n)}/metrics" for n in cluster.addresses]

    def get(url: str) -> int:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return len(answer.read())

    while True:
        await asyncio.sleep(interval_s)
        for url in urls:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(get, url)


@contextlib.asynccontextmanager
async def _scraping(cluster: LocalCluster, enabled: bool, interval_s: float) -> AsyncIterator[None]:
    if not enabled:
        yield
        return
    task = asyncio.create_task(_scrape_every(cluster, interval_s))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _flat_out(
    root: Path, params: TelemetryParams, config: str, receiver: OtlpReceiver
) -> dict[str, Any]:
    options: dict[str, Any] = {"metrics": config != "off"}
    if config == "tracing":
        options["node_env"] = _tracing_env(receiver.endpoint, params.sampling_ratio)
    topics = [TopicSpec("tput", params.partitions)]
    async with running_cluster(root, topics, **options) as cluster:
        admin = NodeAdmin(cluster)
        try:
            await admin.wait_for_leaders(params.partitions)
            async with _scraping(cluster, config != "off", params.scrape_interval_s):
                result = await produce_flat_out(cluster, admin, "tput", KiB, params.warmup_s, params.seconds)
        finally:
            await admin.close()
        if config == "tracing":
            # A clean stop flushes each node's span batch (close() is SIGKILL).
            await asyncio.to_thread(cluster.stop_all)
        return result


def _ratio(of: list[float], to: list[float]) -> float | None:
    return round(mean(of) / mean(to), 3) if of and to and mean(to) > 0 else None


async def measure(root: Path, params: TelemetryParams) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {config: [] for config in CONFIGS}
    with OtlpReceiver() as receiver:
        for round_no in range(params.rounds):
            # Each round starts with another configuration: the first run of
            # the step (a colder machine, the previous step's leftovers) must
            # not always land on the same one.
            shift = round_no % len(CONFIGS)
            for config in CONFIGS[shift:] + CONFIGS[:shift]:
                receiver.clear()
                result = await _flat_out(root / f"{config}-{round_no}", params, config, receiver)
                if config == "tracing":
                    # Proof the tracing run traced: spans arrived (about 1 % of the calls).
                    result["spans_received"] = len(receiver.spans())
                runs[config].append(result)
    mb_s = {config: [r["mb_s"] for r in runs[config]] for config in CONFIGS}
    choice = await asyncio.to_thread(metrics_choice.measure)
    return {
        "metrics_produce_ratio": _ratio(mb_s["metrics"], mb_s["off"]),
        "tracing_produce_ratio": _ratio(mb_s["tracing"], mb_s["off"]),
        "details": {
            "params": asdict(params),
            "mb_s": mb_s,
            "runs": runs,
            "metrics_library_choice": choice,
        },
    }
