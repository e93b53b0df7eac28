"""The fault-injecting proxy against a local echo server: bytes pass
unchanged and in order, a blackhole holds them and releases them on heal,
a reset tears connections down, delay and loss slow the stream without
reordering it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from chaos.proxy import BLACKHOLE, PASS, RESET, LinkMode, ProxyFleet

pytestmark = pytest.mark.timeout(60)


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()


@pytest.fixture
async def link() -> AsyncIterator[tuple[ProxyFleet, str]]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    fleet = ProxyFleet(seed=1)
    fleet.add_link("a->b", f"127.0.0.1:{port}")
    try:
        yield fleet, "a->b"
    finally:
        await asyncio.to_thread(fleet.close)
        server.close()
        await server.wait_closed()


async def _connect(fleet: ProxyFleet, name: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, _, port = fleet.address(name).rpartition(":")
    return await asyncio.open_connection(host, int(port))


async def _roundtrip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, data: bytes) -> bytes:
    writer.write(data)
    await writer.drain()
    return await reader.readexactly(len(data))


async def test_bytes_pass_unchanged_and_in_order(link: tuple[ProxyFleet, str]) -> None:
    fleet, name = link
    reader, writer = await _connect(fleet, name)
    payload = bytes(range(256)) * 4096  # 1 MiB, many chunks
    writer.write(payload)
    await writer.drain()
    assert await reader.readexactly(len(payload)) == payload
    writer.close()
    # The proxy counts on its own thread, just after each write: give it a moment.
    for _ in range(100):
        if fleet.stats()[name].bytes >= 2 * len(payload):
            break
        await asyncio.sleep(0.01)
    assert fleet.stats()[name].bytes == 2 * len(payload)


async def test_a_blackhole_holds_bytes_and_heal_releases_them(link: tuple[ProxyFleet, str]) -> None:
    fleet, name = link
    reader, writer = await _connect(fleet, name)
    assert await _roundtrip(reader, writer, b"before") == b"before"
    fleet.set_modes({name: BLACKHOLE})
    writer.write(b"held")
    await writer.drain()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.5):
            await reader.readexactly(4)
    # A connection opened while blackholed hangs too.
    reader2, writer2 = await _connect(fleet, name)
    writer2.write(b"new")
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.3):
            await reader2.readexactly(3)
    fleet.set_modes({name: PASS})
    async with asyncio.timeout(5):
        assert await reader.readexactly(4) == b"held"
        assert await reader2.readexactly(3) == b"new"
    writer.close()
    writer2.close()


async def test_reset_tears_down_open_connections_and_refuses_new_ones(link: tuple[ProxyFleet, str]) -> None:
    fleet, name = link
    reader, writer = await _connect(fleet, name)
    assert await _roundtrip(reader, writer, b"x") == b"x"
    fleet.set_modes({name: RESET})
    async with asyncio.timeout(5):
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await _roundtrip(reader, writer, b"y")
            await reader.readexactly(1)
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            reader2, writer2 = await _connect(fleet, name)  # may already fail here
            await _roundtrip(reader2, writer2, b"z")
    fleet.set_modes({name: PASS})
    reader3, writer3 = await _connect(fleet, name)
    assert await _roundtrip(reader3, writer3, b"again") == b"again"
    writer3.close()
    assert fleet.stats()[name].resets >= 2


async def test_delay_with_jitter_slows_but_never_reorders(link: tuple[ProxyFleet, str]) -> None:
    fleet, name = link
    fleet.set_modes({name: LinkMode(delay_ms=40, jitter_ms=30)})
    reader, writer = await _connect(fleet, name)
    start = time.monotonic()
    assert await _roundtrip(reader, writer, b"ping") == b"ping"
    assert time.monotonic() - start >= 0.015  # two directions, each at least 10 ms
    messages = [f"{i:04d}".encode() for i in range(200)]
    for m in messages:
        writer.write(m)
        await asyncio.sleep(0)
    await writer.drain()
    async with asyncio.timeout(10):
        assert await reader.readexactly(800) == b"".join(messages)
    writer.close()


async def test_loss_stalls_the_stream(link: tuple[ProxyFleet, str]) -> None:
    fleet, name = link
    fleet.set_modes({name: LinkMode(loss=1.0, stall_ms=200)})
    reader, writer = await _connect(fleet, name)
    start = time.monotonic()
    assert await _roundtrip(reader, writer, b"slow") == b"slow"
    assert time.monotonic() - start >= 0.35  # one stall each way
    assert fleet.stats()[name].stalls >= 2
    writer.close()


def test_modes_are_validated() -> None:
    with pytest.raises(ValueError):
        LinkMode(loss=1.5)
    with pytest.raises(ValueError):
        LinkMode(delay_ms=-1)
    assert LinkMode(delay_ms=20, jitter_ms=10, loss=0.1).describe() == (
        "delay 20±10 ms, loss 10% (stall 250 ms)"
    )
    assert BLACKHOLE.describe() == "blackhole"
