"""The SDK's channels notice a silent node by themselves (client/metadata.py,
``CHANNEL_OPTIONS``): a call waiting on a node whose connection stopped
carrying bytes (a SIGSTOPped process, a cut cable) fails with
``UNAVAILABLE`` within about two seconds, long before its deadline.

The silent node: tests/silent_peer.py.
"""

from __future__ import annotations

import grpc
import pytest

from client.errors import from_rpc_error
from client.metadata import ChannelPool, is_silent
from raftlog.v1 import log_pb2
from tests.silent_peer import DEADLINE_S, DETECTED_WITHIN_S, node_behind_proxy, silenced_call

pytestmark = pytest.mark.timeout(30)

LINK = "client->node"


async def test_a_call_on_a_connection_that_went_silent_fails_unavailable_within_seconds() -> None:
    async with node_behind_proxy(LINK) as (node, fleet, proxy_address):
        pool = ChannelPool(address_map={"node:1": proxy_address})
        try:
            call = pool.log("node:1").Fetch(
                log_pb2.FetchRequest(topic="t", partition=0, offset=0, max_bytes=1), timeout=DEADLINE_S
            )
            error, took = await silenced_call(call, node, fleet, LINK)
        finally:
            await pool.close()
    assert error.code() is grpc.StatusCode.UNAVAILABLE, (
        f"the call ended {error.code()} after {took:.2f} s: keepalive did not notice the silence"
    )
    assert took < DETECTED_WITHIN_S, f"keepalive took {took:.2f} s to notice the silence"
    assert is_silent(from_rpc_error(error))  # the call path then treats the node as silent
