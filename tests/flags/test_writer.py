"""The writer on a real 3-node cluster: a change is applied and visible, a
refused pre-check writes nothing, a conflict is followed by its restate,
``read_records`` returns what was written, and killing the leader of a
tenant's flag topic mid-writes loses no acknowledged change."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator

import pytest

from client.admin import Admin
from flags.changes import Change, Kind, decode, encode
from flags.live import FLAGS_TOPIC
from flags.store import Accepted, Conflict
from flags.writer import FlagLogError
from harness.local_cluster import LocalCluster
from tests.flags.log_nodes import (
    ENV,
    WHO,
    bootstrap,
    caught_up,
    create,
    env_create,
    flag_node,
    make_flag,
    new_tenant,
    now_ms,
    started_cluster,
    update,
)

pytestmark = pytest.mark.timeout(180)

AUDIT_WINDOW_MS = 7 * 86_400_000


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with started_cluster(tmp_path_factory.mktemp("flag-writer")) as c:
        yield c


async def test_a_write_is_applied_and_visible(cluster: LocalCluster) -> None:
    tenant = await new_tenant(cluster, "visible")
    async with flag_node(cluster, audit_window_ms=AUDIT_WINDOW_MS) as a, flag_node(cluster) as b:
        env = await a.writer.append(tenant, env_create())
        assert isinstance(env, Accepted) and env.version == env.offset + 1
        # The first write created the topic: compacted, history kept for the audit window.
        async with Admin(bootstrap(cluster), api_key=cluster.api_key, tenant=tenant) as admin:
            topic = await admin.describe_topic(FLAGS_TOPIC)
        assert (topic.partitions, topic.cleanup_policy) == (1, "compact")
        assert topic.min_compaction_lag_ms == AUDIT_WINDOW_MS
        created = await a.writer.append(tenant, create("banner", env.version))
        assert isinstance(created, Accepted) and created.version == created.offset + 1
        # Visible on the writer's view the moment append returns ...
        view = a.live.store.flag(tenant, ENV, "banner")
        assert view is not None and view.version == created.version
        # ... and on another server's once it has applied the offset.
        await caught_up(b, tenant, created.offset + 1)
        assert b.live.store.flag(tenant, ENV, "banner") == view
        # A stale expected version against a current view: refused, nothing written.
        applied = a.live.applied(tenant)
        refused = await a.writer.append(tenant, update("banner", env.version, "y"))
        assert isinstance(refused, Conflict) and refused.offset == -1
        await asyncio.sleep(0.3)
        assert a.live.applied(tenant) == applied
        # Any other record: its offset once applied.
        offset = await a.writer.append_record(tenant, "@sdk-key/0000000000000000", b"not a key record")
        assert offset == applied and a.live.applied(tenant) == applied + 1


async def test_a_conflict_is_followed_by_its_restate(cluster: LocalCluster) -> None:
    tenant = await new_tenant(cluster, "restated")
    async with flag_node(cluster) as a, flag_node(cluster) as b:
        env = await a.writer.append(tenant, env_create())
        assert isinstance(env, Accepted)
        created = await a.writer.append(tenant, create("limit", env.version))
        assert isinstance(created, Accepted)
        await caught_up(b, tenant, a.live.applied(tenant))
        results = await asyncio.gather(
            a.writer.append(tenant, update("limit", created.version, "y")),
            b.writer.append(tenant, update("limit", created.version, "x")),
        )
        (conflict,) = [r for r in results if isinstance(r, Conflict)]
        (accepted,) = [r for r in results if isinstance(r, Accepted)]
        assert conflict.offset >= 0
        # The loser appended a restate of the key's current state right after.
        end = max(a.live.applied(tenant), b.live.applied(tenant))
        await caught_up(a, tenant, end)
        await caught_up(b, tenant, end)
        records = await a.writer.read_records(tenant, range(conflict.offset + 1, end))
        restates = [decode(r.key.decode(), r.value) for r in records if r.key and r.value]
        restates = [c for c in restates if c.kind is Kind.RESTATE]
        assert len(restates) >= 1
        assert restates[0].flag == "limit" and restates[0].version == accepted.version
        for node in (a, b):
            assert node.live.store.needs_restate(tenant) == ()
        assert a.live.store.view() == b.live.store.view()


async def test_restate_pending_appends_what_a_crash_left_owed(cluster: LocalCluster) -> None:
    tenant = await new_tenant(cluster, "owed")
    async with flag_node(cluster) as a:
        env = await a.writer.append(tenant, env_create())
        assert isinstance(env, Accepted)
        created = await a.writer.append(tenant, create("limit", env.version))
        assert isinstance(created, Accepted)
        # A stale write that reached the log without its restate (a writer
        # that crashed after producing it): produced by hand.
        stale = Change(
            Kind.UPDATE, ENV, "limit", WHO, now_ms(), expected=env.version, definition=make_flag("limit", "y")
        )
        offset = await a.writer.append_record(tenant, stale.key, encode(stale))
        assert isinstance(a.live.result(tenant, offset), Conflict)
        assert [k[:2] for k in a.live.store.needs_restate(tenant)] == [(ENV, "limit")]
        # The periodic sweep restates only what two sweeps in a row found owed.
        assert await a.writer.restate_pending(settled_only=True) == 0
        assert await a.writer.restate_pending(settled_only=True) == 1
        assert a.live.store.needs_restate(tenant) == ()


async def test_read_records_returns_what_was_written(cluster: LocalCluster) -> None:
    tenant = await new_tenant(cluster, "reader")
    async with flag_node(cluster) as a:
        first = env_create()
        env = await a.writer.append(tenant, first)
        assert isinstance(env, Accepted)
        written: dict[int, bytes] = {env.offset: encode(first)}
        # Many records at once (they batch), so that reading must seek ahead.
        bulk = [Change(Kind.ENV_CREATE, f"bulk-{i % 3}", None, WHO, i) for i in range(600)]
        offsets = await asyncio.gather(*(a.writer.append_record(tenant, c.key, encode(c)) for c in bulk))
        assert sorted(offsets) == list(range(env.offset + 1, env.offset + 601))
        for change, offset in zip(bulk, offsets, strict=True):
            written[offset] = encode(change)
        wanted = [offsets[0], offsets[1], offsets[400], offsets[599], env.offset]
        records = await a.writer.read_records(tenant, [*wanted, 10_000, -1, offsets[1]])
        assert [r.offset for r in records] == sorted(set(wanted))
        for record in records:
            assert record.value == written[record.offset]
            assert record.key == decode_key(record.value)
        assert await a.writer.read_records(tenant, []) == []
        assert await a.writer.read_records("reader-has-no-such-tenant", [0]) == []


def decode_key(value: bytes | None) -> bytes:
    assert value is not None
    return str(json.loads(value)["env"]).encode()


async def test_killing_the_flag_topic_leader_mid_writes_loses_no_acknowledged_change(
    cluster: LocalCluster,
) -> None:
    tenant = await new_tenant(cluster, "failover")
    async with flag_node(cluster) as a:
        env = await a.writer.append(tenant, env_create())
        assert isinstance(env, Accepted)
        flags = [f"k{i}" for i in range(4)]
        for flag in flags:
            assert isinstance(await a.writer.append(tenant, create(flag, env.version)), Accepted)
        async with Admin(bootstrap(cluster), api_key=cluster.api_key, tenant=tenant) as admin:
            leader = (await admin.describe_topic(FLAGS_TOPIC)).assignments[0].leader
        assert leader in cluster.node_ids
        accepted: dict[int, Change] = {}
        failures: list[FlagLogError] = []

        async def writes(flag: str) -> None:
            for i in range(25):
                version = a.live.store.flag_version(tenant, ENV, flag)
                change = update(flag, version, "y" if i % 2 else "x")
                try:
                    result = await a.writer.append(tenant, change, timeout_s=20.0)
                except FlagLogError as error:
                    failures.append(error)
                    continue
                if isinstance(result, Accepted):
                    accepted[result.offset] = change
                await asyncio.sleep(0.02)

        at_kill: list[int] = []

        async def kill_leader() -> None:
            await asyncio.sleep(0.3)
            at_kill.append(a.live.applied(tenant))
            cluster.kill(leader)

        started = time.monotonic()
        await asyncio.gather(*(writes(flag) for flag in flags), kill_leader())
        elapsed = time.monotonic() - started
        print(f"{len(accepted)} accepted, {len(failures)} failed, {elapsed:.1f} s; node {leader} killed")
        async with Admin(bootstrap(cluster), api_key=cluster.api_key, tenant=tenant) as admin:
            assert (await admin.describe_topic(FLAGS_TOPIC)).assignments[0].leader != leader
        cluster.start(leader)
        assert len(accepted) >= 50, (len(accepted), failures, elapsed)
        # Writes were acknowledged both before the kill and after the failover.
        assert min(accepted) < at_kill[0] <= max(accepted)
        # Every acknowledged change is in the log, at its offset, as written.
        records = await a.writer.read_records(tenant, sorted(accepted))
        assert [r.offset for r in records] == sorted(accepted)
        for record in records:
            assert record.value == encode(accepted[record.offset])
        # The view holds each flag's last accepted change; a fresh server agrees.
        for flag in flags:
            last = max(o for o, c in accepted.items() if c.flag == flag)
            assert a.live.store.flag_version(tenant, ENV, flag) == last + 1
        async with flag_node(cluster) as c:
            assert await c.follower.wait_ready(30.0)
            await caught_up(c, tenant, a.live.applied(tenant))
            assert c.live.store.view() == a.live.store.view()
