"""``raftlog flags serve`` (``python -m flags.server``): the flag server process.

One stateless process beside the cluster. It tails every tenant's ``__flags``
topic into memory (``Follower`` -> ``LiveFlags``), writes changes through the
SDK (``FlagWriter``), and serves:

=============== ====== ===========================================================
port (default)  kind   what
=============== ====== ===========================================================
eval    8013    gRPC   ``flagd.evaluation.v1`` + ``.v2``, ``raftlog.flags.v1``
                       (admin), ``grpc.health.v1``
sync    8015    gRPC   ``flagd.sync.v1``, ``grpc.health.v1``
management 8014 HTTP   ``/healthz`` (200 while the process runs), ``/readyz``
                       (200 once the follower is ready, else 503 with why)
ofrep   8016    HTTP   OFREP evaluation for mobile and web apps, tracking
                       (flags/ofrep.py, flags/tracking.py); rate-limited per
                       SDK key and per (key, client address): ``--ofrep-*``
metrics (off)   HTTP   Prometheus ``GET /metrics`` with ``--metrics-port P``
                       (flags/telemetry.py; ``make run``: 9104)
=============== ====== ===========================================================

A port of 0 means "any free one"; the ready line says which were taken::

    flag server ready eval=HOST:PORT sync=HOST:PORT management=HOST:PORT ofrep=HOST:PORT [metrics=HOST:PORT]

(fields are only ever added at the end, so parsers of the older line keep working).

Telemetry (flags/telemetry.py): with ``--metrics-port`` the gRPC servers get a
counting interceptor and the OFREP app a counting middleware; without it,
neither. gRPC server spans when ``OTEL_*`` configures OTLP tracing (no
interceptor otherwise). ``--log-format json`` (``RAFTLOG_LOG_FORMAT``):
JSON log lines (flags/telemetry_logs.py), keys redacted in both formats.

It is printed (flushed, on stdout) once every port is bound *and* the
follower has caught up with every tenant's flags, so a script or test that
waits for it can use the server at once. Before that, ``flag server
listening ...`` (same fields) says the ports are bound; health answers
NOT_SERVING and ``/readyz`` 503 until ready.

The operator key (the flag server's system key on the cluster) comes from
``--api-key-file PATH`` (first line; refused if its group or others may
read it), ``RAFTLOG_API_KEY``, or ``--api-key`` (with a warning: other users
see the command line). It never reaches a record, a log line or an answer.

Signals (invariants): SIGINT and SIGTERM never kill the process or raise
``KeyboardInterrupt`` from the start of ``main`` to its exit. The first one
stops it gracefully: health says NOT_SERVING, the gRPC servers stop taking
calls and end open streams after ``STOP_GRACE_S``, the management site
closes, then the follower, writer and key cache close; exit status 0. Later
signals are ignored. Exit status 1 when the server could not start (a port
taken, the cluster unreachable on first contact) or failed, 2 for a usage
error.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import socket
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING, TextIO

from flags.server_options import (
    GRPC_SERVER_OPTIONS,
    LISTENING_LINE_PREFIX,
    READY_LINE_PREFIX,
    STOP_GRACE_S,
    STOP_SIGNALS,
    ServeOptions,
    UsageError,
    add_serve_arguments,
    host_port,
    options_from_args,
)
from flags.telemetry_logs import configure_logging

if TYPE_CHECKING:  # imported by serve(): the signal handler is installed first
    import grpc
    from aiohttp import web
    from grpc_health.v1 import health

    from flags.follower import Follower


def management_app(
    is_ready: Callable[[], bool],
    not_ready_reason: Callable[[], str],
    stats: Callable[[], Mapping[str, object]] = dict,
) -> web.Application:
    """``/healthz``: 200 whenever the process answers (liveness: restarting
    it cannot help otherwise). ``/readyz``: 200 once ``is_ready()``, else
    503 with ``not_ready_reason()`` as the body (readiness: send no traffic
    yet). ``/stats``: ``stats()`` as JSON — the exposure writer's counters,
    where exposures it had to drop (the log slow or away) are reported."""
    from aiohttp import web

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_request: web.Request) -> web.Response:
        if is_ready():
            return web.Response(text="ready\n")
        return web.Response(status=503, text=f"not ready: {not_ready_reason()}\n")

    async def stats_json(_request: web.Request) -> web.Response:
        return web.json_response(stats())

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/stats", stats_json)
    return app


# --- the process -----------------------------------------------------------------------


class StopSignals:
    """The process's SIGINT/SIGTERM handler (module docstring): the first
    signal sets ``stop`` on the running loop; the rest are ignored."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def attach(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        self._loop, self._stop = loop, stop
        if self.received is not None:
            stop.set()

    def detach(self) -> None:
        self._loop = self._stop = None

    def ignore_from_now(self) -> None:
        # SIG_IGN survives interpreter finalization; a Python handler does not.
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is not None:
            return
        self.received = signum
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(stop.set)


@contextlib.contextmanager
def _wake_on_signal(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """A signal wakes the loop at once (its C handler writes to a socket the
    loop watches), even when it landed on one of gRPC's threads."""
    receive, send = socket.socketpair()
    with receive, send:
        receive.setblocking(False)
        send.setblocking(False)

        def drain() -> None:
            with contextlib.suppress(BlockingIOError, InterruptedError):
                while receive.recv(4096):
                    pass

        loop.add_reader(receive.fileno(), drain)
        previous = signal.set_wakeup_fd(send.fileno(), warn_on_full_buffer=False)
        try:
            yield
        finally:
            signal.set_wakeup_fd(previous)
            loop.remove_reader(receive.fileno())


class StartError(Exception):
    """The server could not start (exit status 1)."""


def _bind_grpc(server: grpc.aio.Server, host: str, port: int, what: str) -> int:
    """Bind ``server`` and return the port taken."""
    try:
        bound = int(server.add_insecure_port(host_port(host, port)))
    except RuntimeError as error:  # grpc raises on a failed bind (older versions returned 0)
        raise StartError(f"cannot listen on {host_port(host, port)} ({what}): {error}") from None
    if bound == 0:
        raise StartError(f"cannot listen on {host_port(host, port)} ({what}): address in use?")
    return bound


async def _set_health(servicer: health.aio.HealthServicer, services: Sequence[str], serving: bool) -> None:
    from grpc_health.v1 import health_pb2

    status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
    for service in ("", *services):
        await servicer.set(service, status)


async def serve(
    options: ServeOptions, stop: asyncio.Event, *, out: TextIO | None = None, log: TextIO | None = None
) -> None:
    """Run the flag server until ``stop`` is set, then stop it gracefully.
    Raises ``StartError`` when it cannot start."""
    import grpc
    from aiohttp import web
    from grpc_health.v1 import health, health_pb2_grpc

    from flags.admin_service import register_admin
    from flags.events_service import register_events
    from flags.experiments.admin_rpcs import register_experiments
    from flags.experiments.analyzer import ExperimentAnalyzer
    from flags.exposures import ExposureSink
    from flags.flagd_evaluation import register_evaluation
    from flags.flagd_sync import register_sync
    from flags.follower import Follower
    from flags.live import LiveFlags
    from flags.ofrep import ofrep_app
    from flags.ofrep_events import ChangePings, add_event_routes
    from flags.telemetry import FlagMetrics, metrics_app, server_interceptors
    from flags.tenant_keys import TenantKeys
    from flags.tracking import add_tracking_routes
    from flags.writer import FlagWriter

    out = out or sys.stdout
    log = log or sys.stderr
    live = LiveFlags(fractional=options.fractional)
    metrics = FlagMetrics() if options.metrics_port else None
    interceptors = server_interceptors()
    if metrics is not None:
        live.on_change = metrics.on_change
        interceptors.append(metrics.rpc_interceptor())
    follower = Follower(live, list(options.bootstrap), options.api_key)
    writer = FlagWriter(
        live, follower, list(options.bootstrap), options.api_key, audit_window_ms=options.audit_window_ms
    )
    keys = TenantKeys(list(options.bootstrap))
    exposures = ExposureSink(list(options.bootstrap), options.api_key)
    analyzer = ExperimentAnalyzer(live.experiments, list(options.bootstrap), options.api_key)
    is_ready = follower.is_ready

    # No interceptor at all unless telemetry asks for one (each costs every call).
    eval_server = grpc.aio.server(options=GRPC_SERVER_OPTIONS, interceptors=interceptors or None)
    sync_server = grpc.aio.server(options=GRPC_SERVER_OPTIONS, interceptors=interceptors or None)
    health_servicer = health.aio.HealthServicer()
    evaluation_streams = register_evaluation(eval_server, live, is_ready=is_ready, exposures=exposures)
    register_admin(eval_server, live, writer, follower, keys)
    register_experiments(
        eval_server,
        live=live,
        registry=live.experiments,
        writer=writer,
        follower=follower,
        keys=keys,
        analyzer=analyzer,
    )
    sync_streams = register_sync(sync_server, live, is_ready=is_ready)
    register_events(eval_server, live, exposures, is_ready=is_ready)
    for server in (eval_server, sync_server):
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    # Health names the overall server ("") and each flag service; they become
    # SERVING together, once the follower is ready.
    services = flag_service_names()
    await _set_health(health_servicer, services, serving=False)

    def not_ready_reason() -> str:
        stopped = follower.stopped_tenants()
        if stopped:
            return "; ".join(f"tenant {tenant}: {why}" for tenant, why in sorted(stopped.items()))
        return "catching up with the flag changes in the log (or the cluster is not reachable yet)"

    def stats() -> dict[str, object]:
        return {"exposures": dataclasses.asdict(exposures.stats)}

    runner = web.AppRunner(management_app(is_ready, not_ready_reason, stats), access_log=None)
    change_pings: list[ChangePings] = []
    ofrep = ofrep_app(
        live,
        limits=options.ofrep.limits(),
        is_ready=is_ready,
        exposures=exposures,
        public_url=options.ofrep.public_url,
        # The other services on the OFREP port (its CORS and preflight cover them).
        extra_routes=[
            lambda app: add_tracking_routes(app, live, exposures),
            lambda app: change_pings.append(add_event_routes(app, live)),  # the pings bulk answers name
        ],
    )
    ofrep_runner = web.AppRunner(ofrep, access_log=None)
    runners: tuple[web.AppRunner, ...] = (runner, ofrep_runner)
    if metrics is not None:
        metrics.instrument_app(ofrep)
        metrics.count_streams(evaluation_streams, sync_streams, *(pings.clients for pings in change_pings))
        runners = (*runners, web.AppRunner(metrics_app(metrics), access_log=None))
    try:
        eval_port = _bind_grpc(eval_server, options.host, options.eval_port, "evaluation")
        sync_port = _bind_grpc(sync_server, options.host, options.sync_port, "sync")
        management_port = await _start_site(runner, options.host, options.management_port, "management")
        ofrep_port = await _start_site(ofrep_runner, options.host, options.ofrep.port, "OFREP")
        await eval_server.start()
        await sync_server.start()
        ports = (
            f"eval={host_port(options.host, eval_port)} sync={host_port(options.host, sync_port)} "
            f"management={host_port(options.host, management_port)} ofrep={host_port(options.host, ofrep_port)}"
        )
        if metrics is not None:
            metrics_port = await _start_site(runners[2], options.host, options.metrics_port, "metrics")
            ports += f" metrics={host_port(options.host, metrics_port)}"
        print(f"{LISTENING_LINE_PREFIX} {ports}", file=out, flush=True)

        def announce() -> None:
            print(f"{READY_LINE_PREFIX} {ports}", file=out, flush=True)

        # A failing child cancels the body (stop.wait) and the group raises.
        async with asyncio.TaskGroup() as group:
            following = group.create_task(follower.run(), name="flags-follower")
            # Background work that never decides readiness: restates for
            # refused writes whose writer died (flags/store.py), and the
            # experiments' analysis (flags/experiments/analyzer.py).
            background = [
                group.create_task(writer.run_sweeps(), name="flags-restate-sweeps"),
                group.create_task(analyzer.run(), name="experiments-analyzer"),
            ]
            tracking = group.create_task(
                _track_readiness(follower, health_servicer, services, announce), name="flags-readiness"
            )
            await stop.wait()
            await _stop_serving(eval_server, sync_server, health_servicer, runners, log)
            tracking.cancel()
            following.cancel()
            for task in background:
                task.cancel()
    finally:
        # Idempotent: a start that failed half-way closes what it opened.
        await _stop_serving(eval_server, sync_server, health_servicer, runners, log)
        for closing in (follower.close, writer.close, keys.close, exposures.close, analyzer.close):
            try:
                await closing()
            except Exception as error:  # one failure must not keep the others open
                print(f"raftlog flags serve: closing: {error!r}", file=log)


async def _start_site(runner: web.AppRunner, host: str, port: int, what: str) -> int:
    """Serve ``runner`` on ``host:port``; the port taken."""
    from aiohttp import web

    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as error:
        raise StartError(
            f"cannot listen on {host_port(host, port)} ({what}): {error.strerror or error}"
        ) from None
    return int(runner.addresses[0][1])


READINESS_CHECK_S = 0.5
"""How often health is brought in line with the follower's readiness (it
can also go back: a tenant whose records cannot be applied stops it)."""


async def _track_readiness(
    follower: Follower,
    health_servicer: health.aio.HealthServicer,
    services: Sequence[str],
    announce: Callable[[], None],
) -> None:
    """Health says SERVING exactly while the follower is ready (checked
    every ``READINESS_CHECK_S``, and at once when it becomes ready);
    ``announce()`` the first time it is."""
    serving = False
    announced = False
    while True:
        ready = follower.is_ready()
        if ready != serving:
            await _set_health(health_servicer, services, serving=ready)
            serving = ready
        if ready and not announced:
            announce()
            announced = True
        if announced:
            await asyncio.sleep(READINESS_CHECK_S)
        else:
            await follower.wait_ready(READINESS_CHECK_S)


def flag_service_names() -> tuple[str, ...]:
    """The gRPC services the flag server serves, as health names them."""
    from openfeature.schemas.protobuf.flagd.evaluation.v1 import evaluation_pb2 as evaluation_v1
    from openfeature.schemas.protobuf.flagd.evaluation.v2 import evaluation_pb2 as evaluation_v2
    from openfeature.schemas.protobuf.flagd.sync.v1 import sync_pb2

    from raftlog.flags.v1 import flags_pb2

    modules = (evaluation_v1, evaluation_v2, flags_pb2, sync_pb2)
    return tuple(sorted(s.full_name for m in modules for s in m.DESCRIPTOR.services_by_name.values()))


async def _stop_serving(
    eval_server: grpc.aio.Server,
    sync_server: grpc.aio.Server,
    health_servicer: health.aio.HealthServicer,
    runners: Sequence[web.AppRunner],
    log: TextIO,
) -> None:
    """Stop taking traffic: health says NOT_SERVING, the gRPC servers refuse
    new calls and cancel open streams after ``STOP_GRACE_S``, the HTTP sites
    (management, OFREP) close. Safe to call twice and on servers never started."""
    with contextlib.suppress(Exception):
        await health_servicer.enter_graceful_shutdown()
    await asyncio.gather(
        eval_server.stop(STOP_GRACE_S), sync_server.stop(STOP_GRACE_S), return_exceptions=True
    )
    for runner in runners:
        try:
            await runner.cleanup()
        except Exception as error:
            print(f"raftlog flags serve: closing an HTTP site: {error!r}", file=log)


def build_parser(prog: str = "python -m flags.server") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0] if __doc__ else None)
    add_serve_arguments(parser)
    return parser


def run(options: ServeOptions, signals: StopSignals) -> int:
    """Serve until a stop signal; the exit status."""

    async def main_task() -> None:
        loop = asyncio.get_running_loop()
        stop = asyncio.Event()
        with _wake_on_signal(loop):
            signals.attach(loop, stop)
            try:
                await serve(options, stop)
            finally:
                signals.detach()

    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None
    if options.event_loop == "uvloop":
        import uvloop

        loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(main_task())
    except StartError as error:
        print(f"raftlog flags serve: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # the follower or a server failed: say what, exit 1
        print(f"raftlog flags serve: failed: {error!r}", file=sys.stderr)
        return 1
    finally:
        signals.ignore_from_now()
    if signals.received is not None:
        print(f"raftlog flags serve: stopped on {signal.Signals(signals.received).name}", file=sys.stderr)
    return 0


def serve_main(args: argparse.Namespace, api_key: str | None = None) -> int:
    """Entry point for parsed arguments (``raftlog flags serve`` passes its
    resolved key)."""
    try:
        options = options_from_args(args, api_key)
    except UsageError as error:
        print(f"raftlog flags serve: {error}", file=sys.stderr)
        return 2
    if options.tls_ca:  # every SDK client of this process reads it (flags/server_options.py)
        os.environ["RAFTLOG_TLS_CA"] = options.tls_ca
    # Before the server's imports (a good part of a second): a stop signal
    # from then on stops the server cleanly.
    signals = StopSignals()
    signals.install()
    configure_logging(options.log_format)
    from flags.telemetry import configure_tracing, shutdown_tracing

    configure_tracing()
    try:
        return run(options, signals)
    finally:
        shutdown_tracing()  # the spans still batched go out before the exit


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return serve_main(args)


if __name__ == "__main__":
    sys.exit(main())
