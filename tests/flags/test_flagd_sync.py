"""flagd.sync.v1.FlagSyncService over gRPC (flags/flagd_sync.py): full documents on
connect and per change, the empty set for a deleted environment, FetchAllFlags,
GetMetadata, SDK keys and stream clean-up."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from openfeature.schemas.protobuf.flagd.sync.v1 import sync_pb2, sync_pb2_grpc

from flags.live import LiveFlags, Scope
from tests.flags.flagd_harness import FLAG_SET, FlagLog, Servers, bearer, eventually, flagd_servers, selector

SCOPE = Scope("acme", "prod")
FLAG = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off"}


@dataclass
class Setup:
    live: LiveFlags
    log: FlagLog
    key: str
    servers: Servers
    stub: Any


@pytest.fixture
async def setup() -> AsyncIterator[Setup]:
    live = LiveFlags()
    log = FlagLog(live)
    log.import_set("prod", FLAG_SET)
    key = log.issue_key("prod")
    async with (
        flagd_servers(live) as servers,
        grpc.aio.insecure_channel(servers.sync_target) as channel,
    ):
        yield Setup(live, log, key, servers, sync_pb2_grpc.FlagSyncServiceStub(channel))


async def next_document(stream: Any, timeout_s: float = 2.0) -> dict[str, Any]:
    response = await asyncio.wait_for(stream.read(), timeout_s)
    assert response is not grpc.aio.EOF
    document: dict[str, Any] = json.loads(response.flag_configuration)
    return document


async def nothing_more(stream: Any) -> None:
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(stream.read(), 0.2)


async def test_full_document_on_connect_and_on_every_change(setup: Setup) -> None:
    stream = setup.stub.SyncFlags(sync_pb2.SyncFlagsRequest(), metadata=selector(setup.key))
    first = await next_document(stream)
    assert first == json.loads(setup.live.serving(SCOPE).configuration)  # type: ignore[union-attr]
    assert set(first["flags"]) == set(FLAG_SET["flags"]) and first["metadata"] == FLAG_SET["metadata"]
    setup.log.put("prod", "new-flag", FLAG)
    second = await next_document(stream)
    assert second["flags"]["new-flag"] == FLAG | {"targeting": {}}
    assert set(second["flags"]) == set(first["flags"]) | {"new-flag"}  # never a delta
    setup.log.delete_flag("prod", "bool-flag")
    third = await next_document(stream)
    assert "bool-flag" not in third["flags"] and "new-flag" in third["flags"]
    # Another environment's change sends nothing.
    setup.log.import_set("staging", {"flags": {"x": FLAG}})
    await nothing_more(stream)
    stream.cancel()
    await eventually(lambda: setup.live.watcher_count(SCOPE) == 0)


async def test_changes_coalesce_into_the_latest_document(setup: Setup) -> None:
    stream = setup.stub.SyncFlags(sync_pb2.SyncFlagsRequest(), metadata=bearer(setup.key))
    await next_document(stream)
    for n in range(5):  # applied back to back: the stream wakes once
        setup.log.put("prod", f"f{n}", FLAG)
    latest = await next_document(stream)
    assert {f"f{n}" for n in range(5)} <= set(latest["flags"])
    await nothing_more(stream)
    stream.cancel()


async def test_deleted_environment_is_the_empty_set_and_comes_back(setup: Setup) -> None:
    stream = setup.stub.SyncFlags(sync_pb2.SyncFlagsRequest(), metadata=bearer(setup.key))
    await next_document(stream)
    setup.log.delete_env("prod")
    assert await next_document(stream) == {"flags": {}}  # a valid flags.json the provider loads
    setup.log.import_set("prod", {"flags": {"back": FLAG}})
    assert set((await next_document(stream))["flags"]) == {"back"}
    stream.cancel()


async def test_selector_in_the_body_and_fetch_all_flags(setup: Setup) -> None:
    stream = setup.stub.SyncFlags(sync_pb2.SyncFlagsRequest(selector=setup.key, provider_id="p"))
    assert set((await next_document(stream))["flags"]) == set(FLAG_SET["flags"])
    stream.cancel()
    fetched = await setup.stub.FetchAllFlags(sync_pb2.FetchAllFlagsRequest(selector=setup.key))
    assert fetched.flag_configuration == setup.live.serving(SCOPE).configuration  # type: ignore[union-attr]
    fetched = await setup.stub.FetchAllFlags(sync_pb2.FetchAllFlagsRequest(), metadata=bearer(setup.key))
    assert json.loads(fetched.flag_configuration)["metadata"] == FLAG_SET["metadata"]
    # The header wins over the body: a wrong body selector beside a good header key is not consulted.
    fetched = await setup.stub.FetchAllFlags(
        sync_pb2.FetchAllFlagsRequest(selector="rlf_nonsense"), metadata=selector(setup.key)
    )
    assert fetched.flag_configuration


async def test_get_metadata_is_unimplemented_without_any_header(setup: Setup) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await setup.stub.GetMetadata(sync_pb2.GetMetadataRequest())
    assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED


@pytest.mark.parametrize(
    ("how", "code"),
    [
        ("none", grpc.StatusCode.UNAUTHENTICATED),
        ("env-name-only", grpc.StatusCode.UNAUTHENTICATED),
        ("revoked", grpc.StatusCode.UNAUTHENTICATED),
        ("other-env-selector", grpc.StatusCode.PERMISSION_DENIED),
        ("not-ready", grpc.StatusCode.UNAVAILABLE),
    ],
)
async def test_refusals(setup: Setup, how: str, code: grpc.StatusCode) -> None:
    metadata: Any = ()
    body = ""
    if how == "env-name-only":
        body = "prod"
    elif how == "revoked":
        setup.log.revoke(setup.key, "prod")
        metadata = bearer(setup.key)
    elif how == "other-env-selector":
        metadata = bearer(setup.key)
        body = "staging"
    elif how == "not-ready":
        setup.servers.ready.ready = False
        metadata = bearer(setup.key)
    stream = setup.stub.SyncFlags(sync_pb2.SyncFlagsRequest(selector=body), metadata=metadata)
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stream.read()
    assert caught.value.code() == code
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await setup.stub.FetchAllFlags(sync_pb2.FetchAllFlagsRequest(selector=body), metadata=metadata)
    assert caught.value.code() == code
    assert setup.live.watcher_count(SCOPE) == 0


async def test_revoking_the_key_ends_the_stream(setup: Setup) -> None:
    stream = setup.stub.SyncFlags(sync_pb2.SyncFlagsRequest(), metadata=bearer(setup.key))
    await next_document(stream)
    setup.log.revoke(setup.key, "prod")
    setup.log.put("prod", "after-revoke", FLAG)  # the next change of the environment wakes the stream
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await next_document(stream)
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    await eventually(lambda: setup.live.watcher_count(SCOPE) == 0)


async def test_many_streams_release_their_watchers(setup: Setup) -> None:
    streams = [
        setup.stub.SyncFlags(sync_pb2.SyncFlagsRequest(), metadata=bearer(setup.key)) for _ in range(20)
    ]
    for stream in streams:
        await next_document(stream)
    assert setup.live.watcher_count(SCOPE) == 20
    setup.log.put("prod", "fan-out", FLAG)
    for stream in streams:
        assert "fan-out" in (await next_document(stream))["flags"]
    for stream in streams:
        stream.cancel()
    await eventually(lambda: setup.live.watcher_count(SCOPE) == 0)


async def test_revoking_the_key_alone_ends_its_streams_at_once(setup: Setup) -> None:
    # SyncFlags has no keep-alive: without the revoke waking the streams, they would
    # stay open until the environment's next change.
    other = setup.log.issue_key("prod")
    ending = [
        setup.stub.SyncFlags(sync_pb2.SyncFlagsRequest(), metadata=bearer(setup.key)),
        setup.stub.SyncFlags(sync_pb2.SyncFlagsRequest(selector=setup.key)),
    ]
    staying = setup.stub.SyncFlags(sync_pb2.SyncFlagsRequest(), metadata=bearer(other))
    for stream in (*ending, staying):
        await next_document(stream)
    setup.log.revoke(setup.key, "prod")
    for stream in ending:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await next_document(stream, timeout_s=1.0)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    setup.log.put("prod", "after", FLAG)
    # Re-checked at the revoke with the document unchanged: nothing was sent then.
    assert "after" in (await next_document(staying))["flags"]
    assert setup.live.watcher_count(SCOPE) == 1
    staying.cancel()


async def test_one_encoded_document_per_version_for_every_stream(setup: Setup) -> None:
    streams = [
        setup.stub.SyncFlags(sync_pb2.SyncFlagsRequest(), metadata=bearer(setup.key)) for _ in range(6)
    ]
    for stream in streams:
        await next_document(stream)
    for n in range(4):
        setup.log.put("prod", "counter", FLAG | {"defaultVariant": "on" if n % 2 else "off"})
        expected = json.loads(setup.live.serving(SCOPE).configuration)  # type: ignore[union-attr]
        for stream in streams:
            assert await next_document(stream) == expected  # the latest version, never an older one
    for stream in streams:
        stream.cancel()
