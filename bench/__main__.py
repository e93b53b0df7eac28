"""``python -m bench [--quick | --profile full|quick|smoke] [--out PATH] [--dir DIR] [--only STEP...]``

Measures, in one run, on 3 node processes on loopback (RF 3, acks=all,
fsync on) and this machine's own limits as references, then writes one
JSON document (``--out``, default ``bench/out/latest.json``), the same
table as Markdown beside it (``.md``), and prints the table.

Steps, in order (each fresh cluster lives under ``--dir``, on the disk the
``fsync`` reference measured):

1. ``references``: fsync/s, synced RocksDB MB/s, loopback gRPC echo
   (``bench.references``), measured first, with no cluster running;
2. ``raft_core``: the Raft core alone in the simulator (``bench.raft_core``);
3. ``flags``: the flag evaluator against ``openfeature-flagd-core``, in
   this process, same contexts, interleaved (``bench.flag_eval``);
4. ``flag_server``: the flag server as a process on a 3-node cluster:
   bootstrap from a log of 100 tenants' flags and RSS, ResolveBoolean over
   gRPC against the echo reference, a change reaching 1,000 streams
   (``bench.flag_server``);
5. ``ofrep``: the flag server's OFREP port on its own 3-node cluster: bulk
   evaluation of 100 flags and ETag revalidation (304) from load-client
   processes, a change reaching 1,000 SSE change-ping clients, exposures
   accepted into the log, experiment results over 1,000,000 exposures
   (``bench.ofrep_figures``);
6. ``cluster``: produce, latency, end-to-end, consume (``bench.cluster_figures``);
7. ``compaction``: a compaction pass's rate and the produce latency of
   another topic while it runs (``bench.compaction``);
8. ``failover``: leader SIGKILLs (``bench.failover``);
9. ``density``: idle partitions (``bench.density``);
10. ``tenancy``: a noisy neighbour over its quota against a quiet tenant's
    latency, the quota's accuracy, and produce throughput with TLS on
    against plaintext (``bench.tenancy``);
11. ``telemetry``: produce throughput with metrics on and with tracing at
    1 % sampling, each against everything off (``bench.telemetry``).

Profiles: ``full`` (``make bench``, under 15 minutes), ``quick``
(``make bench-quick``: the same figures with fewer repetitions and shorter
runs, under 3 minutes) and ``smoke`` (seconds long, for the harness's own
test; its figures mean nothing). A failing step leaves its figures null,
records its error and makes the exit status 1; the other steps still run.
A step's result may carry a ``reference`` dict: figures of a reference
measured by that step (flagd-core's), reported under ``reference``.
``--only`` runs some of the steps (the others' figures are null).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    cluster_figures,
    compaction,
    density,
    failover,
    flag_eval,
    flag_server,
    ofrep_figures,
    raft_core,
    references,
    report,
    telemetry,
    tenancy,
)
from bench.cluster_figures import ClusterParams
from bench.compaction import CompactionParams
from bench.density import DensityParams
from bench.experiment_figures import ExperimentParams
from bench.exposure_figures import ExposureParams
from bench.failover import FailoverParams
from bench.flag_eval import FlagEvalParams
from bench.flag_server import FlagServerParams
from bench.flag_streams import PropagationParams
from bench.ofrep_figures import OfrepParams
from bench.sse_streams import SseParams
from bench.telemetry import TelemetryParams
from bench.tenancy import TenancyParams

OUT = Path(__file__).resolve().parent / "out"
STEPS = (
    "references",
    "raft_core",
    "flags",
    "flag_server",
    "ofrep",
    "cluster",
    "compaction",
    "failover",
    "density",
    "tenancy",
    "telemetry",
)


@dataclass(frozen=True)
class Profile:
    name: str
    reference_s: float
    raft_core_s: float
    cluster: ClusterParams
    compaction: CompactionParams
    failover: FailoverParams
    density: DensityParams
    flags: FlagEvalParams
    flag_server: FlagServerParams
    ofrep: OfrepParams
    tenancy: TenancyParams
    telemetry: TelemetryParams


PROFILES = {
    "full": Profile(
        "full",
        reference_s=5,
        raft_core_s=5,
        cluster=ClusterParams(warmup_s=3, seconds=15, latency_samples=5000, steady_s=15),
        compaction=CompactionParams(fill_mb=128, latency_samples=2000),
        failover=FailoverParams(kills=25),
        density=DensityParams(idle_s=30),
        flags=FlagEvalParams(contexts=1000, rounds=7, passes=20),
        flag_server=FlagServerParams(
            tenants=100,
            flags_per_tenant=100,
            events_per_tenant=1000,
            rpc_seconds=5,
            rpc_rounds=5,
            propagation=PropagationParams(streams=1000, writes=20),
        ),
        ofrep=OfrepParams(
            bulk_seconds=5,
            revalidate_seconds=5,
            sse=SseParams(streams=1000, writes=20),
            exposures=ExposureParams(batches=600),
            experiment=ExperimentParams(exposures=1_000_000),
        ),
        tenancy=TenancyParams(),
        telemetry=TelemetryParams(),
    ),
    "quick": Profile(
        "quick",
        reference_s=2,
        raft_core_s=2,
        cluster=ClusterParams(warmup_s=2, seconds=5, latency_samples=1000, steady_s=5),
        compaction=CompactionParams(fill_mb=24, latency_samples=500),
        failover=FailoverParams(kills=5),
        density=DensityParams(idle_s=10),
        flags=FlagEvalParams(contexts=1000, rounds=5, passes=5),
        # A tenth of the log; the same 1,000 streams, fewer writes.
        flag_server=FlagServerParams(
            tenants=10,
            flags_per_tenant=100,
            events_per_tenant=1000,
            rpc_seconds=2,
            rpc_rounds=4,
            propagation=PropagationParams(streams=1000, writes=8),
        ),
        # The same 1,000 SSE clients; shorter runs, fewer exposures (the
        # experiment's figure is then for 200,000: details say so).
        ofrep=OfrepParams(
            bulk_seconds=2,
            revalidate_seconds=2,
            sse=SseParams(streams=1000, writes=8),
            exposures=ExposureParams(batches=150, paced_seconds=3),
            experiment=ExperimentParams(exposures=200_000, calls=10),
        ),
        tenancy=TenancyParams(samples=500, flood_warmup_s=2, quota_window_s=8, tls_warmup_s=1, tls_seconds=3),
        telemetry=TelemetryParams(rounds=1, warmup_s=1, seconds=3),
    ),
    "smoke": Profile(
        "smoke",
        reference_s=0.3,
        raft_core_s=0.2,
        cluster=ClusterParams(
            partitions=4,
            warmup_s=0.3,
            seconds=0.7,
            latency_samples=50,
            steady_s=0.7,
            consume_timeout_s=20,
        ),
        compaction=CompactionParams(fill_mb=1, keys=500, latency_samples=30, pass_timeout_s=30),
        failover=FailoverParams(kills=1, round_timeout_s=20),
        density=DensityParams(
            partitions=10,
            baseline_partitions=None,
            idle_s=0.5,
            elect_timeout_s=20,
            settle_timeout_s=5,
            leader_balance_ms=1000,
        ),
        flags=FlagEvalParams(contexts=100, rounds=2, passes=1),
        flag_server=FlagServerParams(
            tenants=2,
            flags_per_tenant=10,
            events_per_tenant=30,
            rpc_seconds=0.3,
            rpc_rounds=2,
            propagation=PropagationParams(streams=20, writes=2, listeners=1, per_channel=10, settle_s=0.05),
        ),
        ofrep=OfrepParams(
            bulk_seconds=0.3,
            revalidate_seconds=0.3,
            processes=1,
            connections=4,
            users=200,
            sse=SseParams(streams=20, writes=2, listeners=1, settle_s=0.05),
            exposures=ExposureParams(
                batches=4,
                batch_size=250,
                processes=1,
                connections=2,
                quiet_s=0.3,
                paced_per_s=5000,
                paced_seconds=0.2,
            ),
            experiment=ExperimentParams(exposures=2000, calls=3),
        ),
        tenancy=TenancyParams(
            samples=30,
            flood_warmup_s=0.5,
            quota_window_s=0.5,
            tls_warmup_s=0.3,
            tls_seconds=0.7,
            tls_partitions=4,
        ),
        telemetry=TelemetryParams(rounds=1, partitions=4, warmup_s=0.3, seconds=0.7, scrape_interval_s=0.2),
    ),
}


def run(profile: Profile, data_dir: Path, steps: Sequence[str] = STEPS) -> dict[str, Any]:
    """Every step of ``steps``; the report document."""
    started = time.monotonic()
    meta: dict[str, Any] = {
        "profile": profile.name,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **report.commit(),
        "machine": report.machine(),
        "parameters": {
            "nodes": 3,
            "replication_factor": 3,
            "acks": "all (commit on a majority, each replica fsyncs before acknowledging)",
            "fsync": True,
            "data_dir": str(data_dir),
        }
        | asdict(profile),
    }
    figures: dict[str, Any] = {}
    refs: dict[str, Any] = {}
    details: dict[str, Any] = {}
    errors: dict[str, str] = {}
    timings: dict[str, float] = {}
    data_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="bench-", dir=data_dir))

    def step(name: str, body: Callable[[], dict[str, Any]]) -> None:
        if name not in steps:
            return
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        t0 = time.monotonic()
        try:
            result = body()
        except Exception as exc:
            errors[name] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
        else:
            details[name] = result.pop("details", None)
            # A step that failed part-way keeps what it measured.
            if (error := result.pop("error", None)) is not None:
                errors[name] = error
            refs.update(result.pop("reference", None) or {})
            (refs if name == "references" else figures).update(result)
        timings[name] = round(time.monotonic() - t0, 1)
        print(f"bench: {name} done in {timings[name]} s", file=sys.stderr, flush=True)

    try:
        step("references", lambda: references.measure(work, profile.reference_s))
        step("raft_core", lambda: _raft_core(profile.raft_core_s))
        step("flags", lambda: flag_eval.measure(profile.flags))
        step("flag_server", lambda: flag_server.measure(work / "flag_server", profile.flag_server))
        step("ofrep", lambda: ofrep_figures.measure(work / "ofrep", profile.ofrep))
        step("cluster", lambda: asyncio.run(cluster_figures.measure(work / "cluster", profile.cluster)))
        step("compaction", lambda: asyncio.run(compaction.measure(work / "compaction", profile.compaction)))
        step("failover", lambda: asyncio.run(failover.measure(work / "failover", profile.failover)))
        step("density", lambda: asyncio.run(density.measure(work / "density", profile.density)))
        step("tenancy", lambda: asyncio.run(tenancy.measure(work / "tenancy", profile.tenancy)))
        step("telemetry", lambda: asyncio.run(telemetry.measure(work / "telemetry", profile.telemetry)))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    meta["wall_s"] = round(time.monotonic() - started, 1)
    meta["step_s"] = timings
    return report.assemble(figures, refs, details, errors, meta=meta)


def _raft_core(seconds: float) -> dict[str, Any]:
    result = raft_core.measure(seconds=seconds)
    return {"raft_core_proposals_s": result.pop("raft_core_proposals_s"), "details": result}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="raftlog benchmarks and this machine's limits (bench/README.md)"
    )
    parser.add_argument("--quick", action="store_true", help="the quick profile (same as --profile quick)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default=None)
    parser.add_argument("--out", type=Path, default=OUT / "latest.json", help="the JSON report")
    parser.add_argument(
        "--dir", type=Path, default=OUT, help="where the clusters' data goes (the disk under test)"
    )
    parser.add_argument("--only", nargs="+", choices=STEPS, default=list(STEPS), help="run only these steps")
    args = parser.parse_args(argv)
    name = args.profile or ("quick" if args.quick else "full")
    document = run(PROFILES[name], args.dir, args.only)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(document, indent=2, default=str, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    table = report.markdown(document)
    args.out.with_suffix(".md").write_text(table, encoding="utf-8")
    print(table)
    print(f"wrote {args.out}")
    return 1 if document["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
