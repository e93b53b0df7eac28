"""``raftlog tenant ...`` and ``raftlog key ...``: tenants, their quotas and
usage, and API keys with their scopes (the ``raftlog`` CLI, cluster/cli.py,
registers these with ``add_commands``).

- ``raftlog tenant create NAME`` (prints the tenant's first API key),
  ``tenant list``, ``tenant delete NAME``;
- ``raftlog tenant quota set NAME [--produce-mb-s X] [--fetch-mb-s X]
  [--requests-s N] [--storage-gb X] [--partitions N] [--topics N]
  [--groups N] [--streams N]`` (operator key): the limits given change,
  the word ``default`` returns one to the cluster default (the
  ``[quotas]`` section of the cluster file), the others stay; ``0``
  allows nothing. Rates are cluster-wide; 1 MB = 10^6 bytes, 1 GB = 10^9;
- ``raftlog tenant describe NAME [--json]``: the tenant's quotas (the
  limit in force and whether it is the tenant's own or the default) and
  what it uses now;
- ``raftlog key create [--tenant T] [--role admin|client|operator]
  [--produce PREFIX]... [--consume PREFIX]... [--group PREFIX]...
  [--ttl 30d]``: prints the new key (once) on stdout; ``key list
  [--tenant T | --operator] [--json]``, ``key revoke ID``, ``key rotate ID
  [--grace 1h] [--ttl 30d]`` (prints the new key, same tenant and scope;
  the old one keeps working for the grace period). A tenant admin key manages its own tenant's keys.

Invariants:

- A value the CLI cannot send as the user meant it is a usage error (exit
  2) before anything is sent: a negative or non-numeric limit (a
  negative byte count would otherwise be read as the server's "reset"),
  a limit that does not fit 64 bits, a duration it cannot read,
  ``quota set`` with no limit at all.
- Nothing is invented: a usage figure the cluster does not measure is
  shown as ``-`` (JSON ``null``), never as 0.
- Clear keys go to stdout alone (so ``KEY=$(raftlog key create ...)``
  works); everything said about them goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import Any

from client.admin import Admin
from cluster.cli_duration import duration_seconds
from raftlog.v1 import admin_pb2

AdminFactory = Callable[[argparse.Namespace], Admin]

RESET = "default"
"""The word that returns a quota to the cluster default."""
MAX_I64 = 2**63 - 1
MB = 1_000_000
GB = 1_000_000_000


class _Quota:
    """One ``quota set`` flag: its wire field and how its value reads."""

    def __init__(self, flag: str, field: str, unit: int, what: str) -> None:
        self.flag, self.field, self.unit, self.what = flag, field, unit, what

    @property
    def dest(self) -> str:
        return self.flag.removeprefix("--").replace("-", "_")


QUOTA_FLAGS = (
    _Quota("--produce-mb-s", "produce_bytes_s", MB, "produce MB per second, cluster-wide"),
    _Quota("--fetch-mb-s", "fetch_bytes_s", MB, "fetch MB per second, cluster-wide"),
    _Quota("--requests-s", "requests_s", 1, "requests per second, cluster-wide"),
    _Quota("--storage-gb", "storage_bytes", GB, "GB stored"),
    _Quota("--partitions", "partitions", 1, "partitions"),
    _Quota("--topics", "topics", 1, "topics"),
    _Quota("--groups", "groups", 1, "consumer groups"),
    _Quota("--streams", "streams", 1, "open streams per node"),
)
"""In the wire order of ``QuotaSettings`` (the describe table's order)."""


def _limit(unit: int) -> Callable[[str], int | None]:
    """An argparse type: a limit in ``unit`` bytes (or a count), as an
    integer; None for ``default``."""

    def parse(text: str) -> int | None:
        if text.strip().lower() == RESET:
            return None
        try:
            value = float(text) if unit > 1 else int(text)
        except ValueError:
            kind = "a number" if unit > 1 else "a whole number"
            raise argparse.ArgumentTypeError(f"{text!r}: expected {kind} or {RESET!r}") from None
        if not value >= 0:  # also refuses NaN
            raise argparse.ArgumentTypeError(f"{text!r}: a limit cannot be negative (0 allows nothing)")
        if value * unit >= MAX_I64:  # also refuses infinity (1e400)
            raise argparse.ArgumentTypeError(f"{text!r} is too large")
        return round(value * unit)

    return parse


# --- showing quotas and keys --------------------------------------------------------


def _amount(field: str, value: int, *, measured: bool = False) -> str:
    """A limit as set (exact), or a measured usage (three significant
    digits: 1.31 MB/s, not 1.31024)."""
    shown = _three_digits if measured else "{:g}".format
    if field in ("produce_bytes_s", "fetch_bytes_s"):
        return f"{shown(value / MB)} MB/s"
    if field == "storage_bytes":
        return f"{shown(value / GB)} GB"
    if field == "requests_s":
        return f"{value}/s"
    return str(value)


def _three_digits(number: float) -> str:
    return f"{number:,.0f}" if number >= 100 else f"{number:.3g}"


def _optional(message: Any, field: str) -> int | None:
    return int(getattr(message, field)) if message.HasField(field) else None


def _limit_cells(q: _Quota, effective: admin_pb2.QuotaSettings, overrides: admin_pb2.QuotaSettings) -> str:
    """The limit in force, and who set it (the tenant or the default)."""
    limit = _optional(effective, q.field)
    limit_text = "unlimited" if limit is None else _amount(q.field, limit)
    source = "tenant" if overrides.HasField(q.field) else "default"
    return f"{q.field:<16} {limit_text:>16} {source:>8}"


def _quota_row(q: _Quota, described: admin_pb2.DescribeTenantResponse) -> str:
    usage = _optional(described.usage, q.field)
    usage_text = "-" if usage is None else _amount(q.field, usage, measured=True)
    return f"{_limit_cells(q, described.effective, described.overrides)} {usage_text:>14}"


def describe_json(described: admin_pb2.DescribeTenantResponse) -> dict[str, Any]:
    """``tenant describe --json``: every quota field in each part, null
    where unset (effective: no limit; overrides: the default; usage: not
    measured)."""
    return {
        "tenant": described.tenant,
        **{
            part: {q.field: _optional(getattr(described, part), q.field) for q in QUOTA_FLAGS}
            for part in ("effective", "overrides", "usage")
        },
    }


def _expiry(expires_at_ms: int, now_ms: int) -> str:
    if not expires_at_ms:
        return "never"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(expires_at_ms / 1000))
    return f"{stamp} (expired)" if expires_at_ms <= now_ms else stamp


def _key_scope(key: admin_pb2.ApiKey) -> str:
    lists = (
        ("produce", key.produce_prefixes),
        ("consume", key.consume_prefixes),
        ("group", key.group_prefixes),
    )
    return " ".join(f"{name}={','.join(repr(p) for p in prefixes)}" for name, prefixes in lists if prefixes)


def key_json(key: admin_pb2.ApiKey) -> dict[str, Any]:
    return {
        "key_id": key.key_id,
        "tenant": key.tenant or None,
        "role": key.role,
        "produce_prefixes": list(key.produce_prefixes),
        "consume_prefixes": list(key.consume_prefixes),
        "group_prefixes": list(key.group_prefixes),
        "expires_at_ms": key.expires_at_ms or None,
    }


# --- commands ---------------------------------------------------------------------------


class Commands:
    """The handlers, each ``async (args) -> exit status``, on one way to
    make an ``Admin`` (cli.py's, so its connection settings apply)."""

    def __init__(self, admin: AdminFactory) -> None:
        self._admin = admin

    async def tenant_create(self, args: argparse.Namespace) -> int:
        async with self._admin(args) as admin:
            created = await admin.create_tenant(args.name)
        print(
            f"created tenant {created.tenant.name}; its API key (shown once, keep it safe):", file=sys.stderr
        )
        print(created.api_key.clear_text)
        return 0

    async def tenant_list(self, args: argparse.Namespace) -> int:
        async with self._admin(args) as admin:
            for tenant in await admin.list_tenants():
                print(tenant.name)
        return 0

    async def tenant_delete(self, args: argparse.Namespace) -> int:
        async with self._admin(args) as admin:
            await admin.delete_tenant(args.name)
        print(f"deleted tenant {args.name}", file=sys.stderr)
        return 0

    async def quota_set(self, args: argparse.Namespace) -> int:
        given = {q.field: getattr(args, q.dest) for q in QUOTA_FLAGS if getattr(args, q.dest) is not _UNSET}
        if not given:
            flags = " ".join(q.flag for q in QUOTA_FLAGS)
            print(f"raftlog: tenant quota set: give at least one of {flags}", file=sys.stderr)
            return 2
        limits = {field: value for field, value in given.items() if value is not None}
        reset = [field for field, value in given.items() if value is None]
        async with self._admin(args) as admin:
            answer = await admin.set_tenant_quota(args.name, reset=reset, **limits)
        print(f"tenant {args.name}: quotas set; now:", file=sys.stderr)
        print(f"{'quota':<16} {'limit':>16} {'set by':>8}")
        for q in QUOTA_FLAGS:
            print(_limit_cells(q, answer.effective, answer.overrides))
        return 0

    async def tenant_describe(self, args: argparse.Namespace) -> int:
        async with self._admin(args) as admin:
            described = await admin.describe_tenant(args.name)
        if args.json:
            print(json.dumps(describe_json(described), indent=2))
            return 0
        print(f"tenant {described.tenant}")
        print(f"{'quota':<16} {'limit':>16} {'set by':>8} {'usage':>14}")
        for q in QUOTA_FLAGS:
            print(_quota_row(q, described))
        unmeasured = [q.field for q in QUOTA_FLAGS if not described.usage.HasField(q.field)]
        if unmeasured:
            print(f"(-: not measured by this cluster: {', '.join(unmeasured)})", file=sys.stderr)
        return 0

    async def key_create(self, args: argparse.Namespace) -> int:
        operator = args.role == "operator"
        if operator and args.key_tenant:
            print("raftlog: key create: an operator key has no tenant; drop --tenant", file=sys.stderr)
            return 2
        async with self._admin(args) as admin:
            key = await admin.create_api_key(
                None if operator else (args.key_tenant or ""),
                role="" if operator else args.role,
                produce_prefixes=args.produce or (),
                consume_prefixes=args.consume or (),
                group_prefixes=args.group or (),
                ttl_seconds=args.ttl or 0,
            )
        owner = "operator key" if key.operator else f"{key.role} key of tenant {key.tenant}"
        print(
            f"created {owner} {key.key_id}, expires {_expiry(key.expires_at_ms, 0)}; "
            "the key (shown once, keep it safe):",
            file=sys.stderr,
        )
        print(key.clear_text)
        return 0

    async def key_list(self, args: argparse.Namespace) -> int:
        async with self._admin(args) as admin:
            keys = await admin.list_api_keys(None if args.operator else (args.key_tenant or ""))
        if args.json:
            print(json.dumps([key_json(k) for k in keys], indent=2))
            return 0
        now_ms = int(time.time() * 1000)
        for key in keys:
            print(
                f"{key.key_id}  {key.tenant or '(operator)':<16} {key.role:<8} "
                f"expires {_expiry(key.expires_at_ms, now_ms)}  {_key_scope(key)}".rstrip()
            )
        return 0

    async def key_revoke(self, args: argparse.Namespace) -> int:
        async with self._admin(args) as admin:
            await admin.revoke_api_key(args.key_id)
        print(f"revoked API key {args.key_id}", file=sys.stderr)
        return 0

    async def key_rotate(self, args: argparse.Namespace) -> int:
        async with self._admin(args) as admin:
            rotated = await admin.rotate_api_key(args.key_id, args.grace, ttl_seconds=args.ttl or 0)
        print(
            f"new key {rotated.api_key.key_id} (shown once, keep it safe); the old key {args.key_id} "
            f"works until {_expiry(rotated.old_expires_at_ms, 0)}",
            file=sys.stderr,
        )
        print(rotated.api_key.clear_text)
        return 0


class _Unset:
    """A quota flag not given (None is taken: it means ``default``)."""

    def __repr__(self) -> str:
        return "(not given)"


_UNSET = _Unset()


def add_commands(commands: Any, admin: AdminFactory) -> None:
    """Add ``tenant`` and ``key`` to the CLI's subcommands ``commands``."""
    run = Commands(admin)
    tenant = commands.add_parser("tenant", help="tenants, their quotas and usage").add_subparsers(
        dest="action", required=True
    )
    create = tenant.add_parser("create", help="create a tenant; prints its first API key (operator key)")
    create.add_argument("name")
    create.set_defaults(run=run.tenant_create)
    tenant.add_parser("list", help="list tenants (operator key)").set_defaults(run=run.tenant_list)
    delete = tenant.add_parser("delete", help="delete a tenant that has no topics (operator key)")
    delete.add_argument("name")
    delete.set_defaults(run=run.tenant_delete)

    quota = tenant.add_parser("quota", help="a tenant's quotas").add_subparsers(
        dest="quota_action", required=True
    )
    quota_set = quota.add_parser(
        "set", help=f"set a tenant's limits ({RESET!r}: the cluster default; operator key)"
    )
    quota_set.add_argument("name")
    for q in QUOTA_FLAGS:
        quota_set.add_argument(
            q.flag, type=_limit(q.unit), default=_UNSET, metavar="N", help=f"{q.what}, or {RESET!r}"
        )
    quota_set.set_defaults(run=run.quota_set)
    describe = tenant.add_parser("describe", help="a tenant's quotas and what it uses now")
    describe.add_argument("name")
    describe.add_argument(
        "--json", action="store_true", help="print JSON (null: no limit / default / not measured)"
    )
    describe.set_defaults(run=run.tenant_describe)

    key = commands.add_parser("key", help="API keys (operator key, or a tenant admin key for its tenant)")
    keys = key.add_subparsers(dest="action", required=True)
    key_create = keys.add_parser("create", help="make a key; prints it once")
    key_create.add_argument(
        "--tenant", dest="key_tenant", help="the key's tenant (default: the tenant the call acts in)"
    )
    key_create.add_argument(
        "--role",
        choices=("admin", "client", "operator"),
        default="admin",
        help="admin: manages its tenant; client: only the prefixes below; operator: the cluster",
    )
    for flag, what in (("--produce", "produce to"), ("--consume", "consume from"), ("--group", "use groups")):
        key_create.add_argument(
            flag,
            action="append",
            metavar="PREFIX",
            help=f"client keys: may {what} names starting with PREFIX ('' for all); repeatable",
        )
    key_create.add_argument(
        "--ttl", type=duration_seconds, help="expire after this long, e.g. 30d (default: never)"
    )
    key_create.set_defaults(run=run.key_create)
    key_list = keys.add_parser("list", help="list keys: ids, roles, prefixes, expiry")
    whose = key_list.add_mutually_exclusive_group()
    whose.add_argument("--tenant", dest="key_tenant", help="this tenant's keys (operator key)")
    whose.add_argument("--operator", action="store_true", help="the operator keys (operator key)")
    key_list.add_argument("--json", action="store_true", help="print JSON")
    key_list.set_defaults(run=run.key_list)
    revoke = keys.add_parser("revoke", help="revoke a key at once, on every node")
    revoke.add_argument("key_id")
    revoke.set_defaults(run=run.key_revoke)
    rotate = keys.add_parser("rotate", help="a new key with the same tenant and scope; the old one expires")
    rotate.add_argument("key_id")
    rotate.add_argument(
        "--grace",
        type=duration_seconds,
        default=3600,
        help="how long the old key keeps working, e.g. 1h (default), 0 to stop it now",
    )
    rotate.add_argument(
        "--ttl", type=duration_seconds, help="the new key expires after this long (default: never)"
    )
    rotate.set_defaults(run=run.key_rotate)
