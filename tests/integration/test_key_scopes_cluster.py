"""Scoped and expiring keys on a real 3-node cluster, asked of every node:
a client key sees and uses only the topics and groups its prefixes cover;
outside them it gets ``PERMISSION_DENIED KEY_SCOPE`` for its own tenant's
topics and, for another tenant's, exactly the ``NOT_FOUND`` a name nobody
has gets; topic administration is ``KEY_SCOPE``; after a rotation's grace
period the old key is ``UNAUTHENTICATED API_KEY_EXPIRED`` on every node and
the new one works."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from client.admin import Admin
from client.auth import call_metadata
from cluster.frontend.grpc_errors import error_info
from harness.local_cluster import LocalCluster
from raftlog.v1 import (
    admin_pb2,
    admin_pb2_grpc,
    groups_pb2,
    groups_pb2_grpc,
    log_pb2,
    log_pb2_grpc,
    metadata_pb2,
    metadata_pb2_grpc,
)
from raftlog.v1.record_batch import Record, encode_batch

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("key-scopes"), topics=[])
    c.start_all()
    yield c
    c.close()


async def answer(call: Any) -> tuple[str, str, str]:
    """("OK", "", "") or the refusal's (code name, reason, message)."""
    try:
        await call
    except grpc.aio.AioRpcError as error:
        info = error_info(error)
        return error.code().name, info.reason if info else "", info.message if info else ""
    return "OK", "", ""


async def test_a_client_key_is_held_to_its_prefixes_on_every_node(cluster: LocalCluster) -> None:
    addresses = list(cluster.addresses.values())
    async with Admin(addresses, api_key=cluster.api_key) as operator:
        acme_admin = (await operator.create_tenant("acme")).api_key.clear_text
        globex_admin = (await operator.create_tenant("globex")).api_key.clear_text
    async with Admin(addresses, api_key=globex_admin) as globex:
        await globex.create_topic("secret", 1, 3)
    async with Admin(addresses, api_key=acme_admin) as acme:
        await acme.create_topic("orders.eu", 1, 3)
        await acme.create_topic("payments", 1, 3)
        client = (
            await acme.create_api_key(
                "",
                role="client",
                produce_prefixes=["orders."],
                consume_prefixes=["orders."],
                group_prefixes=["billing-"],
            )
        ).clear_text
    key = call_metadata(client, None)
    batch = encode_batch([Record(value=b"v")])
    for address in addresses:
        async with grpc.aio.insecure_channel(address) as channel:
            log = log_pb2_grpc.LogServiceStub(channel)
            metadata = metadata_pb2_grpc.MetadataServiceStub(channel)
            listed = await metadata.GetMetadata(metadata_pb2.GetMetadataRequest(), metadata=key, timeout=5)
            assert [t.name for t in listed.topics] == ["orders.eu"], address
            named = metadata.GetMetadata(metadata_pb2.GetMetadataRequest(topics=["payments"]), metadata=key)
            assert (await answer(named))[:2] == ("PERMISSION_DENIED", "KEY_SCOPE")

            def produce(topic: str) -> Any:
                request = log_pb2.ProduceRequest(topic=topic, partition=0, batch=batch)
                return log.Produce(request, metadata=key, timeout=10)  # noqa: B023

            # Forwarded to the leader if need be (a new topic may still be electing one).
            deadline = time.monotonic() + 10
            while (produced := await answer(produce("orders.eu")))[0] == "FAILED_PRECONDITION":
                assert time.monotonic() < deadline, produced
                await asyncio.sleep(0.1)
            assert produced[0] == "OK", (address, produced)
            code, reason, message = await answer(produce("payments"))
            assert (code, reason) == ("PERMISSION_DENIED", "KEY_SCOPE") and "'payments'" in message
            fetch = log.Fetch(log_pb2.FetchRequest(topic="payments", partition=0), metadata=key, timeout=5)
            assert (await answer(fetch))[:2] == ("PERMISSION_DENIED", "KEY_SCOPE")
            # Another tenant's topic: what a name nobody has gets, word for word.
            foreign, missing = await answer(produce("secret")), await answer(produce("nobody"))
            assert foreign[:2] == ("NOT_FOUND", "UNKNOWN_TOPIC_OR_PARTITION")
            assert foreign == (missing[0], missing[1], missing[2].replace("nobody", "secret"))
            groups = groups_pb2_grpc.GroupServiceStub(channel)
            join = groups_pb2.JoinGroupRequest(group="analytics", topics=["orders.eu"])
            assert (await answer(groups.JoinGroup(join, metadata=key)))[:2] == (
                "PERMISSION_DENIED",
                "KEY_SCOPE",
            )
            admin = admin_pb2_grpc.AdminServiceStub(channel)
            create = admin.CreateTopic(
                admin_pb2.CreateTopicRequest(name="orders.new", partitions=1), metadata=key
            )
            assert (await answer(create))[:2] == ("PERMISSION_DENIED", "KEY_SCOPE")


async def test_after_a_rotations_grace_the_old_key_is_expired_on_every_node(cluster: LocalCluster) -> None:
    addresses = list(cluster.addresses.values())
    async with Admin(addresses, api_key=cluster.api_key) as operator:
        old = await operator.create_api_key("default")
        rotated = await operator.rotate_api_key(old.key_id, grace_seconds=1)

    async def who(address: str, clear_text: str) -> tuple[str, str, str]:
        async with grpc.aio.insecure_channel(address) as channel:
            stub = admin_pb2_grpc.AdminServiceStub(channel)
            return await answer(
                stub.WhoAmI(admin_pb2.WhoAmIRequest(), metadata=call_metadata(clear_text, None))
            )

    # Both keys work during the grace period ...
    assert rotated.old_expires_at_ms - time.time() * 1000 > 300, "too slow to see the grace period"
    for address in addresses:
        assert (await who(address, old.clear_text))[0] == "OK"
        assert (await who(address, rotated.api_key.clear_text))[0] == "OK"
    # ... then only the new one.
    await asyncio.sleep(max(0.0, rotated.old_expires_at_ms / 1000 - time.time()) + 0.1)
    for address in addresses:
        code, reason, message = await who(address, old.clear_text)
        assert (code, reason) == ("UNAUTHENTICATED", "API_KEY_EXPIRED")
        assert f"{old.key_id} expired at" in message and "replaced it" in message
        assert (await who(address, rotated.api_key.clear_text))[0] == "OK"
