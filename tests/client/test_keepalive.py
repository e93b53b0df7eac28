"""The SDK's channels notice a silent node by themselves (client/metadata.py,
``CHANNEL_OPTIONS``): a call waiting on a node whose connection stopped
carrying bytes (a SIGSTOPped process, a cut cable) fails with
``UNAVAILABLE`` within about two seconds, long before its deadline.

The node is an in-process gRPC server reached through a chaos proxy link
(chaos/proxy.py) switched to blackhole: the TCP connection stays open and
nothing flows either way, which is what a paused process looks like from
the client (its kernel still accepts the bytes; no HTTP/2 ping is ever
acknowledged).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import grpc
import pytest

from chaos.proxy import BLACKHOLE, ProxyFleet
from client.errors import from_rpc_error
from client.metadata import ChannelPool, is_silent
from raftlog.v1 import log_pb2, log_pb2_grpc

pytestmark = pytest.mark.timeout(30)

DEADLINE_S = 8.0
"""The call's own deadline: far beyond what keepalive may take."""
DETECTED_WITHIN_S = 3.5
"""A ping every second, unanswered for a second: about two seconds, with room."""


class _HangingNode(log_pb2_grpc.LogServiceServicer):
    """A node whose ``Fetch`` never answers (the long poll of a paused node)."""

    def __init__(self) -> None:
        self.called = asyncio.Event()

    async def Fetch(
        self, request: log_pb2.FetchRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.FetchResponse:
        self.called.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@pytest.fixture
async def node_behind_proxy() -> AsyncIterator[tuple[_HangingNode, ProxyFleet, str]]:
    node = _HangingNode()
    server = grpc.aio.server()
    log_pb2_grpc.add_LogServiceServicer_to_server(node, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    fleet = ProxyFleet()
    try:
        fleet.add_link("client->node", f"127.0.0.1:{port}")
        yield node, fleet, fleet.address("client->node")
    finally:
        fleet.close()
        await server.stop(0)


async def test_a_call_on_a_connection_that_went_silent_fails_unavailable_within_seconds(
    node_behind_proxy: tuple[_HangingNode, ProxyFleet, str],
) -> None:
    node, fleet, proxy_address = node_behind_proxy
    pool = ChannelPool(address_map={"node:1": proxy_address})
    try:
        call = pool.log("node:1").Fetch(
            log_pb2.FetchRequest(topic="t", partition=0, offset=0, max_bytes=1), timeout=DEADLINE_S
        )
        await asyncio.wait_for(node.called.wait(), 5)
        fleet.set_modes({"client->node": BLACKHOLE})
        silenced = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await call
        took = time.monotonic() - silenced
    finally:
        await pool.close()
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE, (
        f"the call ended {failed.value.code()} after {took:.2f} s: keepalive did not notice the silence"
    )
    assert took < DETECTED_WITHIN_S, f"keepalive took {took:.2f} s to notice the silence"
    assert is_silent(from_rpc_error(failed.value))  # the call path then treats the node as silent
