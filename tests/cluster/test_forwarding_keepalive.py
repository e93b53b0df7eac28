"""A call a node forwards to a leader that went silent (paused, cut off)
fails ``UNAVAILABLE`` within about two seconds, not at the caller's
deadline: the forwarding channels ping every second and give up on an
unanswered ping after a second (cluster/frontend/forwarding.py,
``CHANNEL_OPTIONS``; gRPC waits ``http2.ping_timeout_ms`` for the reply).

The leader is an in-process gRPC server behind a chaos proxy link switched
to blackhole: the TCP connection stays open and nothing flows, which is
what a paused process looks like from the forwarding node.
"""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from chaos.proxy import BLACKHOLE, ProxyFleet
from cluster.frontend.forwarding import ChannelCache
from raftlog.v1 import log_pb2, log_pb2_grpc

pytestmark = pytest.mark.timeout(30)

DEADLINE_S = 8.0
DETECTED_WITHIN_S = 3.5


class _HangingLeader(log_pb2_grpc.LogServiceServicer):
    def __init__(self) -> None:
        self.called = asyncio.Event()

    async def Fetch(
        self, request: log_pb2.FetchRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.FetchResponse:
        self.called.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_forwarded_call_to_a_leader_that_went_silent_fails_within_seconds() -> None:
    leader = _HangingLeader()
    server = grpc.aio.server()
    log_pb2_grpc.add_LogServiceServicer_to_server(leader, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    fleet = ProxyFleet()
    channels = ChannelCache()
    try:
        fleet.add_link("node->leader", f"127.0.0.1:{port}")
        stub = log_pb2_grpc.LogServiceStub(channels.channel(fleet.address("node->leader")))
        call = stub.Fetch(log_pb2.FetchRequest(topic="t", partition=0, offset=0), timeout=DEADLINE_S)
        await asyncio.wait_for(leader.called.wait(), 5)
        fleet.set_modes({"node->leader": BLACKHOLE})
        silenced = time.monotonic()
        with pytest.raises(grpc.aio.AioRpcError) as failed:
            await call
        took = time.monotonic() - silenced
    finally:
        await channels.close()
        fleet.close()
        await server.stop(0)
    assert failed.value.code() is grpc.StatusCode.UNAVAILABLE, (
        f"ended {failed.value.code()} after {took:.2f} s"
    )
    assert took < DETECTED_WITHIN_S, f"the forwarding channel took {took:.2f} s to notice the silence"
