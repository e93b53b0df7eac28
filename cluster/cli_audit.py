"""``raftlog audit``: read the audit trail (``__system/__audit``, cluster/audit/).

``raftlog audit [--since DURATION] [--follow] [--json]`` prints one line per
admin action: when, the outcome (``ok``, ``REFUSED`` with status and
reason, ``unknown``; how many calls the event stands for when more than
one), the method, the key and its tenant, the tenant acted
in, the client's address and the node that took the call, and the
request's names and settings. ``--json`` prints each event's stored JSON
instead (events.py documents the fields), one per line. ``--since 1h``
starts at the first event of the last hour (``30s``, ``15m``, ``12h``,
``7d``: cluster/cli_duration.py); without it the whole trail is read.
Without ``--follow`` the command reads the trail as it was when it
started: it takes each partition's end offset first (``ListOffsets``),
reads up to it however slowly the fetches come, prints nothing written
after, and ends; it gives up with an error (never a silently short
listing) when no record arrives for ``STALL_S``. With ``--follow`` it goes
on printing new events until interrupted.

Only an operator key reads it: the audit lives in the system tenant, which
only an operator key may name (``raftlog-tenant: __system``,
cluster/frontend/auth.py); a tenant key gets ``UNKNOWN_TENANT``, reported
here as "needs an operator key". The same event may be stored twice (a
retried append); it is printed once (by its id).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections import deque
from typing import Any

from client import Consumer, UnknownTenantError
from cluster.audit.events import AUDIT_TOPIC, AuditEvent, BadAuditEvent, decode
from cluster.cli_duration import duration_seconds
from cluster.groups.group_logs import SYSTEM_TENANT

__all__ = ["add_command", "render"]

POLL_S = 1.0
STALL_S = 30.0
"""Without ``--follow``: how long the end may stay out of reach without a
record arriving (a leader election takes a few seconds) before giving up."""
REMEMBERED_IDS = 100_000


def render(event: AuditEvent) -> str:
    """One readable line for ``event``."""
    when = datetime.datetime.fromtimestamp(event.time_ms / 1000, datetime.UTC)
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{event.time_ms % 1000:03d}Z"
    if event.outcome == "ok":
        outcome = "ok"
    elif event.outcome == "refused":
        outcome = f"REFUSED {event.code} {event.reason}"
    else:
        outcome = f"{event.outcome} {event.code}"
    if event.count > 1:
        outcome += f" ({event.count} calls)"  # refusals at the door, coalesced (events.py)
    key_owner = "operator" if event.key_tenant is None else f"tenant {event.key_tenant}"
    target = json.dumps(event.target, sort_keys=True, separators=(",", ":"))
    line = (
        f"{stamp} {outcome} {event.method} tenant={event.tenant} key={event.key_id} ({key_owner}) "
        f"from={event.peer} node={event.node} {target}"
    )
    if event.message:
        line += f" — {event.message}"
    return line


async def _audit(args: argparse.Namespace) -> int:
    # Imported here: cluster/cli.py imports this module to register the command.
    from cluster.cli import CliError, _bootstrap, _identity

    identity = _identity(args)
    identity["tenant"] = SYSTEM_TENANT  # where the audit lives, whatever --tenant says
    seen: set[str] = set()
    order: deque[str] = deque()
    out = sys.stdout
    try:
        async with Consumer(_bootstrap(args), **identity) as consumer:
            count = await consumer.metadata.partition_count(AUDIT_TOPIC)
            partitions = [(AUDIT_TOPIC, p) for p in range(count)]
            consumer.assign(partitions)
            ends: dict[tuple[str, int], int] | None = None
            if not args.follow:
                # The trail as it is now: its ends first (ListOffsets), then read up to them.
                await consumer.seek_to_end()
                ends = {tp: consumer.position(tp) or 0 for tp in partitions}
            if args.since is not None:
                await consumer.seek_to_timestamp(int(time.time() * 1000) - args.since * 1000)
            else:
                await consumer.seek_to_beginning()
            last_record = time.monotonic()
            while ends is None or not _read_to(consumer, ends):
                records = await consumer.poll(POLL_S)
                if records:
                    last_record = time.monotonic()
                elif ends is not None and time.monotonic() - last_record > STALL_S:
                    raise CliError(
                        f"the audit trail stopped arriving ({_progress(consumer, ends)}) for "
                        f"{STALL_S:.0f}s: the listing is incomplete; retry"
                    )
                for record in records:
                    if ends is None or record.offset < ends[(record.topic, record.partition)]:
                        _print(record.value or b"", args.json, seen, order, out)
                out.flush()
            return 0
    except UnknownTenantError:
        raise CliError(
            "reading the audit trail needs an operator key (it lives in the system tenant); "
            "set RAFTLOG_API_KEY to one"
        ) from None


def _read_to(consumer: Consumer, ends: dict[tuple[str, int], int]) -> bool:
    return all((consumer.position(tp) or 0) >= end for tp, end in ends.items())


def _progress(consumer: Consumer, ends: dict[tuple[str, int], int]) -> str:
    return ", ".join(
        f"partition {p}: offset {consumer.position((t, p))} of {end}" for (t, p), end in ends.items()
    )


def _print(value: bytes, as_json: bool, seen: set[str], order: deque[str], out: Any) -> None:
    try:
        event = decode(value)
    except BadAuditEvent as error:
        print(f"raftlog: skipping an audit record this CLI cannot read: {error}", file=sys.stderr)
        return
    if event.id in seen:
        return  # a retried append stored it twice
    seen.add(event.id)
    order.append(event.id)
    if len(order) > REMEMBERED_IDS:
        seen.discard(order.popleft())
    out.write((value.decode() if as_json else render(event)) + "\n")


def add_command(commands: Any) -> None:
    """Register ``raftlog audit`` on the CLI's subcommands."""
    audit = commands.add_parser("audit", help="the audit trail of admin actions (operator key)")
    audit.add_argument("--since", type=duration_seconds, metavar="DURATION", help="e.g. 1h (default: all)")
    audit.add_argument("--follow", action="store_true", help="keep printing new events until interrupted")
    audit.add_argument("--json", action="store_true", help="print each event's stored JSON")
    audit.set_defaults(run=_audit)
