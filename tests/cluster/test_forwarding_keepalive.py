"""A call a node forwards to a leader that went silent (paused, cut off)
fails ``UNAVAILABLE`` within about two seconds, not at the caller's
deadline: the forwarding channels ping every second and give up on an
unanswered ping after a second (cluster/frontend/forwarding.py,
``CHANNEL_OPTIONS``; gRPC waits ``http2.ping_timeout_ms`` for the reply).

The silent leader: tests/silent_peer.py.
"""

from __future__ import annotations

import grpc
import pytest

from cluster.frontend.forwarding import ChannelCache
from raftlog.v1 import log_pb2, log_pb2_grpc
from tests.silent_peer import DEADLINE_S, DETECTED_WITHIN_S, node_behind_proxy, silenced_call

pytestmark = pytest.mark.timeout(30)

LINK = "node->leader"


async def test_a_forwarded_call_to_a_leader_that_went_silent_fails_within_seconds() -> None:
    async with node_behind_proxy(LINK) as (leader, fleet, address):
        channels = ChannelCache()
        try:
            stub = log_pb2_grpc.LogServiceStub(channels.channel(address))
            call = stub.Fetch(log_pb2.FetchRequest(topic="t", partition=0, offset=0), timeout=DEADLINE_S)
            error, took = await silenced_call(call, leader, fleet, LINK)
        finally:
            await channels.close()
    assert error.code() is grpc.StatusCode.UNAVAILABLE, f"ended {error.code()} after {took:.2f} s"
    assert took < DETECTED_WITHIN_S, f"the forwarding channel took {took:.2f} s to notice the silence"
