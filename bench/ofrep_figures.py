"""The flag server's OFREP port under load: bulk evaluation, ETag
revalidation, change pings, exposures, experiment results.

One 3-node ``LocalCluster`` (RF 3) and one flag server process
(``harness.flag_server.FlagServerProcess``), started with its rate limits
off (``--ofrep-key-rate 0 --ofrep-address-rate 0``: every request of the
run comes from 127.0.0.1 with one key, which the limits exist to stop) and
``--event-loop`` as the profile says (``uvloop`` by default: the server's
option for throughput). Every client is a process of its own (never the
server's); the server's CPU is read from ``/proc`` around each run, so
each figure has the server's CPU per request beside it (the 2 cores are
shared by the server, its cluster and the clients).

The bench tenant (``bench-ofrep``, environment ``bench``) has 100 flags:
``flag-0000`` ... (bench.flag_load's mix: static, targeting, fractional),
the SSE marker flag and the experiment flag; a client key (``rlc_``) for
OFREP and the change pings, a server key (``rlf_``) for exposures.

Parts, in order (each fails alone: the others' figures stay):

1. ``ofrep_bulk_rps``: bench.ofrep_load job ``bulk``: every request a fresh
   evaluation of the 100 flags for a new context (and 100 exposures handed
   to the sink, as in production);
2. ``ofrep_304_rps``: job ``revalidate``: ``If-None-Match`` with the ETag of
   the context's answer, every answer a 304; then the same clients against
   a bare aiohttp app (bench.http_floor, same event loop): the framework's
   floor, ``reference.aiohttp_304_rps`` / ``aiohttp_304_cpu_us``;
3. ``flag_sse_propagation_p99_ms``: bench.sse_streams, ``PutFlag`` of the
   marker flag to 1,000 SSE clients;
4. ``exposures_per_s``: bench.exposure_figures;
5. ``experiment_results_ms``: bench.experiment_figures.

``RAFTLOG_BENCH_PROFILE_SERVER=DIR`` runs the flag server under cProfile
(bench/server_profile/sitecustomize.py) and writes ``DIR/flag-server.prof``
and the top functions to ``DIR/flag-server.txt`` when it stops: for finding
where a missed target's time goes, never for the figures (profiling slows
the server down).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc

from bench.experiment_figures import EXPERIMENT_FLAG, ExperimentParams, experiment_flag, measure_experiment
from bench.exposure_figures import ExposureParams, LogEnd, measure_exposures
from bench.flag_load import definition, flag_key
from bench.flag_server import _cpu_s, _FlagAdmin, _rss_mb
from bench.flag_streams import MARKER_FLAG, marker_definition
from bench.http_floor import measure_floor
from bench.ofrep_load import LoadSpec, run_load
from bench.sse_streams import SseParams, measure_sse_propagation
from client.admin import Admin
from harness.flag_server import FlagServerProcess
from harness.local_cluster import LocalCluster
from raftlog.flags.v1 import flags_pb2

TENANT = "bench-ofrep"
ENV = "bench"
FLAGS = 100
PROFILE_ENV = "RAFTLOG_BENCH_PROFILE_SERVER"
PROFILE_SITE = Path(__file__).resolve().parent / "server_profile"


@dataclass(frozen=True)
class OfrepParams:
    bulk_seconds: float = 5.0
    revalidate_seconds: float = 5.0
    processes: int = 3
    """Load client processes (each one asyncio loop: at most a core)."""
    connections: int = 16
    """Keep-alive connections per client process."""
    users: int = 3000
    """Contexts per client process."""
    event_loop: str = "uvloop"
    sse: SseParams = field(default_factory=SseParams)
    exposures: ExposureParams = field(default_factory=ExposureParams)
    experiment: ExperimentParams = field(default_factory=ExperimentParams)
    ready_timeout_s: float = 120.0


def flag_set() -> dict[str, Any]:
    """The bench environment's ``FLAGS`` flags (module docstring)."""
    flags = {flag_key(i): definition(i, 0) for i in range(FLAGS - 2)}
    flags[MARKER_FLAG] = marker_definition(0)
    flags[EXPERIMENT_FLAG] = experiment_flag()
    return {"flags": flags, "metadata": {"flagSetId": "bench-ofrep"}}


def exposure_flags() -> tuple[tuple[str, str], ...]:
    """(flag, variant) pairs the exposure batches cycle over (flags of the set)."""
    pairs = []
    for i in range(10):
        variants = list(definition(i, 0)["variants"])
        pairs.append((flag_key(i), variants[i % len(variants)]))
    return tuple(pairs)


async def _prepare(server: FlagServerProcess, cluster: LocalCluster) -> tuple[str, str]:
    """The tenant, environment and flags; (client key, server key)."""
    async with Admin(list(cluster.addresses.values()), api_key=cluster.api_key) as cluster_admin:
        await cluster_admin.create_tenant(TENANT)
    async with grpc.aio.insecure_channel(server.eval_address) as channel:
        admin = _FlagAdmin(channel, cluster.api_key)
        await admin.call("CreateEnvironment", flags_pb2.CreateEnvironmentRequest(name=ENV), TENANT)
        await admin.call(
            "ImportFlags",
            flags_pb2.ImportFlagsRequest(environment=ENV, flags_json=json.dumps(flag_set())),
            TENANT,
        )
        keys = []
        for kind in ("client", "server"):
            created = await admin.call(
                "CreateSdkKey",
                flags_pb2.CreateSdkKeyRequest(environment=ENV, name=f"bench-{kind}", kind=kind),
                TENANT,
            )
            keys.append(str(created.clear_key))
    return keys[0], keys[1]


@contextmanager
def _profiled_server_env() -> Iterator[str | None]:
    """With ``RAFTLOG_BENCH_PROFILE_SERVER`` set, the environment a child
    inherits loads bench/server_profile/sitecustomize.py (restored after)."""
    out = os.environ.get(PROFILE_ENV)
    if not out:
        yield None
        return
    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROFILE_SITE), saved) if p)
    os.environ["RAFTLOG_BENCH_CPROFILE_OUT"] = str(Path(out).resolve() / "flag-server")
    try:
        yield out
    finally:
        if saved is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = saved
        os.environ.pop("RAFTLOG_BENCH_CPROFILE_OUT", None)


def _load_figures(load: dict[str, Any]) -> dict[str, Any]:
    return {k: (round(v, 1) if isinstance(v, float) else v) for k, v in load.items() if k != "recorded"}


async def _bulk_and_revalidate(
    server: FlagServerProcess, client_key: str, params: OfrepParams, cpu: Callable[[], float], log_end: LogEnd
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    host, port = server.host, server.ofrep_port
    figures: dict[str, Any] = {}
    details: dict[str, Any] = {}
    errors: dict[str, str] = {}
    base = LoadSpec(
        job="bulk", key=client_key, processes=params.processes, connections=params.connections, flags=FLAGS
    )
    try:
        went: list[float] = []
        bulk = await run_load(
            host,
            port,
            replace(base, seconds=params.bulk_seconds, users=params.users),
            server_cpu_s=cpu,
            on_go=lambda: went.append(time.monotonic()),
        )
        figures["ofrep_bulk_rps"] = round(bulk["rps"], 1)
        details["bulk"] = _load_figures(bulk)
        # The bulk run's exposures (100 per request), once the sink wrote them.
        end, landed = await log_end.settled(0.02, 1.0, 120.0)
        details["bulk"]["exposures_in_log"] = end
        # (Each client process's content check before the run is one more request.)
        details["bulk"]["exposures_per_request"] = round(end / (bulk["requests"] + params.processes), 2)
        details["bulk"]["exposures_per_s"] = round(end / (landed - went[0]))
    except Exception as error:
        errors["ofrep_bulk_rps"] = f"{type(error).__name__}: {error}"
        traceback.print_exc()
    try:
        revalidate = await run_load(
            host,
            port,
            # Other contexts than the bulk run's (their answers were never asked).
            replace(
                base,
                job="revalidate",
                seconds=params.revalidate_seconds,
                users=min(params.users, 1000),
                first_user=5_000_000,
            ),
            server_cpu_s=cpu,
        )
        figures["ofrep_304_rps"] = round(revalidate["rps"], 1)
        details["revalidate"] = _load_figures(revalidate)
        # The same clients against a bare aiohttp app: the framework's floor.
        floor = await measure_floor(
            replace(base, job="revalidate", seconds=params.revalidate_seconds, users=min(params.users, 1000)),
            params.event_loop,
        )
        figures["reference"] = {
            "aiohttp_304_rps": round(floor["rps"], 1),
            "aiohttp_304_cpu_us": floor["flag_server_cpu_us_per_request"],
        }
        details["revalidate_floor"] = _load_figures(floor)
    except Exception as error:
        errors["ofrep_304_rps"] = f"{type(error).__name__}: {error}"
        traceback.print_exc()
    return figures, details, errors


async def _parts(
    server: FlagServerProcess, cluster: LocalCluster, params: OfrepParams
) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    assert server.process is not None
    pid = server.process.pid

    def cpu() -> float:
        return _cpu_s(pid)

    bootstrap = list(cluster.addresses.values())
    client_key, server_key = await _prepare(server, cluster)
    log_end = LogEnd(bootstrap, cluster.api_key, TENANT)
    try:
        figures, details, errors = await _bulk_and_revalidate(server, client_key, params, cpu, log_end)
    finally:
        await log_end.close()

    async def sse() -> dict[str, Any]:
        async with grpc.aio.insecure_channel(server.eval_address) as channel:
            admin = _FlagAdmin(channel, cluster.api_key)

            async def write(k: int) -> None:
                request = flags_pb2.PutFlagRequest(
                    environment=ENV, flag=MARKER_FLAG, definition_json=json.dumps(marker_definition(k))
                )
                await admin.call("PutFlag", request, TENANT)

            return await measure_sse_propagation(
                server.host, server.ofrep_port, client_key, write, params.sse, server_cpu_s=cpu
            )

    async def exposures() -> dict[str, Any]:
        return await measure_exposures(
            server.host,
            server.ofrep_port,
            server_key,
            exposure_flags(),
            bootstrap,
            cluster.api_key,
            TENANT,
            params.exposures,
            server_cpu_s=cpu,
        )

    async def experiment() -> dict[str, Any]:
        return await measure_experiment(
            server.eval_address, bootstrap, cluster.api_key, TENANT, ENV, params.experiment, server_cpu_s=cpu
        )

    for name, part in (("sse", sse), ("exposures", exposures), ("experiment", experiment)):
        try:
            result = await part()
        except Exception as error:
            errors[name] = f"{type(error).__name__}: {error}"
            traceback.print_exc()
            continue
        details[name] = result.pop("details")
        figures.update(result)
    return figures, details, errors


def measure(work: Path, params: OfrepParams) -> dict[str, Any]:
    """The step's figures (module docstring) and their details."""
    cluster = LocalCluster(work / "cluster", topics=())
    server: FlagServerProcess | None = None
    started = time.monotonic()
    try:
        cluster.start_all(60)
        server = FlagServerProcess(
            work / "flag-server",
            list(cluster.addresses.values()),
            cluster.api_key,
            extra_args=[
                "--ofrep-key-rate",
                "0",
                "--ofrep-address-rate",
                "0",
                "--event-loop",
                params.event_loop,
            ],
        )
        with _profiled_server_env() as profile_dir:
            server.start(params.ready_timeout_s)
        figures, details, errors = asyncio.run(_parts(server, cluster, params))
        assert server.process is not None
        details["flag_server_rss_mb_at_end"] = _rss_mb(server.process.pid)
        details["event_loop"] = params.event_loop
        details["seconds"] = round(time.monotonic() - started, 1)
        if profile_dir is not None:
            server.stop(30)  # a clean exit writes the profile
            details["profile"] = str(Path(profile_dir).resolve() / "flag-server.txt")
        # The table's label says how many exposures the results were for.
        result: dict[str, Any] = {
            **figures,
            "experiment_exposures": params.experiment.exposures,
            "details": details,
        }
        if errors:
            result["error"] = "; ".join(f"{k}: {v}" for k, v in errors.items())
        return result
    finally:
        if server is not None:
            server.close()
        cluster.close()
