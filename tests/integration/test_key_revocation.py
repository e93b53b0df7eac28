"""Key revocation on a real 3-node cluster: once ``RevokeApiKey`` has
returned, every node refuses the key within a second (measured per node),
and an open ``StreamFetch`` with that key ends ``UNAUTHENTICATED`` within a
second too. The revocation is a metadata entry every node applies (Raft);
applying it wakes the stream to check its caller (metadata_watch.py), so
it ends milliseconds after its node applies the entry, not at the next
``CALLER_CHECK_S`` tick: the one-second bound (the issue's contract, kept
as is) has most of its second as margin for a loaded machine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import grpc
import pytest

from client.admin import Admin
from client.auth import authorized_channel, call_metadata
from client.consumer import Consumer
from cluster.frontend.grpc_errors import error_info
from harness.local_cluster import LocalCluster, TopicSpec
from raftlog.v1 import admin_pb2, admin_pb2_grpc, log_pb2, log_pb2_grpc

pytestmark = pytest.mark.timeout(120)

LIMIT_S = 1.0
"""The issue's bound: a revoked key fails on every node within a second."""


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("revocation"), topics=[TopicSpec("live")])
    c.start_all()
    yield c
    c.close()


async def refused_after(address: str, key: str, since: float) -> tuple[float, str]:
    """Seconds from ``since`` until ``address`` first refuses ``key`` (a new
    call every 10 ms), and the reason."""
    async with grpc.aio.insecure_channel(address) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        while True:
            try:
                await stub.WhoAmI(admin_pb2.WhoAmIRequest(), metadata=call_metadata(key, None), timeout=5)
            except grpc.aio.AioRpcError as error:
                info = error_info(error)
                assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
                return time.monotonic() - since, info.reason if info else ""
            await asyncio.sleep(0.01)


async def admits(address: str, key: str) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        answer = await admin_pb2_grpc.AdminServiceStub(channel).WhoAmI(
            admin_pb2.WhoAmIRequest(), metadata=call_metadata(key, None), timeout=5
        )
    assert answer.tenant == "default"


async def known_leader(lookup: Consumer, topic: str) -> str:
    """Partition 0's leader, once some node knows it (a cluster just started
    may not have elected one yet)."""
    deadline = time.monotonic() + 20
    while (leader := await lookup.metadata.leader(topic, 0)) is None:
        assert time.monotonic() < deadline, f"no leader for {topic}/0 after 20 s"
        await asyncio.sleep(0.1)
    return leader


async def stream_ended_after(
    call: grpc.aio.UnaryStreamCall[log_pb2.StreamFetchRequest, log_pb2.FetchResponse], since: float
) -> tuple[float, str]:
    try:
        while await call.read() is not grpc.aio.EOF:
            pass
    except grpc.aio.AioRpcError as error:
        info = error_info(error)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
        return time.monotonic() - since, info.reason if info else ""
    raise AssertionError("the stream ended without an error")


async def test_a_revoked_key_fails_on_every_node_and_ends_its_stream_within_a_second(
    cluster: LocalCluster,
) -> None:
    addresses = list(cluster.addresses.values())
    async with Admin(addresses, api_key=cluster.api_key) as operator:
        issued = await operator.create_api_key("default")
        key = issued.clear_text
        async with Consumer(addresses, api_key=cluster.api_key) as lookup:
            leader = await known_leader(lookup, "live")
        for address in addresses:  # every node admits the key before the revocation
            await admits(address, key)
        async with authorized_channel(leader, key) as channel:
            stream = log_pb2_grpc.LogServiceStub(channel).StreamFetch(
                log_pb2.StreamFetchRequest(topic="live", partition=0)
            )
            await asyncio.wait_for(stream.read(), 10)  # open and idle
            await operator.revoke_api_key(issued.key_id)
            revoked_at = time.monotonic()
            results = await asyncio.wait_for(
                asyncio.gather(
                    stream_ended_after(stream, revoked_at),
                    *(refused_after(address, key, revoked_at) for address in addresses),
                ),
                10,
            )
    took = {name: round(s, 3) for name, (s, _) in zip(["stream", *addresses], results, strict=True)}
    print(f"refused after revocation (s): {took}")
    assert {reason for _, reason in results} == {"INVALID_API_KEY"}
    assert max(took.values()) < LIMIT_S, took
