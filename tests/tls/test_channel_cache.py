"""Cached node channels follow a reloaded certificate
(cluster/frontend/forwarding.py ``ChannelCache`` with a cluster/tls/dial.py
dialer): when the dialer's generation moves, the next use opens a new
channel and the old one is closed (after its grace)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import grpc

from cluster.frontend.forwarding import ChannelCache


class CountingDialer:
    def __init__(self) -> None:
        self.generation = 1
        self.dialled: list[grpc.aio.Channel] = []

    def dial(self, address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(address, options=list(options))
        self.dialled.append(channel)
        return channel


async def test_a_new_generation_replaces_cached_channels() -> None:
    dialer = CountingDialer()
    cache = ChannelCache(dialer=dialer)
    first = cache.channel("127.0.0.1:1")
    assert cache.channel("127.0.0.1:1") is first and len(dialer.dialled) == 1
    dialer.generation = 2  # the certificate files changed
    second = cache.channel("127.0.0.1:1")
    assert second is not first and len(dialer.dialled) == 2
    assert cache.channel("127.0.0.1:1") is second
    await cache.close()
    assert first.get_state() == grpc.ChannelConnectivity.SHUTDOWN
    assert second.get_state() == grpc.ChannelConnectivity.SHUTDOWN
