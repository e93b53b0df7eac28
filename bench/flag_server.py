"""The flag server as a process on a real cluster: bootstrap, memory,
evaluations over gRPC, propagation of a change.

One 3-node ``LocalCluster`` (RF 3) and one flag server process
(``harness.flag_server.FlagServerProcess``: ``python -m flags.server``);
every client below is this process or its children, never the server's.

1. **Bootstrap** (``flag_server_bootstrap_s``, ``flag_server_rss_mb``):
   ``bench.flag_load`` writes ``tenants`` tenants' flag topics straight to
   the log (``flags_per_tenant`` flags, ``events_per_tenant`` change records
   each: 100 x 100 flags and 100,000 events in ``full``); then the flag
   server is started and timed from the launch of its process to its ready
   line (ports bound and every tenant's log applied: interpreter start and
   imports included, as a restarted pod pays them). RSS is ``VmRSS`` of the
   process right then. The load is checked on the server afterwards
   (``ListEnvironments`` in every tenant: every flag there, at the version
   of the tenant's last record).
2. **Evaluations** (``flag_rpc_evals_s``): ``flagd.evaluation.v2``
   ``ResolveBoolean`` of a static boolean flag with an SDK key
   (``authorization: Bearer``), ``rpc_concurrency`` calls in flight on one
   channel from this process, for ``rpc_seconds``: the shape of the gRPC
   echo reference (``bench.grpc_echo``: 16 in flight, one channel, one
   client process, 100-byte requests). Like the echo client, this one sends
   pre-encoded request bytes (about 70 bytes: the flag key and a context
   with a targeting key and an email, 1,000 different ones in turn) and
   does not decode answers (a sample is decoded and checked before the run),
   so both clients do the same work per call and the ratio compares the
   servers. The target is judged against ``reference.grpc_echo_rpc_s``
   (the ``references`` step, no cluster running). The run is split in
   ``rpc_rounds`` rounds interleaved with as many flat-out runs against the
   echo server itself, so ``details`` also has the echo's rate beside the
   idle cluster and flag server, hit by the same other work on the machine
   (``ratio_to_echo_interleaved``), and the flag server's and this
   process's CPU during the flag rounds.
3. **Propagation** (``flag_propagation_p50_ms`` / ``_p99_ms``):
   ``bench.flag_streams``.

The bench tenant (``bench-flags``, environment ``bench``) is created
through the admin API after the bootstrap, so the servers' lazy topic
creation is part of the run.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.struct_pb2 import Struct
from openfeature.schemas.protobuf.flagd.evaluation.v2 import evaluation_pb2 as v2_pb2

from bench import grpc_echo
from bench.flag_load import ENV, definition, load_history, tenant_name
from bench.flag_streams import MARKER_FLAG, PropagationParams, marker_definition, measure_propagation
from client.admin import Admin
from harness.flag_server import FlagServerProcess
from harness.local_cluster import LocalCluster
from raftlog.flags.v1 import flags_pb2, flags_pb2_grpc

RESOLVE_BOOLEAN = "/flagd.evaluation.v2.Service/ResolveBoolean"
BENCH_TENANT = "bench-flags"
BENCH_ENV = "bench"
STATIC_FLAG = "bench-static"
FILLER_FLAGS = 20
"""Flags of the bench environment besides the two the bench uses: a
snapshot streamed by SyncFlags is the size of a small real set."""


@dataclass(frozen=True)
class FlagServerParams:
    tenants: int = 100
    flags_per_tenant: int = 100
    events_per_tenant: int = 1000
    rpc_seconds: float = 5.0
    """Flat-out seconds against the flag server (and as many against the echo)."""
    rpc_rounds: int = 5
    rpc_concurrency: int = 16
    """Calls in flight: the echo reference's."""
    propagation: PropagationParams = field(default_factory=PropagationParams)
    ready_timeout_s: float = 300.0


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for process {pid}")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class _FlagAdmin:
    """The flag server's admin API with the operator key acting in a tenant."""

    def __init__(self, channel: grpc.aio.Channel, operator_key: str) -> None:
        self.stub = flags_pb2_grpc.FlagAdminServiceStub(channel)
        self.operator_key = operator_key

    def metadata(self, tenant: str) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.operator_key}"), ("raftlog-tenant", tenant))

    async def call(self, method: str, request: Any, tenant: str) -> Any:
        return await getattr(self.stub, method)(request, metadata=self.metadata(tenant), timeout=30)


async def _check_loaded(admin: _FlagAdmin, params: FlagServerParams) -> None:
    """Every loaded tenant has its flags at the version of its last record."""
    for index in range(params.tenants):
        tenant = tenant_name(index)
        listed = await admin.call("ListEnvironments", flags_pb2.ListEnvironmentsRequest(), tenant)
        found = [(e.name, e.flags, e.version) for e in listed.environments]
        wanted = [(ENV, params.flags_per_tenant, params.events_per_tenant)]
        if found != wanted:
            raise RuntimeError(f"{tenant}: the flag server has {found}, the log {wanted}")


async def _prepare_bench_env(server: FlagServerProcess, cluster: LocalCluster) -> str:
    """The bench tenant and environment, its flags, and an SDK key for it (returned)."""
    async with Admin(list(cluster.addresses.values()), api_key=cluster.api_key) as cluster_admin:
        await cluster_admin.create_tenant(BENCH_TENANT)
    flag_set = {
        "flags": {
            STATIC_FLAG: {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"},
            MARKER_FLAG: marker_definition(0),
            **{f"filler-{i:02d}": definition(i, 0) for i in range(FILLER_FLAGS)},
        },
        "metadata": {"flagSetId": "bench"},
    }
    async with grpc.aio.insecure_channel(server.eval_address) as channel:
        admin = _FlagAdmin(channel, cluster.api_key)
        await admin.call(
            "CreateEnvironment", flags_pb2.CreateEnvironmentRequest(name=BENCH_ENV), BENCH_TENANT
        )
        await admin.call(
            "ImportFlags",
            flags_pb2.ImportFlagsRequest(environment=BENCH_ENV, flags_json=json.dumps(flag_set)),
            BENCH_TENANT,
        )
        created = await admin.call(
            "CreateSdkKey", flags_pb2.CreateSdkKeyRequest(environment=BENCH_ENV, name="bench"), BENCH_TENANT
        )
    return str(created.clear_key)


def _resolve_requests(count: int) -> list[bytes]:
    requests = []
    for i in range(count):
        context = Struct()
        context.update({"targetingKey": f"user-{i:06d}", "email": f"user{i}@example.com"})
        requests.append(
            v2_pb2.ResolveBooleanRequest(flag_key=STATIC_FLAG, context=context).SerializeToString()
        )
    return requests


@contextmanager
def _echo_server() -> Iterator[tuple[str, int]]:
    """The echo reference's server (``python -m bench.grpc_echo``) in a child
    process; its address and process id."""
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.grpc_echo"], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline().decode()
        if not line.startswith("echo ready on "):
            raise RuntimeError(f"echo server did not start: {line!r}")
        yield f"127.0.0.1:{int(line.rsplit(' ', 1)[1])}", process.pid
    finally:
        assert process.stdin is not None and process.stdout is not None
        process.stdin.close()  # the echo server's signal to stop
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


async def _flat_out(
    call: Any, requests: Sequence[bytes], metadata: Any, concurrency: int, seconds: float
) -> tuple[int, float]:
    """Calls completed in ``seconds`` with ``concurrency`` in flight, and the
    seconds they took (each caller ends with its call in flight)."""
    done = 0
    stop_at = time.perf_counter() + seconds

    async def caller(start: int) -> None:
        nonlocal done
        i = start
        while time.perf_counter() < stop_at:
            await call(requests[i % len(requests)], metadata=metadata, timeout=10)
            done += 1
            i += concurrency

    started = time.perf_counter()
    await asyncio.gather(*(caller(i) for i in range(concurrency)))
    return done, time.perf_counter() - started


async def _evaluations(
    server: FlagServerProcess, sdk_key: str, echo: tuple[str, int], params: FlagServerParams
) -> dict[str, Any]:
    """``rpc_rounds`` rounds, each a flat-out run against the echo server and
    one against the flag server (the order alternates), ``rpc_seconds`` in
    all for each: other work on the machine hits both alike."""
    assert server.process is not None
    pid = server.process.pid
    requests = _resolve_requests(1000)
    echo_requests = [b"x" * 100]  # the echo reference's small call
    metadata = (("authorization", f"Bearer {sdk_key}"),)
    totals = {"flags": [0, 0.0], "echo": [0, 0.0]}
    echo_address, echo_pid = echo
    server_cpu = client_cpu = echo_cpu = 0.0
    async with (
        grpc.aio.insecure_channel(server.eval_address) as flag_channel,
        grpc.aio.insecure_channel(echo_address) as echo_channel,
    ):
        flag_call = flag_channel.unary_unary(RESOLVE_BOOLEAN)
        echo_call = echo_channel.unary_unary(grpc_echo.METHOD)
        answer = v2_pb2.ResolveBooleanResponse.FromString(
            await flag_call(requests[0], metadata=metadata, timeout=10)
        )
        if not (answer.HasField("value") and answer.value is True and answer.reason == "STATIC"):
            raise RuntimeError(f"ResolveBoolean answered {answer}")
        for i in range(200):  # connect and warm up, as the echo reference does
            await flag_call(requests[i], metadata=metadata, timeout=10)
            await echo_call(echo_requests[0], timeout=10)
        for round_ in range(params.rpc_rounds):
            for side in ("flags", "echo") if round_ % 2 == 0 else ("echo", "flags"):
                seconds = params.rpc_seconds / params.rpc_rounds
                if side == "echo":
                    cpu0 = _cpu_s(echo_pid)
                    calls, elapsed = await _flat_out(
                        echo_call, echo_requests, None, params.rpc_concurrency, seconds
                    )
                    echo_cpu += _cpu_s(echo_pid) - cpu0
                else:
                    cpu0, own0 = _cpu_s(pid), time.process_time()
                    calls, elapsed = await _flat_out(
                        flag_call, requests, metadata, params.rpc_concurrency, seconds
                    )
                    server_cpu += _cpu_s(pid) - cpu0
                    client_cpu += time.process_time() - own0
                totals[side][0] += calls
                totals[side][1] += elapsed
    flags_calls, flags_s = totals["flags"]
    echo_calls, echo_s = totals["echo"]
    return {
        "flag_rpc_evals_s": round(flags_calls / flags_s),
        "details": {
            "calls": int(flags_calls),
            "seconds": round(flags_s, 2),
            "rounds": params.rpc_rounds,
            "concurrency": params.rpc_concurrency,
            "flag": STATIC_FLAG,
            "flag_server_cpu_pct": round(server_cpu / flags_s * 100, 1),
            "client_cpu_pct": round(client_cpu / flags_s * 100, 1),
            # CPU per call varies less with other work than rates do.
            "flag_server_cpu_us_per_call": round(server_cpu / flags_calls * 1e6, 1),
            "echo_server_cpu_us_per_call": round(echo_cpu / echo_calls * 1e6, 1),
            "echo_interleaved_rpc_s": round(echo_calls / echo_s),
            "ratio_to_echo_interleaved": round(flags_calls / flags_s / (echo_calls / echo_s), 3),
        },
    }


def _measure_evaluations(server: FlagServerProcess, sdk_key: str, params: FlagServerParams) -> dict[str, Any]:
    with _echo_server() as echo:
        return asyncio.run(_evaluations(server, sdk_key, echo, params))


async def _propagation(
    server: FlagServerProcess, operator_key: str, sdk_key: str, params: PropagationParams
) -> dict[str, Any]:
    async with grpc.aio.insecure_channel(server.eval_address) as channel:
        admin = _FlagAdmin(channel, operator_key)

        async def write(k: int) -> None:
            request = flags_pb2.PutFlagRequest(
                environment=BENCH_ENV, flag=MARKER_FLAG, definition_json=json.dumps(marker_definition(k))
            )
            await admin.call("PutFlag", request, BENCH_TENANT)

        assert server.process is not None
        pid = server.process.pid
        return await measure_propagation(
            server.eval_address, server.sync_address, sdk_key, write, params, server_cpu_s=lambda: _cpu_s(pid)
        )


def measure(work: Path, params: FlagServerParams) -> dict[str, Any]:
    """The step's figures (module docstring) and their details."""
    cluster = LocalCluster(work / "cluster", topics=())
    server: FlagServerProcess | None = None
    details: dict[str, Any] = {}
    try:
        cluster.start_all(60)
        bootstrap = list(cluster.addresses.values())
        details["load"] = asyncio.run(
            load_history(
                bootstrap,
                cluster.api_key,
                tenants=params.tenants,
                flags_per_tenant=params.flags_per_tenant,
                events_per_tenant=params.events_per_tenant,
            )
        )
        server = FlagServerProcess(work / "flag-server", bootstrap, cluster.api_key)
        started = time.monotonic()
        server.start(params.ready_timeout_s)
        bootstrap_s = time.monotonic() - started
        assert server.process is not None
        rss_mb = _rss_mb(server.process.pid)

        async def check() -> None:
            async with grpc.aio.insecure_channel(server.eval_address) as channel:
                await _check_loaded(_FlagAdmin(channel, cluster.api_key), params)

        asyncio.run(check())
        sdk_key = asyncio.run(_prepare_bench_env(server, cluster))
        evaluations = _measure_evaluations(server, sdk_key, params)
        details["evaluations"] = evaluations.pop("details")
        propagation = asyncio.run(_propagation(server, cluster.api_key, sdk_key, params.propagation))
        details["propagation"] = propagation.pop("details")
        details["rss_mb_at_end"] = _rss_mb(server.process.pid)
        return {
            "flag_server_bootstrap_s": round(bootstrap_s, 2),
            "flag_server_rss_mb": rss_mb,
            **evaluations,
            **propagation,
            "details": details,
        }
    finally:
        if server is not None:
            server.close()
        cluster.close()
