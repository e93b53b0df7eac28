"""Change pings (``GET /ofrep/v1/events``) on a real 3-node cluster, on the
OFREP app as the flag server serves them: an event after a flag change with
the documented fields, ``Last-Event-ID`` catch-up, heartbeats, a revoked key
ending the stream, many clients served from one encoded event, a client that
does not read dropped (bounded buffers), and the OFREP gate's refusals
(unknown keys, rate limits)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from flags.live import LiveFlags, Scope
from flags.ofrep import EVENTS_PATH, OfrepLimits, ofrep_app
from flags.ofrep_events import ChangePings, add_event_routes
from flags.rate_limit import Rate
from harness.local_cluster import LocalCluster
from tests.flags.events_support import env_and_key, revoke
from tests.flags.log_nodes import ENV, FlagNode, create, flag_node, new_tenant, started_cluster, update

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with started_cluster(tmp_path_factory.mktemp("ofrep-events")) as c:
        yield c


class Served:
    def __init__(
        self, node: FlagNode, pings: ChangePings, server: TestServer, session: aiohttp.ClientSession
    ):
        self.node, self.pings, self.server, self.session = node, pings, server, session

    def url(self, key: str) -> str:
        return str(self.server.make_url(EVENTS_PATH).with_query({"key": key}))


NO_LIMITS = OfrepLimits(per_key=Rate.unlimited(), per_address=Rate.unlimited())


def events_app(
    live: LiveFlags, limits: OfrepLimits = NO_LIMITS, *, pings_options: dict[str, Any] | None = None
) -> tuple[web.Application, ChangePings]:
    """The OFREP app with the change pings, as ``raftlog flags serve`` builds it."""
    found: list[ChangePings] = []
    options = {"heartbeat_s": 0.2, **(pings_options or {})}
    app = ofrep_app(
        live,
        limits=limits,
        extra_routes=[lambda app: found.append(add_event_routes(app, live, **options))],
    )
    return app, found[0]


@pytest.fixture
async def served(cluster: LocalCluster) -> AsyncIterator[Served]:
    async with flag_node(cluster) as node:
        app, pings = events_app(node.live)  # no limits: one test opens 200 streams at once
        server = TestServer(app)
        await server.start_server()
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector) as session:
            yield Served(node, pings, server, session)
        await server.close()


class Stream:
    """An SSE client: events as dicts of their fields; comment lines counted."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response
        self.comments = 0

    async def next(self, timeout_s: float = 5.0) -> dict[str, Any] | None:
        """The next event; None at end of stream. Raises TimeoutError."""
        fields: dict[str, Any] = {}
        async with asyncio.timeout(timeout_s):
            while True:
                raw = await self.response.content.readline()
                if not raw:
                    return None
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if fields:
                        return fields
                    continue
                if line.startswith(":"):
                    self.comments += 1
                    continue
                name, _, value = line.partition(": ")
                fields[name] = json.loads(value) if name == "data" else value


async def connect(served: Served, key: str, headers: dict[str, str] | None = None) -> Stream:
    response = await served.session.get(served.url(key), headers=headers or {})
    assert response.status == 200, await response.text()
    assert response.headers["Content-Type"].startswith("text/event-stream")
    return Stream(response)


async def nothing_within(stream: Stream, seconds: float) -> None:
    with pytest.raises(TimeoutError):
        await stream.next(seconds)


async def setup_env(cluster: LocalCluster, served: Served, name: str) -> tuple[str, str, str]:
    tenant = await new_tenant(cluster, name)
    key, key_id = await env_and_key(served.node, tenant)
    return tenant, key, key_id


def version(served: Served, tenant: str) -> int:
    return served.node.live.store.env_version(tenant, ENV)


async def test_an_event_follows_a_flag_change(cluster: LocalCluster, served: Served) -> None:
    tenant, key, _ = await setup_env(cluster, served, "sse-change")
    stream = await connect(served, key)
    await nothing_within(stream, 0.5)  # no Last-Event-ID: the app has just fetched
    assert stream.comments >= 1  # heartbeats meanwhile
    before = time.time()
    started = time.perf_counter()
    created = await served.node.writer.append(tenant, create("banner", version(served, tenant)))
    event = await stream.next()
    took_ms = (time.perf_counter() - started) * 1e3
    current = version(served, tenant)
    assert event is not None and created.offset >= 0
    assert event == {
        "id": str(current),
        "event": "message",
        "data": {
            "type": "refetchEvaluation",
            "etag": f'"{current}"',
            "lastModified": event["data"]["lastModified"],
        },
    }
    assert int(before) <= event["data"]["lastModified"] <= time.time() + 1
    await served.node.writer.append(tenant, update("banner", current, "y"))
    second = await stream.next()
    assert second is not None and second["id"] == str(version(served, tenant)) != event["id"]
    print(f"\nwrite -> event: {took_ms:.1f} ms")
    stream.response.close()


async def test_last_event_id_catches_up(cluster: LocalCluster, served: Served) -> None:
    tenant, key, _ = await setup_env(cluster, served, "sse-catch-up")
    old = version(served, tenant)
    await served.node.writer.append(tenant, create("banner", old))
    current = version(served, tenant)
    behind = await connect(served, key, {"Last-Event-ID": str(old)})
    event = await behind.next(2.0)
    assert event is not None and event["id"] == str(current)
    garbage = await connect(served, key, {"Last-Event-ID": "not-ours"})
    event = await garbage.next(2.0)
    assert event is not None and event["id"] == str(current)
    up_to_date = await connect(served, key, {"Last-Event-ID": str(current)})
    await nothing_within(up_to_date, 0.5)
    for stream in (behind, garbage, up_to_date):
        stream.response.close()


async def test_a_revoked_key_ends_the_stream(cluster: LocalCluster, served: Served) -> None:
    tenant, key, key_id = await setup_env(cluster, served, "sse-revoke")
    other_key, _ = await env_and_key(served.node, tenant)
    stream = await connect(served, key)
    other = await connect(served, other_key)
    await revoke(served.node, tenant, key_id)
    assert await stream.next(3.0) is None  # the end of the stream, no event
    await nothing_within(other, 0.5)  # another key of the environment keeps its stream
    response = await served.session.get(served.url(key))
    assert (
        response.status == 401 and (await response.json())["errorCode"] == "GENERAL"
    )  # the OFREP gate's body
    assert served.pings.clients(Scope(tenant, ENV)) == 1
    other.response.close()


async def test_keys_in_headers_and_refusals(cluster: LocalCluster, served: Served) -> None:
    _, key, _ = await setup_env(cluster, served, "sse-keys")
    for headers in ({"Authorization": f"Bearer {key}"}, {"X-API-Key": key}):
        response = await served.session.get(served.server.make_url(EVENTS_PATH), headers=headers)
        assert response.status == 200
        response.close()
    for url in (served.server.make_url(EVENTS_PATH), served.url("rlf_0000000000000000_" + "A" * 43)):
        response = await served.session.get(url)
        assert response.status == 401 and (await response.json())["errorCode"] == "GENERAL"
        assert response.headers["Access-Control-Allow-Origin"] == "*"  # the OFREP app's CORS too
        assert key not in await response.text()


async def test_connects_are_rate_limited_per_key(cluster: LocalCluster, served: Served) -> None:
    tenant, key, _ = await setup_env(cluster, served, "sse-flood")
    _, other_key, _ = await setup_env(cluster, served, "sse-calm")
    app, pings = events_app(served.node.live, OfrepLimits(per_key=Rate(0.01, 2.0)))
    async with TestServer(app) as server:

        async def connect_to(key: str) -> aiohttp.ClientResponse:
            return await served.session.get(server.make_url(EVENTS_PATH).with_query({"key": key}))

        opened = [await connect_to(key) for _ in range(2)]
        assert [r.status for r in opened] == [200, 200]
        refused = await connect_to(key)
        assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
        assert (await refused.json())["errorCode"] == "GENERAL"
        assert pings.clients(Scope(tenant, ENV)) == 2  # the refused one never subscribed
        other = await connect_to(other_key)  # another tenant's key keeps its budget
        assert other.status == 200
        for response in [*opened, other]:
            response.close()


async def test_many_clients_share_one_encoded_event(cluster: LocalCluster, served: Served) -> None:
    tenant, key, _ = await setup_env(cluster, served, "sse-many")
    count = 200
    streams = [await connect(served, key) for _ in range(count)]
    assert served.pings.clients(Scope(tenant, ENV)) == count
    encoded = served.pings.events_encoded
    started = time.perf_counter()
    await served.node.writer.append(tenant, create("banner", version(served, tenant)))

    async def arrival(stream: Stream) -> float:
        event = await stream.next(10.0)
        assert event is not None
        return (time.perf_counter() - started) * 1e3

    times = sorted(await asyncio.gather(*(arrival(s) for s in streams)))
    assert served.pings.events_encoded == encoded + 1  # once per change, not per client
    print(f"\n{count} SSE clients: write -> event p50 {times[count // 2]:.0f} ms, p99 {times[-2]:.0f} ms")
    for stream in streams:
        stream.response.close()
    for _ in range(100):
        if served.pings.clients(Scope(tenant, ENV)) == 0:
            break
        await asyncio.sleep(0.05)
    assert served.pings.clients(Scope(tenant, ENV)) == 0  # left clients are noticed (at the next heartbeat)


async def eventually(check: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def served_as_in_production(app: web.Application, send_buffer: int | None = None) -> AsyncIterator[int]:
    """``app`` on an ``AppRunner`` as the flag server runs it (a client that
    leaves does not cancel its handler, unlike ``TestServer``); its port.
    ``send_buffer``: the listener's ``SO_SNDBUF``, which accepted
    connections inherit."""
    listener = socket.create_server(("127.0.0.1", 0))
    if send_buffer is not None:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.SockSite(runner, listener).start()
        yield listener.getsockname()[1]
    finally:
        await runner.cleanup()


async def raw_stream(
    port: int, key: str, *, version: str = "1.1", receive_buffer: int | None = None
) -> socket.socket:
    """A stream opened by hand (no HTTP client reading it); the head read."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    request = f"GET {EVENTS_PATH}?key={key} HTTP/{version}\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n"
    await loop.sock_sendall(sock, request.encode())
    head = b""
    async with asyncio.timeout(5.0):
        while b"\r\n\r\n" not in head:
            head += await loop.sock_recv(sock, 1)  # byte by byte: nothing after the head is taken
    assert head.startswith(f"HTTP/{version} 200".encode()), head
    return sock


async def test_a_client_that_left_is_noticed_at_a_heartbeat(cluster: LocalCluster, served: Served) -> None:
    tenant, key, _ = await setup_env(cluster, served, "sse-left")
    scope = Scope(tenant, ENV)
    app, pings = events_app(served.node.live, pings_options={"heartbeat_s": 0.1})
    async with served_as_in_production(app) as port:
        streams = [await raw_stream(port, key) for _ in range(3)]
        await eventually(lambda: pings.clients(scope) == 3, 5.0, "the streams subscribed")
        for stream in streams:
            stream.close()
        await eventually(lambda: pings.clients(scope) == 0, 3.0, "clients that left are still subscribed")
        assert pings.slow_clients_dropped == 0


async def test_http_1_0_streams_are_not_chunked(cluster: LocalCluster, served: Served) -> None:
    tenant, key, _ = await setup_env(cluster, served, "sse-http10")
    app, pings = events_app(served.node.live, pings_options={"heartbeat_s": 60.0})
    loop = asyncio.get_running_loop()
    async with served_as_in_production(app) as port:
        http10, http11 = await raw_stream(port, key, version="1.0"), await raw_stream(port, key)
        await eventually(lambda: pings.clients(Scope(tenant, ENV)) == 2, 5.0, "the streams subscribed")
        await served.node.writer.append(tenant, create("banner", version(served, tenant)))
        head = b"id: %d\nevent: message\ndata: {" % version(served, tenant)
        received = {}
        for stream in (http10, http11):
            got = b""
            async with asyncio.timeout(5.0):
                while not got.endswith(b"}\n\n\r\n" if stream is http11 else b"}\n\n"):
                    got += await loop.sock_recv(stream, 1 << 16)
            stream.close()
            received[stream] = got
        assert received[http10].startswith(head)  # the bare event: HTTP/1.0 has no chunks
        size, _, rest = received[http11].partition(b"\r\n")
        assert rest.startswith(head) and rest[int(size, 16) :] == b"\r\n"  # one chunk: the event
        assert rest[: int(size, 16)] == received[http10]  # the same bytes, framed once each


@pytest.mark.parametrize(
    "bounds",
    [
        {"max_buffer_bytes": 2048},  # unsent bytes above the bound: cut at that write
        {"max_buffer_bytes": 1 << 30, "send_timeout_s": 0.3},  # a buffer that never empties: cut in time
    ],
    ids=["buffer-bound", "stall-timeout"],
)
async def test_a_client_that_does_not_read_is_dropped(
    cluster: LocalCluster, served: Served, bounds: dict[str, int | float]
) -> None:
    tenant, key, _ = await setup_env(cluster, served, f"sse-slow-{len(bounds)}")
    scope = Scope(tenant, ENV)
    # Heartbeats every millisecond are the bytes the stalled client leaves unread.
    app, pings = events_app(served.node.live, pings_options={"heartbeat_s": 0.001, **bounds})
    loop = asyncio.get_running_loop()
    # A small send buffer: the kernel holds a few KiB for a peer that does not
    # read and the rest queues in the server's transport, which the bounds are about.
    async with served_as_in_production(app, send_buffer=4096) as port:
        stalled = await raw_stream(port, key, receive_buffer=4096)  # and then it reads nothing
        try:
            response = await served.session.get(f"http://127.0.0.1:{port}{EVENTS_PATH}", params={"key": key})
            reading = Stream(response)
            assert response.status == 200
            await eventually(lambda: pings.clients(scope) == 2, 5.0, "both streams subscribed")
            await eventually(
                lambda: pings.slow_clients_dropped == 1, 20.0, "the stalled client was not dropped"
            )
            # Its handler unsubscribes once it sees the end (a loop turn later).
            await eventually(lambda: pings.clients(scope) == 1, 5.0, "the dropped stream unsubscribed")
            # Reset: what it did not read is discarded, the kernel's copy too, not left to drain.
            with pytest.raises(ConnectionResetError):
                async with asyncio.timeout(10.0):
                    while await loop.sock_recv(stalled, 1 << 16):
                        pass
            # The reading client keeps its stream and sees the next change.
            await served.node.writer.append(tenant, create("banner", version(served, tenant)))
            event = await reading.next(5.0)
            assert event is not None and event["id"] == str(version(served, tenant))
            assert pings.slow_clients_dropped == 1 and reading.comments > 0
            response.close()
        finally:
            stalled.close()


async def test_a_failed_channel_ends_its_streams_and_the_next_starts_afresh(
    cluster: LocalCluster, served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant, key, _ = await setup_env(cluster, served, "sse-broken")
    stream = await connect(served, key)
    await eventually(lambda: served.pings.clients(Scope(tenant, ENV)) == 1, 5.0, "the stream subscribed")

    def broken(version: int) -> tuple[bytes, bytes]:
        raise ValueError("a bug in encoding")

    monkeypatch.setattr(served.pings, "_encode", broken)
    await served.node.writer.append(tenant, create("banner", version(served, tenant)))
    assert await stream.next(5.0) is None  # a clean end: the app reconnects (and re-fetches)
    monkeypatch.undo()
    again = await connect(served, key, {"Last-Event-ID": "0"})
    event = await again.next(5.0)
    assert event is not None and event["id"] == str(version(served, tenant))
    again.response.close()


async def test_closing_ends_every_stream_cleanly(cluster: LocalCluster, served: Served) -> None:
    tenant, key, _ = await setup_env(cluster, served, "sse-close")
    streams = [await connect(served, key) for _ in range(3)]
    await eventually(lambda: served.pings.clients(Scope(tenant, ENV)) == 3, 5.0, "the streams subscribed")
    await served.pings.close()  # what the app's shutdown does, before the server waits for handlers
    for stream in streams:
        assert await stream.next(3.0) is None  # the end of the chunked body, not a reset
    await eventually(lambda: served.pings.clients() == 0, 3.0, "handlers still hold channels")
