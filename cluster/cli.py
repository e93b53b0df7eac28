"""``raftlog``: the command line.

Connection settings come from the environment and flags override them:
``RAFTLOG_BOOTSTRAP`` (``host:port[,host:port...]``, any node) and
``RAFTLOG_API_KEY``. Commands so far:

- ``raftlog serve --config FILE --node-id N``: run one node (static cluster);
- ``raftlog cluster up [--data DIR]``: a local 3-node cluster (``make run``);
- ``raftlog status``: every node's replicas, leaders, CPU and memory;
- ``raftlog topic list`` / ``raftlog topic describe NAME``;
- ``raftlog produce TOPIC [--key-separator SEP] [--partition N]``: one
  record per stdin line, acknowledged by the cluster (acks=all, idempotent)
  before the command exits 0;
- ``raftlog consume TOPIC [--from-beginning] [--max-records N] [--timeout S]
  [--partition N]``: record values, one per line; stops after N records or
  after S seconds without a new one.

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

from client import Consumer, Producer, RaftlogError
from client.metadata import parse_bootstrap
from cluster.grpc_errors import error_info
from raftlog.internal.v1 import node_admin_pb2, node_admin_pb2_grpc
from raftlog.v1 import metadata_pb2, metadata_pb2_grpc

DEFAULT_BOOTSTRAP = "127.0.0.1:7001"


class CliError(Exception):
    """A failure to report in one line (exit status 1)."""


def _bootstrap(args: argparse.Namespace) -> list[str]:
    try:
        return parse_bootstrap(args.bootstrap or os.environ.get("RAFTLOG_BOOTSTRAP") or DEFAULT_BOOTSTRAP)
    except ValueError as error:
        raise CliError(f"{error}; set RAFTLOG_BOOTSTRAP or --bootstrap") from None


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


async def _produce(args: argparse.Namespace) -> int:
    separator = args.key_separator.encode() if args.key_separator else None
    count = 0
    async with Producer(_bootstrap(args)) as producer:
        futures = []
        for line in sys.stdin.buffer:
            value = line.rstrip(b"\r\n")
            key = None
            if separator is not None and separator in value:
                key, value = value.split(separator, 1)
            futures.append(await producer.send(args.topic, value, key=key, partition=args.partition))
            count += 1
        await producer.flush()
        for future in futures:
            await future  # raises the first record's failure, if any
    print(f"produced {count} records to {args.topic}", file=sys.stderr)
    return 0


async def _consume(args: argparse.Namespace) -> int:
    if args.group:
        raise CliError("consumer groups arrive with the group coordinator; consume without --group for now")
    async with Consumer(_bootstrap(args)) as consumer:
        count = await consumer.metadata.partition_count(args.topic)
        partitions = [args.partition] if args.partition is not None else list(range(count))
        consumer.assign([(args.topic, p) for p in partitions])
        if args.from_beginning:
            await consumer.seek_to_beginning()
        else:
            await consumer.seek_to_end()
        loop = asyncio.get_running_loop()
        seen = 0
        quiet_until = loop.time() + args.timeout if args.timeout else None
        out = sys.stdout.buffer
        while args.max_records is None or seen < args.max_records:
            wait = 1.0 if quiet_until is None else max(0.0, quiet_until - loop.time())
            if quiet_until is not None and wait == 0.0:
                break
            left = None if args.max_records is None else args.max_records - seen
            records = await consumer.poll(min(wait, 1.0), max_records=left)
            for record in records:
                out.write((record.value or b"") + b"\n")
            out.flush()
            seen += len(records)
            if records and args.timeout:
                quiet_until = loop.time() + args.timeout
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

    produce = commands.add_parser("produce", help="one record per stdin line")
    produce.add_argument("topic")
    produce.add_argument("--key-separator", help="split each line into key and value at the first SEP")
    produce.add_argument("--partition", type=int, help="write every record to this partition")
    produce.set_defaults(run=_produce)

    consume = commands.add_parser("consume", help="print record values, one per line")
    consume.add_argument("topic")
    consume.add_argument("--group", help="consumer group (not yet)")
    consume.add_argument("--from-beginning", action="store_true", help="start at the log start, not the end")
    consume.add_argument("--max-records", type=int, help="stop after N records")
    consume.add_argument("--timeout", type=float, help="stop after S seconds without a new record")
    consume.add_argument("--partition", type=int, help="read only this partition")
    consume.set_defaults(run=_consume)
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
    except RaftlogError as error:
        print(f"raftlog: {error.reason}: {error.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
