"""``raftlog``: the command line.

Connection settings come from the environment and flags override them:
``RAFTLOG_BOOTSTRAP`` (``host:port[,host:port...]``, any node) and
``RAFTLOG_API_KEY``. Commands so far:

- ``raftlog serve --config FILE --node-id N``: run one node (static cluster);
- ``raftlog cluster up [--data DIR]``: a local 3-node cluster (``make run``);
- ``raftlog status``: every node's replicas, leaders, CPU and memory;
- ``raftlog topic list`` / ``raftlog topic describe NAME``.

Exit status: 0 on success, 1 when the cluster answered with an error or
could not be reached, 2 for a usage error. Errors go to stderr as one line
with the reason and what to do.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence

import grpc

from cluster.grpc_errors import error_info
from raftlog.internal.v1 import node_admin_pb2, node_admin_pb2_grpc
from raftlog.v1 import metadata_pb2, metadata_pb2_grpc

DEFAULT_BOOTSTRAP = "127.0.0.1:7001"


class CliError(Exception):
    """A failure to report in one line (exit status 1)."""


def _bootstrap(args: argparse.Namespace) -> list[str]:
    text = args.bootstrap or os.environ.get("RAFTLOG_BOOTSTRAP") or DEFAULT_BOOTSTRAP
    return [part.strip() for part in text.split(",") if part.strip()]


async def _metadata(addresses: Sequence[str], topics: Sequence[str] = ()) -> metadata_pb2.GetMetadataResponse:
    """Ask the bootstrap nodes in turn; the first answer wins."""
    failures = []
    for address in addresses:
        async with grpc.aio.insecure_channel(address) as channel:
            try:
                return await metadata_pb2_grpc.MetadataServiceStub(channel).GetMetadata(
                    metadata_pb2.GetMetadataRequest(topics=list(topics)), timeout=5
                )
            except grpc.aio.AioRpcError as error:
                info = error_info(error)
                failures.append(f"{address}: {info.reason if info else error.code().name}")
    raise CliError(
        "no bootstrap node answered (" + "; ".join(failures) + "); is the cluster running? "
        "Set RAFTLOG_BOOTSTRAP or --bootstrap to a node's host:port"
    )


async def _status(args: argparse.Namespace) -> int:
    metadata = await _metadata(_bootstrap(args))
    print(
        f"{'node':>4}  {'address':<21} {'replicas':>8} {'leaders':>7} {'awake':>5} {'cpu_s':>8} {'rss_mb':>7}"
    )
    unreachable = 0
    for node in metadata.nodes:
        async with grpc.aio.insecure_channel(node.address) as channel:
            try:
                stats = await node_admin_pb2_grpc.NodeAdminStub(channel).Stats(
                    node_admin_pb2.StatsRequest(summary_only=True), timeout=5
                )
            except grpc.aio.AioRpcError as error:
                unreachable += 1
                print(f"{node.node_id:>4}  {node.address:<21} unreachable ({error.code().name})")
                continue
        print(
            f"{node.node_id:>4}  {node.address:<21} {stats.replicas:>8} {stats.leaders:>7} "
            f"{stats.awake_replicas:>5} {stats.cpu_seconds:>8.1f} {stats.rss_bytes / 1e6:>7.1f}"
        )
    return 1 if unreachable else 0


async def _topic_list(args: argparse.Namespace) -> int:
    metadata = await _metadata(_bootstrap(args))
    for topic in sorted(metadata.topics, key=lambda t: t.name):
        print(f"{topic.name}\t{len(topic.partitions)} partitions")
    return 0


async def _topic_describe(args: argparse.Namespace) -> int:
    metadata = await _metadata(_bootstrap(args), [args.name])
    if not metadata.topics:
        raise CliError(f"UNKNOWN_TOPIC: no topic named {args.name!r}; `raftlog topic list` shows what exists")
    addresses = {n.node_id: n.address for n in metadata.nodes}
    topic = metadata.topics[0]
    print(f"topic {topic.name} (revision {topic.revision}), {len(topic.partitions)} partitions")
    for p in topic.partitions:
        leader = f"{p.leader} ({addresses.get(p.leader, '?')})" if p.leader else "unknown"
        print(f"  partition {p.partition}: leader {leader}, replicas {list(p.replicas)}")
    return 0


def _serve(args: argparse.Namespace) -> int:
    from cluster import serve

    return serve.main(
        ["--config", args.config, "--node-id", str(args.node_id), *(["--uvloop"] if args.uvloop else [])]
    )


def _cluster_up(args: argparse.Namespace) -> int:
    from cluster import run_local

    return run_local.main(["--data", args.data])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raftlog", description="raftlog command line")
    parser.add_argument(
        "--bootstrap", help="host:port of any node (default: $RAFTLOG_BOOTSTRAP or 127.0.0.1:7001)"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run one node from a static cluster file")
    serve.add_argument("--config", required=True)
    serve.add_argument("--node-id", type=int, required=True)
    serve.add_argument("--uvloop", action="store_true")
    serve.set_defaults(sync=_serve)

    cluster = commands.add_parser("cluster", help="local clusters").add_subparsers(
        dest="action", required=True
    )
    up = cluster.add_parser("up", help="start a local 3-node cluster (what make run does)")
    up.add_argument("--data", default="data")
    up.set_defaults(sync=_cluster_up)

    commands.add_parser("status", help="every node's replicas, leaders and resources").set_defaults(
        run=_status
    )

    topic = commands.add_parser("topic", help="topics").add_subparsers(dest="action", required=True)
    topic.add_parser("list", help="list topics").set_defaults(run=_topic_list)
    describe = topic.add_parser("describe", help="a topic's partitions, leaders and replicas")
    describe.add_argument("name")
    describe.set_defaults(run=_topic_describe)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if hasattr(args, "sync"):
            return int(args.sync(args))
        return int(asyncio.run(args.run(args)))
    except CliError as error:
        print(f"raftlog: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
