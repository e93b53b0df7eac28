"""Fill a cluster with flag history for the flag server's bootstrap figure.

``load_history`` creates ``tenants`` tenants (``bench-t000`` ...), each with
its compacted flag topic (``flags.live.FLAGS_TOPIC``: one partition,
``cleanup_policy="compact"``, ``min_compaction_lag_ms`` = 90 days, as the
flag server creates it) and ``events_per_tenant`` change records in the
documented record format (``flags.changes.encode``), produced directly with
``client.Producer`` and the operator key acting in each tenant: one
``env-create`` of ``production``, then ``flags_per_tenant`` ``create``
records, then ``update`` records round-robin over the flags until the
tenant has its count. That is the log a tenant leaves after months of
edits, written in seconds instead of 100,000 admin calls.

Invariants:

- Every record is one the flag server accepts when it applies it: each
  ``create`` expects the environment's set version (1, the position of the
  ``env-create`` record: a flag that never existed has its set's version)
  and each ``update`` the flag's version at that point, the position
  (offset + 1) of the flag's previous record, since every topic is new (offsets start at 0), each tenant's
  records go through one idempotent producer in order, and nothing else
  writes the topic until the load is done. ``expected_versions`` is that
  arithmetic alone (tested without a cluster); the bench checks the result
  on the flag server afterwards (``ListEnvironments``: ``flags_per_tenant``
  flags at version ``events_per_tenant``).
- Definitions are three kinds in turn, as a real set mixes them: a static
  boolean, a targeting rule (``ends_with`` and ``>=``) and a 3-way
  ``fractional`` split; each update changes one value in the definition, so
  no two consecutive records of a flag are the same.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from client.admin import Admin
from client.producer import Producer
from flags.changes import Change, Kind, encode
from flags.live import FLAGS_TOPIC
from flags.model import validate_flag

ENV = "production"
WHO = "bench-loader"
AUDIT_WINDOW_MS = 90 * 86_400_000
TENANT_PREFIX = "bench-t"


@dataclass(frozen=True, slots=True)
class PlannedRecord:
    key: str
    kind: Kind
    flag: str | None
    expected: int
    revision: int
    """How many times the flag was written before (0: its create)."""


def tenant_name(index: int) -> str:
    return f"{TENANT_PREFIX}{index:03d}"


def flag_key(index: int) -> str:
    return f"flag-{index:04d}"


def plan(flags_per_tenant: int, events_per_tenant: int) -> Iterator[PlannedRecord]:
    """One tenant's records in offset order (module docstring, invariant 1)."""
    if events_per_tenant < 1 + flags_per_tenant:
        raise ValueError(
            f"{events_per_tenant} events cannot hold an env-create and {flags_per_tenant} creates"
        )
    yield PlannedRecord(ENV, Kind.ENV_CREATE, None, 0, 0)
    set_version = 1  # the env-create record's position
    versions: list[int] = []
    revisions: list[int] = []
    for i in range(flags_per_tenant):
        offset = 1 + i
        yield PlannedRecord(f"{ENV}/{flag_key(i)}", Kind.CREATE, flag_key(i), set_version, 0)
        versions.append(offset + 1)
        revisions.append(0)
    for offset in range(1 + flags_per_tenant, events_per_tenant):
        i = (offset - 1 - flags_per_tenant) % flags_per_tenant
        revisions[i] += 1
        yield PlannedRecord(f"{ENV}/{flag_key(i)}", Kind.UPDATE, flag_key(i), versions[i], revisions[i])
        versions[i] = offset + 1


def expected_versions(flags_per_tenant: int, events_per_tenant: int) -> dict[str, int]:
    """Each flag's version once the plan is applied (for checks)."""
    last: dict[str, int] = {}
    for offset, record in enumerate(plan(flags_per_tenant, events_per_tenant)):
        if record.flag is not None:
            last[record.flag] = offset + 1
    return last


def definition(flag_index: int, revision: int) -> dict[str, Any]:
    """A flagd flag definition; ``revision`` varies one value in it."""
    kind = flag_index % 3
    if kind == 0:
        return {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "on" if revision % 2 == 0 else "off",
            "metadata": {"owner": "team-" + str(flag_index % 7), "revision": revision},
        }
    if kind == 1:
        return {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
            "targeting": {
                "if": [
                    {
                        "and": [
                            {"ends_with": [{"var": "email"}, "@example.com"]},
                            {">=": [{"var": "age"}, 18 + revision % 50]},
                        ]
                    },
                    "on",
                    "off",
                ]
            },
        }
    return {
        "state": "ENABLED",
        "variants": {"red": "red", "green": "green", "blue": "blue"},
        "defaultVariant": "red",
        "targeting": {"fractional": [["red", 50 + revision % 10], ["green", 30], ["blue", 20]]},
    }


def record_value(record: PlannedRecord, when_ms: int) -> bytes:
    if record.flag is None:
        return encode(Change(record.kind, ENV, None, WHO, when_ms, expected=record.expected))
    index = int(record.flag.rsplit("-", 1)[1])
    flag = validate_flag(record.flag, definition(index, record.revision))
    return encode(
        Change(record.kind, ENV, record.flag, WHO, when_ms, expected=record.expected, definition=flag)
    )


async def _load_tenant(
    bootstrap: Sequence[str], operator_key: str, tenant: str, values: Sequence[tuple[bytes, bytes]]
) -> None:
    async with Admin(bootstrap, api_key=operator_key) as admin:
        await admin.create_tenant(tenant)
    async with Admin(bootstrap, api_key=operator_key, tenant=tenant) as admin:
        await admin.create_topic(
            FLAGS_TOPIC, 1, 0, cleanup_policy="compact", min_compaction_lag_ms=AUDIT_WINDOW_MS
        )
    async with Producer(bootstrap, api_key=operator_key, tenant=tenant, idempotent=True) as producer:
        futures = [await producer.send(FLAGS_TOPIC, value, key=key, partition=0) for key, value in values]
        for offset, future in enumerate(futures):
            written = await future
            if written.offset != offset:
                raise RuntimeError(f"{tenant}: record {offset} landed at offset {written.offset}")


async def load_history(
    bootstrap: Sequence[str],
    operator_key: str,
    *,
    tenants: int,
    flags_per_tenant: int,
    events_per_tenant: int,
    parallel: int = 8,
) -> dict[str, Any]:
    """Write every tenant's history (module docstring); what was written."""
    started = time.perf_counter()
    when_ms = time.time_ns() // 1_000_000
    # Every tenant's records are the same bytes (the tenant is the topic, not
    # in the record): encode once.
    values = [
        (record.key.encode(), record_value(record, when_ms))
        for record in plan(flags_per_tenant, events_per_tenant)
    ]
    encoded_s = time.perf_counter() - started
    gate = asyncio.Semaphore(parallel)

    async def one(index: int) -> None:
        async with gate:
            await _load_tenant(bootstrap, operator_key, tenant_name(index), values)

    await asyncio.gather(*(one(i) for i in range(tenants)))
    return {
        "tenants": tenants,
        "flags": tenants * flags_per_tenant,
        "events": tenants * events_per_tenant,
        "bytes": tenants * sum(len(k) + len(v) for k, v in values),
        "encode_s": round(encoded_s, 2),
        "load_s": round(time.perf_counter() - started, 2),
    }
