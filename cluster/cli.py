"""``raftlog``: the command line.

Connection settings come from the environment and flags override them:
``RAFTLOG_BOOTSTRAP`` (``host:port[,host:port...]``, any node),
``RAFTLOG_API_KEY`` and, for operator keys, ``RAFTLOG_TENANT`` (the tenant
to act in; ``default`` when unset). ``. data/cluster.env`` after ``make
run`` sets the first two.

API keys stay off the command line (``ps`` shows it): ``RAFTLOG_API_KEY``
or ``--api-key-file PATH``; ``--api-key KEY`` warns (cluster/cli_api_key.py).
Commands:

- ``raftlog serve --config FILE (--node-id N | --node-id-from-pod-name)
  [--listen HOST:PORT] [--zone Z] [--log-format text|json]``: run one node
  (cluster/serve.py);
- ``raftlog health --address HOST:PORT``: exit 0 iff the node's gRPC
  health says SERVING (cluster/cli_health.py);
- ``raftlog node hand-off --config FILE (--node-id N | --node-id-from-pod-name)``:
  move a node's leaderships away before it stops (cluster/cli_node_ops.py);
- ``raftlog zone-from-node --out PATH``: write the pod's Kubernetes node's
  ``topology.kubernetes.io/zone`` label to PATH (the chart's init
  container; cluster/cli_zone.py);
- ``raftlog cluster up [--data DIR]``: a local 3-node cluster (``make run``);
- ``raftlog status``: the controller, and every node's replicas and
  liveness, leaders, awake replicas, CPU (seconds, and % of one core since
  start), memory, elections started because a leader went silent, and
  peer messages its Raft replicas dropped (only when there were some):
  all from the public AdminService with an operator key
  (``GetNodeStats``: the node asked gathers the others' figures itself,
  so no cluster secret is needed). Exit status 1 when a node is not live
  or did not answer;
- ``raftlog tenant create|list|delete|describe``, ``tenant quota set``
  and ``raftlog key create|list|revoke|rotate``: tenants, their quotas
  and usage, API keys and their scopes (cluster/cli_tenants.py);
- ``raftlog topic create NAME --partitions N --replication R
  [--cleanup-policy delete|compact|compact,delete] [--min-compaction-lag-ms
  MS] [--delete-retention-ms MS] [--max-compaction-lag-ms MS]
  [--retention-ms MS] [--retention-bytes B]``, ``topic alter NAME`` (the
  same settings; ``--reset SETTING`` returns one to its default), ``topic
  list``, ``topic describe NAME`` (settings; per partition, for a
  compacted topic, the offset its leader's copy is cleaned up to and the
  bytes compaction removed), ``topic delete NAME``;
- ``raftlog topic compact NAME [--wait]``: every partition's leader runs a
  compaction pass now; with ``--wait`` the command returns once each
  partition leader's own copy is cleaned up to the offset its pass aimed
  at (followers apply the same pass from the log, on their own time), and
  exits 1 listing the partitions that were not there within the request
  timeout;
- ``raftlog node list``, ``node decommission ID``;
- ``raftlog group list``, ``group describe NAME``;
- ``raftlog produce TOPIC [--key-separator SEP] [--null-value VALUE]
  [--partition N]``: one record per stdin line, acknowledged by the
  cluster (acks=all, idempotent) before the command exits 0; with
  ``--null-value``, a line whose value (after the key) is exactly VALUE
  is a tombstone: a record with a null value, which deletes its key from a
  compacted topic;
- ``raftlog consume TOPIC [--group G] [--from-beginning] [--max-records N]
  [--timeout S] [--partition N] [--stream]``: record values, one per line;
  stops after N records or after S seconds without a new one. ``--stream``
  reads each partition through one server stream instead of long polls.
  With ``--group`` it joins the group, reads the partitions the group gives
  it from the group's committed offsets, and commits what it printed.
  ``--print-key`` prints ``key<SEP>value`` (SEP from ``--key-separator``,
  default a tab; a record without a key prints an empty key); a
  tombstone's value prints as ``--null-value VALUE`` when given, else as
  nothing (``key<SEP>`` and the end of the line);
- ``raftlog flags ...``: feature flags on a flag server (``RAFTLOG_FLAGS``,
  default 127.0.0.1:8013) and ``flags serve`` to run one: flags/cli.py;
- ``raftlog experiment create|start|stop|list|results ...``: A/B
  experiments on flags, on the same flag server: flags/experiments/cli.py.

Exit status: 0 on success, 1 when the cluster answered with an error or
could not be reached, 2 for a usage error (an unusable ``--api-key-file``
included). Errors go to stderr as one line with the reason and what to do.
The tables and lines describing the cluster are laid out by cluster/cli_format.py.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from typing import TypedDict

from client import AuthorizationError, Consumer, Producer, RaftlogError
from client.admin import Admin
from client.metadata import parse_bootstrap
from cluster import cli_audit, cli_health, cli_node_ops, cli_tenants, cli_zone
from cluster import serve as serve_flags
from cluster.cli_api_key import API_KEY_ON_COMMAND_LINE_WARNING, UsageError, resolve_api_key
from cluster.cli_format import (
    NODE_LIST_HEADER,
    STATUS_HEADER,
    group_state,
    node_list_row,
    node_row,
    partition_line,
    status_summary,
    topic_settings,
)
from cluster.tls import cli as tls_cli
from flags import cli as flags_cli
from flags.experiments import cli as experiment_cli
from raftlog.v1 import groups_pb2

__all__ = ["API_KEY_ON_COMMAND_LINE_WARNING", "CliError", "UsageError", "build_parser", "main"]

DEFAULT_BOOTSTRAP = "127.0.0.1:7001"


class CliError(Exception):
    """A failure to report in one line (exit status 1)."""


def _bootstrap(args: argparse.Namespace) -> list[str]:
    try:
        return parse_bootstrap(args.bootstrap or os.environ.get("RAFTLOG_BOOTSTRAP") or DEFAULT_BOOTSTRAP)
    except ValueError as error:
        raise CliError(f"{error}; set RAFTLOG_BOOTSTRAP or --bootstrap") from None


class Identity(TypedDict):
    api_key: str | None
    tenant: str | None
    tls_ca: str | None


def _identity(args: argparse.Namespace) -> Identity:
    """``api_key`` (resolved once by ``main``) and ``tenant`` for the SDK:
    flags, else the environment."""
    return {
        "api_key": args.resolved_api_key,
        "tenant": args.tenant or os.environ.get("RAFTLOG_TENANT") or None,
        "tls_ca": args.tls_ca,  # None: the SDK reads $RAFTLOG_TLS_CA (client/auth.py)
    }


def _admin(args: argparse.Namespace) -> Admin:
    return Admin(_bootstrap(args), timeout_s=10, **_identity(args))


async def _status(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        status = await admin.cluster_status()
        nodes = await admin.list_nodes()
        stats = {s.node_id: s for s in await admin.get_node_stats()}
    print(status_summary(status))
    print(STATUS_HEADER)
    failed = 0
    for node in nodes:
        found = stats.get(node.node_id)
        failed += not node.alive or found is None or not found.reachable
        print(node_row(node, found))
    return 1 if failed else 0


async def _topic_create(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        topic = await admin.create_topic(
            args.name,
            args.partitions,
            args.replication,
            retention_ms=args.retention_ms,
            retention_bytes=args.retention_bytes,
            cleanup_policy=args.cleanup_policy,
            min_compaction_lag_ms=args.min_compaction_lag_ms,
            delete_retention_ms=args.delete_retention_ms,
            max_compaction_lag_ms=args.max_compaction_lag_ms,
        )
    print(
        f"created topic {topic.name}: {topic.partitions} partitions, replication {topic.replication_factor}, "
        f"cleanup.policy {topic.cleanup_policy}",
        file=sys.stderr,
    )
    return 0


async def _topic_alter(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        topic = await admin.alter_topic_config(
            args.name,
            retention_ms=args.retention_ms,
            retention_bytes=args.retention_bytes,
            cleanup_policy=args.cleanup_policy,
            min_compaction_lag_ms=args.min_compaction_lag_ms,
            delete_retention_ms=args.delete_retention_ms,
            max_compaction_lag_ms=args.max_compaction_lag_ms,
            reset=args.reset or (),
        )
    print(f"altered topic {topic.name}: {topic_settings(topic)}", file=sys.stderr)
    return 0


async def _topic_compact(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        partitions = await admin.compact_topic(args.name, wait=args.wait)
    for p in partitions:
        cleaned = "not reported yet" if p.cleaned_offset < 0 else str(p.cleaned_offset)
        state = ("done" if p.done else "NOT DONE") if args.wait else "started"
        print(
            f"partition {p.partition}: leader {p.leader}, target offset {p.target_offset}, "
            f"cleaned up to {cleaned}: {state}"
        )
    late = [p.partition for p in partitions if not p.done]
    if args.wait and late:
        print(
            f"raftlog: partition(s) {', '.join(map(str, late))} of {args.name} not cleaned up to their "
            "target in time; the passes run on: describe the topic to follow them",
            file=sys.stderr,
        )
        return 1
    return 0


async def _topic_delete(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        await admin.delete_topic(args.name)
    print(f"deleted topic {args.name}", file=sys.stderr)
    return 0


async def _topic_list(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        for topic in await admin.list_topics():
            print(f"{topic.name}\t{topic.partitions} partitions\treplication {topic.replication_factor}")
    return 0


async def _topic_describe(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        topic = await admin.describe_topic(args.name)
        try:
            nodes = {n.node_id: n.address for n in await admin.list_nodes()}
        except AuthorizationError:  # a tenant key: leaders by node id only
            nodes = {}
    print(
        f"topic {topic.name} (revision {topic.revision}), {topic.partitions} partitions, "
        f"replication {topic.replication_factor}, {topic_settings(topic)}"
    )
    for p in topic.assignments:
        print(partition_line(p, nodes))
    return 0


async def _group_list(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        for group in await admin.list_groups():
            print(f"{group.group}\t{group_state(group.state)}\t{group.member_count} members")
    return 0


async def _group_describe(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        group = await admin.describe_group(args.name)
        committed = await _committed(args, group)
    print(
        f"group {group.group}: {group_state(group.state)}, epoch {group.group_epoch}, "
        f"{len(group.members)} members"
    )
    for member in group.members:
        owned = ", ".join(f"{tp.topic}/{p}" for tp in member.assignment for p in tp.partitions) or "-"
        print(f"  member {member.member_id} ({member.client_id}): {owned}")
    for (topic, partition), offset in sorted(committed.items()):
        print(f"  committed {topic}/{partition}: {offset}")
    return 0


async def _committed(
    args: argparse.Namespace, group: groups_pb2.DescribeGroupResponse
) -> dict[tuple[str, int], int]:
    topics = sorted({t for m in group.members for t in m.topics})
    if not topics:
        return {}
    async with Consumer(_bootstrap(args), group_id=group.group, **_identity(args)) as consumer:
        partitions = [
            (topic, p) for topic in topics for p in range(await consumer.metadata.partition_count(topic))
        ]
        found = await consumer.committed(partitions)
    return {(tp[0], tp[1]): offset for tp, offset in found.items() if offset is not None}


async def _node_list(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        nodes = await admin.list_nodes()
    print(NODE_LIST_HEADER)
    for n in nodes:
        print(node_list_row(n))
    return 0


async def _node_decommission(args: argparse.Namespace) -> int:
    async with _admin(args) as admin:
        await admin.decommission_node(args.node_id)
    print(f"node {args.node_id} is decommissioning: its replicas will move to other nodes", file=sys.stderr)
    return 0


async def _produce(args: argparse.Namespace) -> int:
    separator = args.key_separator.encode() if args.key_separator else None
    null_value = args.null_value.encode() if args.null_value is not None else None
    if null_value is not None and separator is None:
        raise CliError("--null-value needs --key-separator: a tombstone deletes a key, so it needs one")
    count = 0
    async with Producer(_bootstrap(args), **_identity(args)) as producer:
        futures = []
        for line in sys.stdin.buffer:
            value = line.rstrip(b"\r\n")
            key = None
            if separator is not None and separator in value:
                key, value = value.split(separator, 1)
            sent: bytes | None = None if value == null_value else value
            futures.append(await producer.send(args.topic, sent, key=key, partition=args.partition))
            count += 1
        await producer.flush()
        for future in futures:
            await future  # raises the first record's failure, if any
    print(f"produced {count} records to {args.topic}", file=sys.stderr)
    return 0


async def _consume(args: argparse.Namespace) -> int:
    if args.group and args.partition is not None:
        raise CliError("--partition and --group do not mix: a group assigns partitions itself")
    reset = "earliest" if args.from_beginning else "latest"
    print_key = args.print_key
    separator = (args.key_separator or "\t").encode()
    null_value = args.null_value.encode() if args.null_value is not None else b""
    async with Consumer(
        _bootstrap(args),
        group_id=args.group,
        auto_offset_reset=reset,
        fetch_mode="stream" if args.stream else "poll",
        **_identity(args),
    ) as consumer:
        if args.group:
            # Partitions the group has committed resume there; others start
            # at the beginning or the end (auto commit; close commits).
            consumer.subscribe([args.topic])
        else:
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
                value = record.value
                if value is None:
                    value = null_value
                if print_key:
                    out.write((record.key or b"") + separator)
                out.write((value or b"") + b"\n")
            out.flush()
            seen += len(records)
            if records and args.timeout:
                quiet_until = loop.time() + args.timeout
    return 0


def _serve(args: argparse.Namespace) -> int:
    from cluster import serve

    return serve.main(
        [
            "--config",
            args.config,
            *(["--node-id", str(args.node_id)] if args.node_id is not None else []),
            *(["--node-id-from-pod-name"] if args.node_id_from_pod_name else []),
            *(["--listen", args.listen] if args.listen else []),
            *(["--zone", args.zone] if args.zone is not None else []),
            *(["--log-format", args.log_format] if args.log_format else []),
            *(["--uvloop"] if args.uvloop else []),
            *(["--bootstrap-key-file", args.bootstrap_key_file] if args.bootstrap_key_file else []),
        ]
    )


def _cluster_up(args: argparse.Namespace) -> int:
    from cluster import run_local

    return run_local.main(["--data", args.data])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="raftlog", description="raftlog command line")
    parser.add_argument(
        "--bootstrap", help="host:port of any node (default: $RAFTLOG_BOOTSTRAP or 127.0.0.1:7001)"
    )
    key = parser.add_mutually_exclusive_group()
    key.add_argument(
        "--api-key-file",
        metavar="PATH",
        help="read the API key from this file, which only you may read (default: $RAFTLOG_API_KEY)",
    )
    key.add_argument(
        "--api-key",
        metavar="KEY",
        help="API key; visible to other users in ps: prefer $RAFTLOG_API_KEY or --api-key-file",
    )
    parser.add_argument(
        "--tenant", help="with an operator key: the tenant to act in (default: $RAFTLOG_TENANT or 'default')"
    )
    parser.add_argument(
        "--tls-ca", metavar="PATH", help="connect with TLS, trusting this CA file (default: $RAFTLOG_TLS_CA)"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    tls_cli.add_commands(commands)  # raftlog certs init

    serve = commands.add_parser("serve", help="run one node from a static cluster file")
    serve.add_argument("--config", required=True)
    serve_flags.add_node_flags(serve)  # --node-id | --node-id-from-pod-name, --listen, --zone, --log-format
    serve.add_argument("--uvloop", action="store_true")
    serve.add_argument("--bootstrap-key-file", help="the operator key a new cluster bootstraps with")
    serve.set_defaults(sync=_serve)

    cluster = commands.add_parser("cluster", help="local clusters").add_subparsers(
        dest="action", required=True
    )
    up = cluster.add_parser("up", help="start a local 3-node cluster (what make run does)")
    up.add_argument("--data", default="data")
    up.set_defaults(sync=_cluster_up)

    commands.add_parser(
        "status", help="every node's replicas, liveness, leaders, CPU and memory (operator key)"
    ).set_defaults(run=_status)

    cli_tenants.add_commands(commands, _admin)

    topic = commands.add_parser("topic", help="topics").add_subparsers(dest="action", required=True)
    create = topic.add_parser("create", help="create a topic")
    create.add_argument("name")
    create.add_argument("--partitions", type=int, default=1)
    create.add_argument("--replication", type=int, default=0, help="replicas per partition (default: 3)")
    create.add_argument("--retention-ms", type=int, help="drop data older than this (default: keep)")
    create.add_argument("--retention-bytes", type=int, help="per partition size limit (default: none)")
    _add_compaction_arguments(create)
    create.set_defaults(run=_topic_create)
    alter = topic.add_parser("alter", help="change a topic's settings (the others stay)")
    alter.add_argument("name")
    alter.add_argument("--retention-ms", type=int, help="drop data older than this")
    alter.add_argument("--retention-bytes", type=int, help="per partition size limit")
    _add_compaction_arguments(alter)
    alter.add_argument(
        "--reset",
        action="append",
        metavar="SETTING",
        help="return a setting to its default, e.g. retention_ms (keep forever); repeatable",
    )
    alter.set_defaults(run=_topic_alter)
    compact = topic.add_parser("compact", help="run a compaction pass on every partition now")
    compact.add_argument("name")
    compact.add_argument(
        "--wait",
        action="store_true",
        help="return once every partition leader's copy is cleaned up to its pass's target",
    )
    compact.set_defaults(run=_topic_compact)
    delete = topic.add_parser("delete", help="delete a topic and its data")
    delete.add_argument("name")
    delete.set_defaults(run=_topic_delete)
    topic.add_parser("list", help="list topics").set_defaults(run=_topic_list)
    describe = topic.add_parser("describe", help="a topic's partitions, leaders and replicas")
    describe.add_argument("name")
    describe.set_defaults(run=_topic_describe)

    produce = commands.add_parser("produce", help="one record per stdin line")
    produce.add_argument("topic")
    produce.add_argument("--key-separator", help="split each line into key and value at the first SEP")
    produce.add_argument(
        "--null-value",
        metavar="VALUE",
        help="a line whose value is exactly VALUE is a tombstone (null value: deletes the key)",
    )
    produce.add_argument("--partition", type=int, help="write every record to this partition")
    produce.set_defaults(run=_produce)

    group = commands.add_parser("group", help="consumer groups").add_subparsers(dest="action", required=True)
    group.add_parser("list", help="list the tenant's consumer groups").set_defaults(run=_group_list)
    group_describe = group.add_parser("describe", help="a group's members, assignments and commits")
    group_describe.add_argument("name")
    group_describe.set_defaults(run=_group_describe)

    node = commands.add_parser("node", help="nodes (operator key)").add_subparsers(
        dest="action", required=True
    )
    node.add_parser("list", help="list nodes").set_defaults(run=_node_list)
    decommission = node.add_parser("decommission", help="move every replica off a node")
    decommission.add_argument("node_id", type=int)
    decommission.set_defaults(run=_node_decommission)
    cli_node_ops.add_commands(node)  # node hand-off (a pod's preStop)
    cli_health.add_command(commands)  # health (a container's HEALTHCHECK)
    cli_zone.add_command(commands)  # zone-from-node (the chart's init container)

    consume = commands.add_parser("consume", help="print record values, one per line")
    consume.add_argument("topic")
    consume.add_argument("--group", help="consume as a member of this group (commits its progress)")
    consume.add_argument("--from-beginning", action="store_true", help="start at the log start, not the end")
    consume.add_argument("--max-records", type=int, help="stop after N records")
    consume.add_argument("--timeout", type=float, help="stop after S seconds without a new record")
    consume.add_argument("--partition", type=int, help="read only this partition")
    consume.add_argument("--print-key", action="store_true", help="print key<SEP>value")
    consume.add_argument("--key-separator", help="SEP for --print-key (default: a tab)")
    consume.add_argument(
        "--null-value", metavar="VALUE", help="print a tombstone's (null) value as VALUE (default: empty)"
    )
    consume.add_argument(
        "--stream", action="store_true", help="one server stream per partition instead of long polls"
    )
    consume.set_defaults(run=_consume)

    flags_cli.add_commands(
        commands.add_parser("flags", help="feature flags: the flag server and its admin API")
    )
    experiment_cli.add_commands(
        commands.add_parser("experiment", help="A/B experiments on flags (on the flag server)")
    )
    cli_audit.add_command(commands)
    return parser


def _add_compaction_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--cleanup-policy",
        help="delete (default: retention only), compact (latest record per key) or compact,delete",
    )
    parser.add_argument(
        "--min-compaction-lag-ms", type=int, metavar="MS", help="never compact records younger (default 0)"
    )
    parser.add_argument(
        "--delete-retention-ms", type=int, metavar="MS", help="how long tombstones survive (default 24 h)"
    )
    parser.add_argument(
        "--max-compaction-lag-ms",
        type=int,
        metavar="MS",
        help="compact records older than this (default: none)",
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.resolved_api_key = resolve_api_key(args)
    except UsageError as error:
        print(f"raftlog: {error}", file=sys.stderr)
        return 2
    try:
        if hasattr(args, "sync"):
            return int(args.sync(args))
        return int(asyncio.run(args.run(args)))
    except CliError as error:
        print(f"raftlog: {error}", file=sys.stderr)
        return 1
    except RaftlogError as error:
        hint = (
            "; is the cluster running? Check RAFTLOG_BOOTSTRAP or --bootstrap"
            " (and, for a TLS cluster, --tls-ca or RAFTLOG_TLS_CA)"
            if error.retriable
            else ""
        )
        print(f"raftlog: {error.reason}: {error.message}{hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
