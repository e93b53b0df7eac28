"""The flag server's settings: command-line options (``raftlog flags serve``),
their environment fallbacks, and the frozen ``ServeOptions`` the process
runs with (flags/server.py).

Invariants: ``options_from_args`` either returns options that ``serve`` can
run with or raises ``UsageError`` with what to fix (exit status 2); the
operator key is read from a file only its owner can read, or from the
environment, never echoed. ``--tls-ca`` (default ``$RAFTLOG_TLS_CA``) is
the cluster's CA for TLS; ``serve_main`` puts it in ``RAFTLOG_TLS_CA`` for
the process, where every SDK client the server makes reads it
(client/auth.py), so no client is left in plaintext.
"""

from __future__ import annotations

import argparse
import os
import signal
import stat
import sys
from dataclasses import dataclass, field

from flags.flagd_ops import DEFAULT_FRACTIONAL_VERSION, FractionalVersion
from flags.ofrep_options import OfrepOptions, add_ofrep_arguments, ofrep_options_from_args
from flags.telemetry_logs import LOG_FORMATS
from raftlog.v1 import channel_options

DEFAULT_EVAL_PORT = 8013
DEFAULT_MANAGEMENT_PORT = 8014
DEFAULT_SYNC_PORT = 8015
EVENT_LOOPS = ("asyncio", "uvloop")
DEFAULT_BOOTSTRAP = "127.0.0.1:7001"
DEFAULT_AUDIT_WINDOW_DAYS = 90
DAY_MS = 86_400_000
LOG_FORMAT_ENV = "RAFTLOG_LOG_FORMAT"

STOP_GRACE_S = 1.0
"""How long calls in flight get once a stop is asked for; flagd streams
never end on their own, so they are cancelled after it (clients reconnect
to another flag server)."""

GRPC_SERVER_OPTIONS = (
    # A second flag server started on a taken port fails instead of sharing
    # it (SO_REUSEPORT would let the kernel split connections between them).
    ("grpc.so_reuseport", 0),
    # Providers keep long-lived streams open and ping them: accept pings down
    # to the rate raftlog's own clients use, with or without calls in flight.
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", channel_options.MIN_PING_INTERVAL_MS),
)

READY_LINE_PREFIX = "flag server ready"
LISTENING_LINE_PREFIX = "flag server listening"

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

API_KEY_ON_COMMAND_LINE_WARNING = (
    "raftlog flags serve: warning: --api-key puts the operator key on the command line, where other "
    "users of this machine can read it (ps, /proc/PID/cmdline); set RAFTLOG_API_KEY or use "
    "--api-key-file PATH (a file only you can read) instead"
)


class UsageError(Exception):
    """A bad option found after parsing (exit status 2)."""


@dataclass(frozen=True, slots=True)
class ServeOptions:
    bootstrap: tuple[str, ...]
    api_key: str = field(repr=False)  # a clear API key: never in a repr or a log line
    host: str = "127.0.0.1"
    eval_port: int = DEFAULT_EVAL_PORT
    sync_port: int = DEFAULT_SYNC_PORT
    management_port: int = DEFAULT_MANAGEMENT_PORT
    audit_window_days: float = DEFAULT_AUDIT_WINDOW_DAYS
    fractional: FractionalVersion = DEFAULT_FRACTIONAL_VERSION
    ofrep: OfrepOptions = field(default_factory=OfrepOptions)
    event_loop: str = "asyncio"
    tls_ca: str | None = None
    """The cluster's CA file: connect to the cluster with TLS (None: plaintext)."""
    metrics_port: int = 0
    """Prometheus ``/metrics`` (flags/telemetry.py); 0: off (no metric work at all)."""
    log_format: str = "text"
    """``text`` or ``json`` (flags/telemetry_logs.py)."""

    @property
    def audit_window_ms(self) -> int:
        return int(self.audit_window_days * DAY_MS)


# --- options ---------------------------------------------------------------------------


def add_serve_arguments(parser: argparse.ArgumentParser, *, inherit_connection: bool = False) -> None:
    """The options of ``raftlog flags serve``. ``inherit_connection``: the
    parser is a subcommand of ``raftlog``, whose own ``--bootstrap``,
    ``--api-key`` and ``--api-key-file`` may come before the subcommand;
    here they then default to "not given" (``SUPPRESS``) so they do not
    overwrite those."""
    unset = argparse.SUPPRESS if inherit_connection else None
    parser.add_argument(
        "--bootstrap",
        default=unset,
        help=f"host:port[,host:port...] of cluster nodes (default: $RAFTLOG_BOOTSTRAP or {DEFAULT_BOOTSTRAP})",
    )
    key = parser.add_mutually_exclusive_group()
    key.add_argument(
        "--api-key-file",
        default=unset,
        metavar="PATH",
        help="the operator key, in a file only you can read (default: $RAFTLOG_API_KEY)",
    )
    key.add_argument(
        "--api-key",
        default=unset,
        metavar="KEY",
        help="the operator key; visible to other users in ps: prefer $RAFTLOG_API_KEY or --api-key-file",
    )
    parser.add_argument(
        "--tls-ca",
        default=unset,
        metavar="PATH",
        help="connect to the cluster with TLS, trusting this CA file (default: $RAFTLOG_TLS_CA)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    parser.add_argument(
        "--eval-port", type=int, default=DEFAULT_EVAL_PORT, help="flagd evaluation + admin gRPC (0: any free)"
    )
    parser.add_argument(
        "--sync-port", type=int, default=DEFAULT_SYNC_PORT, help="flagd sync gRPC (0: any free)"
    )
    parser.add_argument(
        "--management-port",
        type=int,
        default=DEFAULT_MANAGEMENT_PORT,
        help="HTTP /healthz and /readyz (0: any free)",
    )
    add_ofrep_arguments(parser)
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="Prometheus GET /metrics on this port (default 0: off; make run uses 9104)",
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        default=None,
        help=f"log lines as text or JSON (default: ${LOG_FORMAT_ENV} or text)",
    )
    parser.add_argument(
        "--event-loop",
        choices=EVENT_LOOPS,
        default="asyncio",
        help="asyncio's own loop, or uvloop (about 1.6x the OFREP requests per CPU second)",
    )
    parser.add_argument(
        "--audit-window-days",
        type=float,
        default=DEFAULT_AUDIT_WINDOW_DAYS,
        help="every change stays readable this long (min_compaction_lag_ms of new __flags topics)",
    )
    parser.add_argument(
        "--fractional",
        choices=[v.value for v in FractionalVersion],
        default=DEFAULT_FRACTIONAL_VERSION.value,
        help="fractional bucketing algorithm (default: what the in-process flagd provider uses)",
    )


def read_api_key_file(path: str) -> str:
    """The one key in ``path`` (like ``raftlog``'s own ``--api-key-file``):
    refused when the file is a regular file others may access, empty, or
    holds more than one word. The mode is checked on the opened file."""
    try:
        with open(path, "rb") as f:
            mode = os.fstat(f.fileno()).st_mode
            if stat.S_ISREG(mode) and stat.S_IMODE(mode) & 0o077:
                raise UsageError(
                    f"--api-key-file {path} is accessible to other users (mode {stat.S_IMODE(mode):04o}); "
                    f"run `chmod 600 {path}` (or use RAFTLOG_API_KEY)"
                )
            raw = f.read(64 * 1024)
    except OSError as error:
        raise UsageError(f"--api-key-file {path}: {error.strerror or error}") from None
    words = raw.decode("utf-8", errors="replace").split()
    if len(words) != 1:
        raise UsageError(f"--api-key-file {path} should hold exactly one API key")
    return words[0]


def options_from_args(args: argparse.Namespace, api_key: str | None = None) -> ServeOptions:
    """``ServeOptions`` from parsed arguments. ``api_key``: already resolved
    by the caller (``raftlog`` resolves its own options); else from
    ``--api-key-file``, ``--api-key`` or ``RAFTLOG_API_KEY``."""
    if api_key is None:
        if getattr(args, "api_key_file", None):
            api_key = read_api_key_file(args.api_key_file)
        elif getattr(args, "api_key", None):
            print(API_KEY_ON_COMMAND_LINE_WARNING, file=sys.stderr)
            api_key = str(args.api_key)
        else:
            api_key = os.environ.get("RAFTLOG_API_KEY") or None
    if not api_key:
        raise UsageError(
            "no operator key: set RAFTLOG_API_KEY or use --api-key-file PATH "
            "(the flag server reads and writes every tenant's __flags topic)"
        )
    bootstrap_text = (
        getattr(args, "bootstrap", None) or os.environ.get("RAFTLOG_BOOTSTRAP") or DEFAULT_BOOTSTRAP
    )
    bootstrap = tuple(part.strip() for part in bootstrap_text.split(",") if part.strip())
    if not bootstrap or any(":" not in part for part in bootstrap):
        raise UsageError(f"--bootstrap {bootstrap_text!r}: expected host:port[,host:port...]")
    for name in ("eval_port", "sync_port", "management_port"):
        port = getattr(args, name)
        if not 0 <= port <= 65535:
            raise UsageError(f"--{name.replace('_', '-')} {port}: a port is 0 (any free one) to 65535")
    metrics_port = getattr(args, "metrics_port", 0)
    if not 0 <= metrics_port <= 65535:
        raise UsageError(f"--metrics-port {metrics_port}: a port is 1 to 65535, or 0 for no metrics")
    log_format = getattr(args, "log_format", None) or os.environ.get(LOG_FORMAT_ENV) or "text"
    if log_format not in LOG_FORMATS:
        raise UsageError(f"{LOG_FORMAT_ENV}={log_format!r}: expected one of {', '.join(LOG_FORMATS)}")
    try:
        ofrep = ofrep_options_from_args(args)
    except ValueError as error:
        raise UsageError(str(error)) from None
    if args.audit_window_days < 0:
        raise UsageError("--audit-window-days must be 0 or more")
    tls_ca = getattr(args, "tls_ca", None) or os.environ.get("RAFTLOG_TLS_CA") or None
    if tls_ca is not None and not os.access(tls_ca, os.R_OK):
        raise UsageError(f"--tls-ca {tls_ca}: cannot read it; give the cluster's ca.pem")
    return ServeOptions(
        bootstrap=bootstrap,
        api_key=api_key,
        host=args.host,
        eval_port=args.eval_port,
        sync_port=args.sync_port,
        management_port=args.management_port,
        audit_window_days=args.audit_window_days,
        fractional=FractionalVersion(args.fractional),
        ofrep=ofrep,
        event_loop=args.event_loop,
        tls_ca=tls_ca,
        metrics_port=metrics_port,
        log_format=log_format,
    )


def host_port(host: str, port: int) -> str:
    """``host:port``, an IPv6 host in brackets."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


# --- management HTTP -------------------------------------------------------------------
