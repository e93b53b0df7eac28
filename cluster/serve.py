"""``python -m cluster.serve --config cluster.toml --node-id N``: run one node.

Prints ``raftlog node N ready on ADDRESS`` (flushed) once it serves, so
scripts and tests can wait for it. SIGTERM and SIGINT stop it cleanly; exit
status 0 after a clean stop, 2 for a bad configuration, 1 for a failure.
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
import signal
import sys
from pathlib import Path

from cluster.node import Node
from cluster.static_config import ConfigError, load_cluster


def parse_dial(items: list[str]) -> dict[int, str]:
    """``["2=127.0.0.1:9002", ...]`` -> ``{2: "127.0.0.1:9002"}``."""
    dial: dict[int, str] = {}
    for item in items:
        node, sep, address = item.partition("=")
        if not sep or not node.strip().isdigit() or ":" not in address:
            raise ConfigError(f"--dial {item!r}: expected NODE=HOST:PORT, e.g. 2=127.0.0.1:9002")
        dial[int(node)] = address.strip()
    return dial


async def _serve(node: Node) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, node.stop)
    runner = asyncio.create_task(node.run())
    started = asyncio.create_task(node.started())
    done, _ = await asyncio.wait({runner, started}, return_when=asyncio.FIRST_COMPLETED)
    if started in done:
        print(f"raftlog node {node.node_id} ready on {node.spec.address}", flush=True)
    else:
        started.cancel()
    await runner


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
        "--unsafe-ack-before-commit",
        action="store_true",
        help="TEST ONLY: answer produce before it commits (loses data on failover; drills' negative control)",
    )
    args = parser.parse_args(argv)
    try:
        node = Node(
            load_cluster(args.config),
            args.node_id,
            dial=parse_dial(args.dial),
            unsafe_ack_before_commit=args.unsafe_ack_before_commit,
        )
    except (ConfigError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        if args.uvloop:
            try:
                import uvloop
            except ImportError:
                pass
            else:
                uvloop.run(_serve(node))
                return 0
        asyncio.run(_serve(node))
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
