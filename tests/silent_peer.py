"""A gRPC peer that goes silent, for the keepalive tests of every channel
that must notice one (the SDK's, tests/client/test_keepalive.py; the
forwarding channels', tests/cluster/test_forwarding_keepalive.py).

The peer is an in-process server whose ``Fetch`` never answers, reached
through a chaos proxy link (chaos/proxy.py); ``silenced_call`` switches the
link to blackhole once the call is in flight: the TCP connection stays open
and nothing flows either way, which is what a paused process looks like
(its kernel still accepts the bytes; no HTTP/2 ping is ever acknowledged).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable

import grpc
import pytest

from chaos.proxy import BLACKHOLE, ProxyFleet
from raftlog.v1 import log_pb2, log_pb2_grpc

DEADLINE_S = 8.0
"""The call's own deadline: far beyond what keepalive may take."""
DETECTED_WITHIN_S = 3.5
"""A ping every second, unanswered for a second: about two seconds, with room."""


class HangingNode(log_pb2_grpc.LogServiceServicer):
    """A node whose ``Fetch`` never answers (the long poll of a paused node)."""

    def __init__(self) -> None:
        self.called = asyncio.Event()

    async def Fetch(
        self, request: log_pb2.FetchRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.FetchResponse:
        self.called.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


@contextlib.asynccontextmanager
async def node_behind_proxy(link: str) -> AsyncIterator[tuple[HangingNode, ProxyFleet, str]]:
    """A ``HangingNode`` and the proxy ``link`` to it: the node, the fleet,
    the address callers use."""
    node = HangingNode()
    server = grpc.aio.server()
    log_pb2_grpc.add_LogServiceServicer_to_server(node, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    fleet = ProxyFleet()
    try:
        fleet.add_link(link, f"127.0.0.1:{port}")
        yield node, fleet, fleet.address(link)
    finally:
        fleet.close()
        await server.stop(0)


async def silenced_call(
    call: Awaitable[object], node: HangingNode, fleet: ProxyFleet, link: str
) -> tuple[grpc.aio.AioRpcError, float]:
    """Wait until ``call`` reached ``node``, blackhole ``link``, and return
    the error ``call`` ended with and the seconds it took after the silence."""
    await asyncio.wait_for(node.called.wait(), 5)
    fleet.set_modes({link: BLACKHOLE})
    silenced = time.monotonic()
    with pytest.raises(grpc.aio.AioRpcError) as failed:
        await call
    return failed.value, time.monotonic() - silenced
