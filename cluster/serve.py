"""``python -m cluster.serve --config cluster.toml --node-id N``: run one node.

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
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from cluster.static_config import ConfigError, load_cluster
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
    parser.add_argument("--node-id", type=int, required=True, help="this node's id in the cluster file")
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
    signals = StopSignals()
    signals.install()
    # Every file this node creates is owner-only from here on, whatever
    # umask it was started with (partitions/owner_only.py).
    restrict_umask()
    # The node's imports (gRPC, the server) take a good part of a second: a
    # Ctrl-C then must find the handler already installed.
    from cluster.controller_duties import BadBootstrapKey, read_bootstrap_key_file
    from cluster.node import Node

    if args.unsafe_compaction_drops_latest:
        import partitions.compaction

        partitions.compaction.UNSAFE_DROPS_LATEST = True  # TEST ONLY (see there)

    try:
        bootstrap_key = None
        if args.bootstrap_key_file is not None:
            try:
                bootstrap_key = read_bootstrap_key_file(args.bootstrap_key_file)
            except OSError as exc:
                raise ConfigError(
                    f"--bootstrap-key-file {args.bootstrap_key_file}: {exc.strerror or exc}"
                ) from None
        node = Node(
            load_cluster(args.config),
            args.node_id,
            dial=parse_dial(args.dial),
            unsafe_ack_before_commit=args.unsafe_ack_before_commit,
            bootstrap_key=bootstrap_key,
        )
    except (ConfigError, BadBootstrapKey, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
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
