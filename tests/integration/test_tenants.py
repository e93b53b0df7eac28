"""Tenants on a real 3-node cluster: each sees and touches only its own
topics; bad admin input gets a clear error and changes nothing."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from client import (
    AlreadyExistsError,
    AuthenticationError,
    AuthorizationError,
    Consumer,
    InvalidRequestError,
    NotFoundError,
    PreconditionFailedError,
    Producer,
    UnknownTenantError,
    UnknownTopicOrPartitionError,
)
from client.admin import Admin
from client.auth import authorized_channel
from cluster.frontend.grpc_errors import error_info
from harness.local_cluster import LocalCluster
from raftlog.v1 import admin_pb2, admin_pb2_grpc, log_pb2, log_pb2_grpc
from raftlog.v1.record_batch import Record, encode_batch

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("tenants"), topics=[])
    c.start_all()
    yield c
    c.close()


def bootstrap(cluster: LocalCluster) -> list[str]:
    return list(cluster.addresses.values())


async def _produce_and_read(cluster: LocalCluster, key: str, topic: str, values: list[bytes]) -> list[bytes]:
    async with Producer(bootstrap(cluster), api_key=key, linger_ms=1) as producer:
        for value in values:
            await producer.send(topic, value, partition=0)
        await producer.flush()
    async with Consumer(bootstrap(cluster), api_key=key) as consumer:
        consumer.assign([(topic, 0)])
        await consumer.seek_to_beginning()
        seen: list[bytes] = []
        while len(seen) < len(values):
            seen += [r.value or b"" for r in await consumer.poll(5.0)]
        return seen


async def _read_everything(cluster: LocalCluster, key: str, topic: str) -> list[bytes]:
    """Partition 0 of ``topic`` from its start until a poll finds nothing new."""
    async with Consumer(bootstrap(cluster), api_key=key) as consumer:
        consumer.assign([(topic, 0)])
        await consumer.seek_to_beginning()
        seen: list[bytes] = []
        while batch := await consumer.poll(2.0):
            seen += [r.value or b"" for r in batch]
        return seen


async def test_two_tenants_each_see_and_touch_only_their_own_topics(cluster: LocalCluster) -> None:
    async with Admin(bootstrap(cluster), api_key=cluster.api_key) as operator:
        acme_key = (await operator.create_tenant("acme")).api_key.clear_text
        globex_key = (await operator.create_tenant("globex")).api_key.clear_text
    async with (
        Admin(bootstrap(cluster), api_key=acme_key) as acme,
        Admin(bootstrap(cluster), api_key=globex_key) as globex,
    ):
        await acme.create_topic("orders", 2, 3)
        await acme.create_topic("secret-plans", 1, 3)
        await globex.create_topic("orders", 1, 2)  # same name, another tenant: its own topic
        assert [t.name for t in await acme.list_topics()] == ["orders", "secret-plans"]
        assert [t.name for t in await globex.list_topics()] == ["orders"]
        assert (await globex.describe_topic("orders")).partitions == 1
        # Another tenant's topic is NOT_FOUND, exactly like a missing one.
        for name in ("secret-plans", "no-such-topic"):
            with pytest.raises(UnknownTopicOrPartitionError):
                await globex.describe_topic(name)
            with pytest.raises(UnknownTopicOrPartitionError):
                await globex.delete_topic(name)
        # Tenant keys cannot manage tenants, keys or nodes.
        with pytest.raises(AuthorizationError):
            await acme.create_tenant("mallory")
        with pytest.raises(AuthorizationError):
            await acme.list_nodes()

    assert await _produce_and_read(cluster, acme_key, "orders", [b"a1", b"a2"]) == [b"a1", b"a2"]
    assert await _produce_and_read(cluster, globex_key, "orders", [b"g1"]) == [b"g1"]
    # Each tenant's "orders" holds only its own records, read to the end.
    assert await _read_everything(cluster, acme_key, "orders") == [b"a1", b"a2"]
    assert await _read_everything(cluster, globex_key, "orders") == [b"g1"]

    # Raw calls: globex cannot produce into acme's topic, nor name acme's
    # tenant in the header.
    batch = encode_batch([Record(value=b"intruder")])
    async with authorized_channel(cluster.addresses[1], globex_key) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await log_pb2_grpc.LogServiceStub(channel).Produce(
                log_pb2.ProduceRequest(topic="secret-plans", partition=0, batch=batch), timeout=5
            )
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    async with authorized_channel(cluster.addresses[1], globex_key, tenant="acme") as channel:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await log_pb2_grpc.LogServiceStub(channel).Produce(
                log_pb2.ProduceRequest(topic="orders", partition=0, batch=batch), timeout=5
            )
        info = error_info(caught.value)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND and info and info.reason == "UNKNOWN_TENANT"
    # The operator reaches any tenant by naming it.
    async with Admin(bootstrap(cluster), api_key=cluster.api_key, tenant="acme") as operator_in_acme:
        assert [t.name for t in await operator_in_acme.list_topics()] == ["orders", "secret-plans"]


async def test_wrong_or_missing_keys_are_refused(cluster: LocalCluster) -> None:
    for key in (None, "not-a-key", "rlk_0123456789abcdef_" + "A" * 43):
        async with Admin(bootstrap(cluster), api_key=key, timeout_s=5) as admin:
            with pytest.raises(AuthenticationError):
                await admin.list_topics()
    async with Admin(bootstrap(cluster), api_key=cluster.api_key, tenant="nobody") as admin:
        with pytest.raises(UnknownTenantError):
            await admin.list_topics()
    # A revoked key stops working.
    async with Admin(bootstrap(cluster), api_key=cluster.api_key) as operator:
        await operator.create_tenant("short-lived")
        issued = await operator.create_api_key("short-lived")
        async with Admin(bootstrap(cluster), api_key=issued.clear_text) as tenant:
            assert await tenant.list_topics() == []
            await operator.revoke_api_key(issued.key_id)
            with pytest.raises(AuthenticationError):
                await tenant.list_topics()


async def test_bad_admin_input_gets_a_clear_error_and_changes_nothing(cluster: LocalCluster) -> None:
    async with Admin(bootstrap(cluster), api_key=cluster.api_key) as admin:
        before = await admin.cluster_status()
        cases = [
            (admin.create_topic("zero", 0, 1), InvalidRequestError, "INVALID_PARTITIONS"),
            (admin.create_topic("too-wide", 1, 4), PreconditionFailedError, "REPLICATION_FACTOR_TOO_LARGE"),
            (admin.create_topic("bad/name", 1, 1), InvalidRequestError, "INVALID_NAME"),
            (admin.create_topic("", 1, 1), InvalidRequestError, "INVALID_NAME"),
            (admin.create_tenant("bad tenant"), InvalidRequestError, "INVALID_NAME"),
            (admin.delete_tenant("nobody"), UnknownTenantError, "UNKNOWN_TENANT"),
            (admin.decommission_node(99), NotFoundError, "UNKNOWN_NODE"),
        ]
        for call, error, reason in cases:
            with pytest.raises(error) as caught:
                await call
            assert caught.value.reason == reason, (reason, caught.value)
            assert caught.value.message
        await admin.create_topic("dup", 1, 1)
        with pytest.raises(AlreadyExistsError):
            await admin.create_topic("dup", 1, 1)
        await admin.delete_topic("dup")
        after = await admin.cluster_status()
        assert (after.tenants, after.topics, after.partitions) == (
            before.tenants,
            before.topics,
            before.partitions,
        )


async def test_a_page_token_from_another_listing_is_refused(cluster: LocalCluster) -> None:
    async with Admin(bootstrap(cluster), api_key=cluster.api_key) as admin:
        for name in ("p1", "p2", "p3"):
            await admin.create_topic(name, 1, 1)
    async with authorized_channel(cluster.addresses[2], cluster.api_key) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        first = await stub.ListTopics(admin_pb2.ListTopicsRequest(page_size=2), timeout=5)
        assert len(first.topics) == 2 and first.next_page_token
        rest = await stub.ListTopics(
            admin_pb2.ListTopicsRequest(page_size=2, page_token=first.next_page_token), timeout=5
        )
        assert [t.name for t in (*first.topics, *rest.topics)] == [
            "p1",
            "p2",
            "p3",
        ] and not rest.next_page_token
        for foreign in (
            (await stub.ListNodes(admin_pb2.ListNodesRequest(page_size=1), timeout=5)).next_page_token,
            "garbage",
        ):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.ListTopics(admin_pb2.ListTopicsRequest(page_size=2, page_token=foreign), timeout=5)
            info = error_info(caught.value)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert info is not None and info.reason == "INVALID_PAGE_TOKEN"


async def test_without_a_chosen_key_the_first_node_issues_one_to_its_data_dir(tmp_path: Path) -> None:
    single = LocalCluster(tmp_path, nodes=1, topics=[])
    single.api_key = ""  # no RAFTLOG_BOOTSTRAP_API_KEY for the node
    single.start_all()
    try:
        key_file = single.data_dir(1) / "operator.key"
        assert key_file.stat().st_mode & 0o077 == 0, "the operator key is readable by others"
        issued = key_file.read_text().strip()
        async with Admin(bootstrap(single), api_key=issued) as admin:
            assert [t.name for t in await admin.list_tenants()] == ["__system", "default"]
    finally:
        single.close()


async def test_a_change_made_through_a_follower_is_visible_there_when_it_returns(
    cluster: LocalCluster,
) -> None:
    """Read-your-writes on the node a client talks to: the follower that
    forwarded a change answers only once its own copy of the metadata has
    applied it, so the client's next read there sees the change."""
    async with Admin(bootstrap(cluster), api_key=cluster.api_key) as admin:
        leader = (await admin.cluster_status()).controller_leader
    follower = next(n for n in cluster.node_ids if n != leader)
    async with Admin([cluster.addresses[follower]], api_key=cluster.api_key) as admin:
        for i in range(20):
            await admin.create_topic(f"ryw-{i}", 1, 1)
            status = await admin.cluster_status()
            assert status.answering_node == follower
            assert f"ryw-{i}" in {t.name for t in await admin.list_topics()}, i
            await admin.delete_topic(f"ryw-{i}")
            assert f"ryw-{i}" not in {t.name for t in await admin.list_topics()}, i
