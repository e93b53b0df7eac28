"""Test tools for the flag server's log side on a real cluster: a "flag node"
(``LiveFlags`` fed by a running ``Follower``, with a ``FlagWriter``), change
builders and tenant set-up. The flag topic is the real ``__flags``
(cluster/frontend/internal_topics.py lets the operator key write it)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from client.admin import Admin
from flags.changes import Change, Kind
from flags.follower import Follower
from flags.live import LiveFlags
from flags.model import Flag, validate_flag
from flags.writer import FlagWriter
from harness.local_cluster import LocalCluster

WHO = "0123456789abcdef"
ENV = "production"
DISCOVERY_S = 0.3


@contextlib.contextmanager
def started_cluster(root: Path) -> Iterator[LocalCluster]:
    cluster = LocalCluster(root, topics=[])
    cluster.start_all()
    try:
        yield cluster
    finally:
        cluster.close()


def bootstrap(cluster: LocalCluster) -> list[str]:
    return list(cluster.addresses.values())


@dataclass
class FlagNode:
    """One flag server's log side."""

    live: LiveFlags
    follower: Follower
    writer: FlagWriter
    run: asyncio.Task[None]


@contextlib.asynccontextmanager
async def flag_node(cluster: LocalCluster, *, audit_window_ms: int | None = None) -> AsyncIterator[FlagNode]:
    live = LiveFlags()
    follower = Follower(live, bootstrap(cluster), cluster.api_key, discovery_interval_s=DISCOVERY_S)
    if audit_window_ms is None:
        writer = FlagWriter(live, follower, bootstrap(cluster), cluster.api_key)
    else:
        writer = FlagWriter(
            live, follower, bootstrap(cluster), cluster.api_key, audit_window_ms=audit_window_ms
        )
    run = asyncio.create_task(follower.run())
    try:
        yield FlagNode(live, follower, writer, run)
    finally:
        await writer.close()
        await follower.close()
        assert run.done()


async def new_tenant(cluster: LocalCluster, name: str) -> str:
    async with Admin(bootstrap(cluster), api_key=cluster.api_key) as admin:
        await admin.create_tenant(name)
    return name


async def delete_tenant(cluster: LocalCluster, name: str) -> None:
    """Delete the tenant's topics, then the tenant (the cluster refuses a tenant with topics)."""
    async with Admin(bootstrap(cluster), api_key=cluster.api_key, tenant=name) as admin:
        for topic in await admin.list_topics():
            await admin.delete_topic(topic.name)
    async with Admin(bootstrap(cluster), api_key=cluster.api_key) as admin:
        await admin.delete_tenant(name)


def make_flag(key: str, default: str = "x") -> Flag:
    return validate_flag(
        key, {"state": "ENABLED", "variants": {"x": "X", "y": "Y"}, "defaultVariant": default}
    )


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def env_create(env: str = ENV, expected: int = 0) -> Change:
    return Change(Kind.ENV_CREATE, env, None, WHO, now_ms(), expected=expected)


def create(flag: str, expected: int, env: str = ENV) -> Change:
    """``expected``: ``store.flag_version`` (a new flag's is its set's version)."""
    return Change(Kind.CREATE, env, flag, WHO, now_ms(), expected=expected, definition=make_flag(flag))


def update(flag: str, expected: int, default: str, env: str = ENV) -> Change:
    return Change(
        Kind.UPDATE, env, flag, WHO, now_ms(), expected=expected, definition=make_flag(flag, default)
    )


async def caught_up(node: FlagNode, tenant: str, position: int, timeout_s: float = 15.0) -> None:
    """Fail unless ``node`` applies ``tenant``'s records up to ``position`` in time."""
    if not await node.live.wait_applied(tenant, position, timeout_s):
        pytest.fail(
            f"{tenant}: applied {node.live.applied(tenant)} of {position} after {timeout_s} s; "
            f"stopped: {node.follower.stopped_tenants()}"
        )
