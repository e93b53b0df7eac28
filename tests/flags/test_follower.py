"""The follower on a real 3-node cluster: two flag servers' views agree after
concurrent writes, a server started later rebuilds the same view before it
says it is ready, a deleted tenant is forgotten, and a record of a newer
format stops its tenant instead of being skipped."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from client import Producer
from flags.live import FLAGS_TOPIC, Scope
from flags.store import Accepted, Conflict
from flags.writer import FlagLogError
from harness.local_cluster import LocalCluster
from tests.flags.log_nodes import (
    ENV,
    FlagNode,
    bootstrap,
    caught_up,
    create,
    delete_tenant,
    env_create,
    flag_node,
    new_tenant,
    started_cluster,
    update,
)

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with started_cluster(tmp_path_factory.mktemp("flag-follower")) as c:
        yield c


async def _same_position(a: FlagNode, b: FlagNode, tenant: str) -> int:
    position = max(a.live.applied(tenant), b.live.applied(tenant))
    await caught_up(a, tenant, position)
    await caught_up(b, tenant, position)
    return position


async def test_two_servers_agree_after_concurrent_writes(cluster: LocalCluster) -> None:
    tenant = await new_tenant(cluster, "agree")
    async with flag_node(cluster) as a, flag_node(cluster) as b:
        env = await a.writer.append(tenant, env_create())
        assert isinstance(env, Accepted)
        await _same_position(a, b, tenant)
        created = await asyncio.gather(
            *((a if i % 2 else b).writer.append(tenant, create(f"f{i}", env.version)) for i in range(8))
        )
        assert all(isinstance(r, Accepted) for r in created), created
        conflicts = []
        for round_ in range(4):
            await _same_position(a, b, tenant)
            flag = f"f{round_}"
            version = a.live.store.flag_version(tenant, ENV, flag)
            assert version == b.live.store.flag_version(tenant, ENV, flag)
            # Both pre-checks pass (same view); the log takes one, refuses the other.
            results = await asyncio.gather(
                a.writer.append(tenant, update(flag, version, "y")),
                b.writer.append(tenant, update(flag, version, "x")),
            )
            kinds = sorted(type(r).__name__ for r in results)
            assert kinds == ["Accepted", "Conflict"], results
            conflicts += [r for r in results if isinstance(r, Conflict)]
        position = await _same_position(a, b, tenant)
        assert all(c.offset >= 0 for c in conflicts)  # written, then refused when applied
        for offset in range(position):
            assert a.live.result(tenant, offset) == b.live.result(tenant, offset), offset
        for conflict in conflicts:
            assert a.live.result(tenant, conflict.offset) == conflict
        assert a.live.store.view() == b.live.store.view()
        assert a.live.store.needs_restate(tenant) == b.live.store.needs_restate(tenant) == ()
        a.live.store.check_invariants()


async def test_a_server_started_later_is_ready_only_with_the_same_view(cluster: LocalCluster) -> None:
    tenant = await new_tenant(cluster, "later")
    async with flag_node(cluster) as a:
        env = await a.writer.append(tenant, env_create())
        assert isinstance(env, Accepted)
        for i in range(30):
            assert isinstance(await a.writer.append(tenant, create(f"g{i}", env.version)), Accepted)
        version = a.live.store.flag_version(tenant, ENV, "g0")
        assert isinstance(await a.writer.append(tenant, update("g0", version, "y")), Accepted)
        end = a.live.applied(tenant)
        async with flag_node(cluster) as c:
            assert not c.follower.is_ready()
            assert await c.follower.wait_ready(30.0)
            # Ready means caught up: nothing more to wait for.
            assert c.live.applied(tenant) >= end
            assert c.live.store.view() == a.live.store.view()
            for offset in range(end):
                assert c.live.result(tenant, offset) == a.live.result(tenant, offset)
            # And it keeps following: a change through a reaches c.
            version = a.live.store.flag_version(tenant, ENV, "g1")
            result = await a.writer.append(tenant, update("g1", version, "y"))
            assert isinstance(result, Accepted)
            await caught_up(c, tenant, result.offset + 1)
            assert c.live.store.flag_version(tenant, ENV, "g1") == result.offset + 1


async def test_a_deleted_tenant_is_forgotten(cluster: LocalCluster) -> None:
    tenant = await new_tenant(cluster, "doomed")
    async with flag_node(cluster) as a:
        assert isinstance(await a.writer.append(tenant, env_create()), Accepted)
        assert tenant in a.live.tenants()
        with a.live.watch(Scope(tenant, ENV)) as watcher:
            await delete_tenant(cluster, tenant)
            for _ in range(100):
                if tenant not in a.live.tenants():
                    break
                await asyncio.sleep(0.1)
            assert tenant not in a.live.tenants()
            assert tenant not in a.follower.following()
            assert a.live.store.applied(tenant) == 0
            update_ = watcher.poll()
            assert update_ is not None and not update_.exists


async def test_a_record_of_a_newer_format_stops_its_tenant_loudly(
    cluster: LocalCluster, caplog: pytest.LogCaptureFixture
) -> None:
    tenant = await new_tenant(cluster, "future")
    caplog.set_level(logging.ERROR, logger="flags.follower")
    async with flag_node(cluster) as a:
        first = await a.writer.append(tenant, env_create())
        assert isinstance(first, Accepted)
        assert await a.follower.wait_ready(10.0)
        async with Producer(bootstrap(cluster), api_key=cluster.api_key, tenant=tenant) as producer:
            newer = await producer.send(FLAGS_TOPIC, b'{"format":2,"kind":"env-create"}', key=b"staging")
            later = await producer.send(FLAGS_TOPIC, b"{}", key=b"staging")
            bad_offset = (await newer).offset
            await later
        for _ in range(100):
            if a.follower.stopped_tenants():
                break
            await asyncio.sleep(0.1)
        assert list(a.follower.stopped_tenants()) == [tenant]
        assert not a.follower.is_ready()
        await asyncio.sleep(0.5)
        assert a.live.applied(tenant) == bad_offset  # nothing from the bad record on
        assert any(r.levelno == logging.ERROR and tenant in r.getMessage() for r in caplog.records)
        # The writer does not write what this server could not apply.
        with pytest.raises(FlagLogError, match="cannot apply"):
            await a.writer.append(tenant, env_create("staging", expected=0), timeout_s=1.0)
        # Once the tenant is gone, the server is ready again.
        await delete_tenant(cluster, tenant)
        assert await a.follower.wait_ready(10.0)
