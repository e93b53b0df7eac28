"""``python -m cluster.serve --config cluster.toml --node-id N``: run one node.

Where it runs (``raftlog serve`` takes the same flags): ``--node-id-from-pod-name``
instead of ``--node-id`` takes the id from ``$POD_NAME``, a StatefulSet pod's
name ending in its ordinal (``raftlog-3`` is node 4: ordinals count from 0,
node ids from 1). ``--listen HOST:PORT`` binds the gRPC port there instead
of the node's address in the file, which stays the address the node
advertises (a pod binds ``0.0.0.0:7001`` and is reached by its DNS name);
with TLS the internal listener binds the same host at port + offset.
``--zone`` (else ``$RAFTLOG_ZONE``, else the file's) is the node's zone
label; a node registered with another zone asks to be registered with
this one (cluster/internal/join.py). ``--log-format text|json`` (else
``$RAFTLOG_LOG_FORMAT``, else text) sets the log lines' format
(cluster/telemetry/logs.py), every line naming the node id. A bad value of
any of them (no ordinal in the pod name, both or neither of the id flags,
a zone label of the wrong shape) exits 2 before anything starts.

Prints ``raftlog node N ready on ADDRESS`` (flushed) once it serves, so
scripts and tests can wait for it. The node needs the cluster secret (the
cluster file's ``cluster_secret_file`` or ``RAFTLOG_CLUSTER_SECRET_FILE``,
cluster/internal/cluster_secret.py) and refuses to start without it.
``--bootstrap-key-file`` names the operator key a new cluster bootstraps
with; it is read once, at start, and never enters the environment. SIGTERM and SIGINT stop it cleanly; exit
status 0 after a clean stop, 2 for a bad configuration, 1 for a failure.

Signals (invariants): from the start of ``main()`` (before the node's own
imports, which take a good part of a second) to the process's exit,
neither SIGINT nor SIGTERM kills it or raises ``KeyboardInterrupt``.
The first one stops the node (one that arrives before the node runs: it
does not start); later ones are ignored. A terminal's Ctrl-C can reach a
node together with whatever ``run_local`` or a test sends, and a second
signal that arrived once the event loop had closed used to end the process
by SIGTERM (status -15) or a KeyboardInterrupt (-2). Hence one handler,
installed with ``signal.signal`` (``loop.add_signal_handler`` is not used:
closing the loop puts the default dispositions back), replaced by SIG_IGN
once the node has stopped (interpreter finalization resets Python handlers
to the default, but keeps SIG_IGN).

The default asyncio loop runs the node; ``--uvloop`` opts into uvloop.
Measured here (one 1 KiB batch at a time, 1,000 produces): a single node
answered at p50 3.1 ms under uvloop against 1.9 ms under the default loop,
3 nodes 8.2 against 6.8 ms. grpc.aio drives its completion queue through the
loop, and under uvloop each wake-up costs more; so uvloop stays opt-in until
a run shows it paying.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import re
import signal
import socket
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from cluster.static_config import ConfigError, StaticCluster, load_cluster
from cluster.zone_source import environment_zone
from partitions.owner_only import restrict_umask

if TYPE_CHECKING:  # imported in main(), once the signal handler is in place
    from cluster.node import Node


def parse_dial(items: list[str]) -> dict[int, str]:
    """``["2=127.0.0.1:9002", ...]`` -> ``{2: "127.0.0.1:9002"}``."""
    dial: dict[int, str] = {}
    for item in items:
        node, sep, address = item.partition("=")
        if not sep or not node.strip().isdigit() or ":" not in address:
            raise ConfigError(f"--dial {item!r}: expected NODE=HOST:PORT, e.g. 2=127.0.0.1:9002")
        dial[int(node)] = address.strip()
    return dial


POD_NAME_ENV = "POD_NAME"
ZONE_ENV = "RAFTLOG_ZONE"
LOG_FORMAT_ENV = "RAFTLOG_LOG_FORMAT"
LOG_FORMATS = ("text", "json")
_ORDINAL = re.compile(r"-(\d+)$")


def node_id_from_pod_name(environ: Mapping[str, str]) -> int:
    """A StatefulSet pod's node id: its name's trailing ordinal + 1
    (``raftlog-0`` is node 1)."""
    name = environ.get(POD_NAME_ENV, "").strip()
    if not name:
        raise ConfigError(
            f"--node-id-from-pod-name: ${POD_NAME_ENV} is not set (give the container "
            "env POD_NAME from fieldRef metadata.name, or use --node-id N)"
        )
    found = _ORDINAL.search(name)
    if found is None:
        raise ConfigError(
            f"--node-id-from-pod-name: ${POD_NAME_ENV}={name!r} does not end in -<ordinal> "
            "(a StatefulSet pod is named <set>-<ordinal>); use --node-id N"
        )
    return int(found.group(1)) + 1


def chosen_node_id(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """``--node-id`` or ``--node-id-from-pod-name`` (exactly one)."""
    if args.node_id_from_pod_name:
        return node_id_from_pod_name(environ)
    if args.node_id is None:
        raise ConfigError("give --node-id N or --node-id-from-pod-name")
    return int(args.node_id)


def check_listen(listen: str | None) -> str | None:
    """``--listen HOST:PORT`` (a port 1-65535; the host may be 0.0.0.0 or [::])."""
    if listen is None:
        return None
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError(f"--listen {listen!r}: expected HOST:PORT, e.g. 0.0.0.0:7001")
    return listen


def with_zone(cluster: StaticCluster, node_id: int, zone: str | None) -> StaticCluster:
    """``cluster`` with ``node_id``'s zone label replaced (None: as in the
    file). Checked like the controller checks a registration."""
    if zone is None:
        return cluster
    from cluster.controller.model import check_zone

    if problem := check_zone(zone):
        raise ConfigError(f"--zone / ${ZONE_ENV}: {problem}")
    cluster.node(node_id)  # ConfigError for a node not in the file
    nodes = tuple(dataclasses.replace(n, zone=zone) if n.id == node_id else n for n in cluster.nodes)
    return dataclasses.replace(cluster, nodes=nodes)


def add_node_flags(parser: argparse.ArgumentParser, *, id_only: bool = False) -> None:
    """The flags that say which node this process is and where it runs
    (also on ``raftlog serve``, cluster/cli.py). ``id_only``: only which
    node, ``--node-id`` or ``--node-id-from-pod-name`` (``raftlog node
    hand-off``, cluster/cli_node_ops.py); ``chosen_node_id`` reads them."""
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--node-id", type=int, help="the node's id in the cluster file")
    which.add_argument(
        "--node-id-from-pod-name",
        action="store_true",
        help=f"node id = the trailing ordinal of ${POD_NAME_ENV} + 1 (a StatefulSet pod)",
    )
    if id_only:
        return
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="bind the gRPC port here instead of the node's address (which stays the advertised one)",
    )
    parser.add_argument(
        "--zone", help=f"this node's zone label (default: ${ZONE_ENV}, else the cluster file's)"
    )
    parser.add_argument(
        "--log-format",
        choices=LOG_FORMATS,
        help=f"log lines as text or JSON (default: ${LOG_FORMAT_ENV}, else text)",
    )


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """The node's SIGINT/SIGTERM handler for the whole process (see the
    module docstring). ``attach`` points it at the running node."""

    def __init__(self) -> None:
        self.received: int | None = None
        """The first stop signal, once one arrived."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._node: Node | None = None

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            signal.signal(sig, self._handle)

    def attach(self, loop: asyncio.AbstractEventLoop, node: Node) -> None:
        self._loop, self._node = loop, node
        if self.received is not None:  # arrived before we could forward it
            loop.call_soon(node.stop)

    def detach(self) -> None:
        self._loop = self._node = None

    def ignore_from_now(self) -> None:
        """The node has stopped: nothing is left to stop (see the module
        docstring for why SIG_IGN rather than this handler)."""
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        # Runs in the main thread between bytecodes: only record and hand the
        # stop to the loop, which may be in the middle of anything.
        if self.received is not None:
            return
        self.received = signum
        loop, node = self._loop, self._node
        if loop is not None and node is not None:
            # RuntimeError: the loop closed meanwhile; the node is stopping anyway.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(node.stop)


async def _serve(node: Node, signals: StopSignals) -> None:
    if signals.received is not None:
        return  # asked to stop before it started
    loop = asyncio.get_running_loop()
    with _wake_on_signal(loop):
        signals.attach(loop, node)
        try:
            await _run_and_announce(node)
        finally:
            signals.detach()
    if signals.received is not None:
        print(
            f"raftlog node {node.node_id}: stopped on {signal.Signals(signals.received).name}",
            file=sys.stderr,
        )


async def _run_and_announce(node: Node) -> None:
    runner = asyncio.create_task(node.run())
    started = asyncio.create_task(node.started())
    done, _ = await asyncio.wait({runner, started}, return_when=asyncio.FIRST_COMPLETED)
    if started in done:
        print(f"raftlog node {node.node_id} ready on {node.spec.address}", flush=True)
    else:
        started.cancel()
    await runner


@contextlib.contextmanager
def _wake_on_signal(loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """While the loop runs, a signal wakes it: the C-level handler writes to
    a socket the loop watches, so the Python handler runs at once even when
    the signal landed on one of gRPC's threads (otherwise it would wait for
    the loop's next timer)."""
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cluster.serve", description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True, help="static cluster file (TOML)")
    add_node_flags(parser)
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (slower with grpc.aio here)")
    parser.add_argument(
        "--dial",
        action="append",
        default=[],
        metavar="NODE=HOST:PORT",
        help="reach peer NODE at HOST:PORT instead of its configured address (a proxy; repeatable)",
    )
    parser.add_argument(
        "--bootstrap-key-file",
        type=Path,
        metavar="PATH",
        help="the operator key a new cluster is bootstrapped with (one line; read once at start)",
    )
    parser.add_argument(
        "--unsafe-ack-before-commit",
        action="store_true",
        help="TEST ONLY: answer produce before it commits (loses data on failover; drills' negative control)",
    )
    parser.add_argument(
        "--unsafe-compaction-drops-latest",
        action="store_true",
        help="TEST ONLY: compaction drops some keys' latest record (loses data; drills' negative control)",
    )
    args = parser.parse_args(argv)
    log_format = args.log_format or os.environ.get(LOG_FORMAT_ENV, "").strip() or "text"
    if log_format not in LOG_FORMATS:
        parser.error(f"${LOG_FORMAT_ENV}={log_format!r}: expected one of {', '.join(LOG_FORMATS)}")
    signals = StopSignals()
    signals.install()
    # Every file this node creates is owner-only from here on, whatever
    # umask it was started with (partitions/owner_only.py).
    restrict_umask()
    # The node's imports (gRPC, the server) take a good part of a second: a
    # Ctrl-C then must find the handler already installed.
    from cluster.controller_duties import BadBootstrapKey, read_bootstrap_key_file
    from cluster.node import Node
    from cluster.telemetry.logs import configure_logging

    if args.unsafe_compaction_drops_latest:
        import partitions.compaction

        partitions.compaction.UNSAFE_DROPS_LATEST = True  # TEST ONLY (see there)

    try:
        node_id = chosen_node_id(args, os.environ)
        # $RAFTLOG_ZONE (empty: no override), else $RAFTLOG_ZONE_FILE: cluster/zone_source.py.
        zone = args.zone if args.zone is not None else environment_zone(os.environ)
        cluster = with_zone(load_cluster(args.config), node_id, zone)
        listen = check_listen(args.listen)
        configure_logging(log_format, static_fields={"node_id": node_id})
        bootstrap_key = None
        if args.bootstrap_key_file is not None:
            try:
                bootstrap_key = read_bootstrap_key_file(args.bootstrap_key_file)
            except OSError as exc:
                raise ConfigError(
                    f"--bootstrap-key-file {args.bootstrap_key_file}: {exc.strerror or exc}"
                ) from None
        node = Node(
            cluster,
            node_id,
            dial=parse_dial(args.dial),
            listen=listen,
            unsafe_ack_before_commit=args.unsafe_ack_before_commit,
            bootstrap_key=bootstrap_key,
        )
    except (ConfigError, BadBootstrapKey, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.getLogger(__name__).info(
        "node %d starting: advertised as %s, listening on %s, zone %r",
        node_id,
        node.spec.address,
        listen or node.spec.address,
        node.spec.zone,
    )
    try:
        if args.uvloop:
            try:
                import uvloop
            except ImportError:
                pass
            else:
                uvloop.run(_serve(node, signals))
                return 0
        asyncio.run(_serve(node, signals))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        signals.ignore_from_now()
    return 0


if __name__ == "__main__":
    sys.exit(main())
