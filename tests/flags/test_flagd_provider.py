"""The real ``openfeature-sdk`` + ``openfeature-provider-flagd`` against our flagd
services, in RPC mode (evaluation v2 + EventStream) and IN_PROCESS mode (SyncFlags,
evaluated by openfeature-flagd-core), in one process.

The provider is synchronous (threads, blocking gRPC): every call into it runs in
a worker thread (``asyncio.to_thread``) while the servers run on the test's loop;
the flag log is appended on the loop (LiveFlags is single-threaded).
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import CacheType, ResolverType
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagEvaluationDetails, Reason

from flags.live import LiveFlags
from tests.flags.flagd_harness import FLAG_SET, STATIC_ANSWERS, FlagLog, Servers, flagd_servers

FLAG = {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"}
_domains = itertools.count()


@dataclass
class World:
    live: LiveFlags
    log: FlagLog
    key: str
    servers: Servers


@pytest.fixture
async def world() -> AsyncIterator[World]:
    live = LiveFlags()
    log = FlagLog(live)
    log.import_set("prod", FLAG_SET)
    key = log.issue_key("prod")
    async with flagd_servers(live, keep_alive_s=1.0, local_credentials=True) as servers:
        yield World(live, log, key, servers)


def port_of(target: str) -> int:
    return int(target.rpartition(":")[2])


def provider(mode: ResolverType, target: str, **options: Any) -> FlagdProvider:
    settings: dict[str, Any] = {
        "resolver_type": mode,
        "host": "127.0.0.1",
        "port": port_of(target),
        "deadline_ms": 2000,
        "retry_backoff_ms": 100,
        "retry_backoff_max_ms": 200,
        "retry_grace_period": 1,
        "fatal_status_codes": ["UNAUTHENTICATED", "PERMISSION_DENIED"],
    }
    settings.update(options)
    return FlagdProvider(**settings)


@dataclass
class Connected:
    client: OpenFeatureClient
    provider: FlagdProvider
    changes: list[list[str]]
    """flags_changed of every PROVIDER_CONFIGURATION_CHANGED event, in order."""
    init_error: Exception | None = None

    async def details(self, kind: str, flag: str, default: Any, ctx: EvaluationContext | None = None) -> Any:
        method: Callable[..., FlagEvaluationDetails[Any]] = getattr(self.client, f"get_{kind}_details")
        return await asyncio.to_thread(method, flag, default, ctx)


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[FlagdProvider], Any]]:
    started: list[FlagdProvider] = []

    async def start(flagd: FlagdProvider, refused: bool = False) -> Connected:
        domain = f"flagd-test-{next(_domains)}"
        changes: list[list[str]] = []
        lock = threading.Lock()

        def on_change(details: EventDetails) -> None:
            with lock:
                changes.append(list(details.flags_changed or ()))

        started.append(flagd)
        init_error: Exception | None = None
        try:
            await asyncio.to_thread(api.set_provider_and_wait, flagd, domain)
        except Exception as error:  # a refused key
            init_error = error
        assert (init_error is not None) == refused, init_error
        client = api.get_client(domain)
        client.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, on_change)
        return Connected(client, flagd, changes, init_error)

    yield start
    for flagd in started:
        await asyncio.to_thread(flagd.shutdown)


async def until(check: Callable[[], Any], timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not await asyncio.to_thread(check):
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def check_answers(connected: Connected) -> None:
    for kind, flag, default, value, variant, reason in STATIC_ANSWERS:
        details = await connected.details(kind, flag, default)
        assert details.error_code is None, (flag, details.error_message)
        assert (details.value, details.variant, details.reason) == (value, variant, reason), flag
        assert type(details.value) is type(value), flag
    ctx = EvaluationContext("u1", {"age": 30, "email": "me@example.com", "level": 2})
    assert (await connected.details("string", "adult", "x", ctx)).value == "adult"
    assert (
        await connected.details("string", "adult", "x", EvaluationContext("u1", {"age": 3}))
    ).value == "minor"
    assert (await connected.details("boolean", "email-domain", False, ctx)).value is True
    assert (await connected.details("string", "level-name", "x", ctx)).variant == "2"
    missing = await connected.details("boolean", "no-such-flag", False)
    assert (missing.value, missing.error_code) == (False, ErrorCode.FLAG_NOT_FOUND)
    mismatch = await connected.details("integer", "string-flag", 7)
    assert (mismatch.value, mismatch.error_code) == (7, ErrorCode.TYPE_MISMATCH)


async def test_rpc_mode_every_type(world: World, connect: Any) -> None:
    connected = await connect(provider(ResolverType.RPC, world.servers.eval_target, selector=world.key))
    await check_answers(connected)


async def test_in_process_mode_every_type_with_metadata(world: World, connect: Any) -> None:
    connected = await connect(
        provider(ResolverType.IN_PROCESS, world.servers.sync_target, selector=world.key)
    )
    await check_answers(connected)
    details = await connected.details("boolean", "with-metadata", False)
    assert details.flag_metadata == {
        "flagSetId": "test-set",
        "version": "7",
        "owner": "team-a",
        "ticket": 42,
        "beta": True,
        "ratio": 0.5,
    }


async def test_fractional_agrees_between_server_and_in_process(world: World, connect: Any) -> None:
    rpc = await connect(
        provider(ResolverType.RPC, world.servers.eval_target, selector=world.key, cache=CacheType.DISABLED)
    )
    local = await connect(provider(ResolverType.IN_PROCESS, world.servers.sync_target, selector=world.key))

    def answers(connected: Connected) -> list[tuple[Any, ...]]:
        out = []
        for n in range(150):
            ctx = EvaluationContext(f"user-{n}", {"age": 20 + n % 7})
            split = connected.client.get_string_details("split", "x", ctx)
            by_age = connected.client.get_integer_details("split-by-age", 0, ctx)
            out.append((split.variant, split.reason, by_age.value, by_age.variant))
        return out

    served, in_process = await asyncio.gather(
        asyncio.to_thread(answers, rpc), asyncio.to_thread(answers, local)
    )
    assert served == in_process
    assert {row[0] for row in served} == {"red", "green", "blue"} and {row[3] for row in served} == {"a", "b"}


async def test_rpc_configuration_change_drops_the_cached_value(world: World, connect: Any) -> None:
    connected = await connect(provider(ResolverType.RPC, world.servers.eval_target, selector=world.key))
    first = await connected.details("boolean", "bool-flag", False)
    again = await connected.details("boolean", "bool-flag", False)
    assert (first.value, again.value, again.reason) == (True, True, Reason.CACHED)
    world.log.put("prod", "bool-flag", FLAG | {"defaultVariant": "off"})
    await until(lambda: connected.client.get_boolean_value("bool-flag", True) is False)
    assert ["bool-flag"] in connected.changes


async def test_in_process_gets_a_new_snapshot(world: World, connect: Any) -> None:
    connected = await connect(
        provider(ResolverType.IN_PROCESS, world.servers.sync_target, selector=world.key)
    )
    world.log.put("prod", "bool-flag", FLAG | {"defaultVariant": "off"})
    world.log.put("prod", "added-later", FLAG)
    await until(lambda: connected.client.get_boolean_value("added-later", False) is True)
    assert (await connected.details("boolean", "bool-flag", True)).value is False
    assert any("added-later" in changed for changed in connected.changes)


@pytest.mark.parametrize("mode", [ResolverType.RPC, ResolverType.IN_PROCESS])
async def test_bearer_key_through_channel_credentials(world: World, connect: Any, mode: ResolverType) -> None:
    credentials = grpc.composite_channel_credentials(
        grpc.local_channel_credentials(grpc.LocalConnectionType.LOCAL_TCP),
        grpc.access_token_call_credentials(world.key),
    )
    target = world.servers.local_eval_target if mode is ResolverType.RPC else world.servers.local_sync_target
    connected = await connect(provider(mode, target, channel_credentials=credentials))
    assert (await connected.details("integer", "int-flag", 0)).value == 9007199254740991


@pytest.mark.parametrize("mode", [ResolverType.RPC, ResolverType.IN_PROCESS])
@pytest.mark.parametrize("key", ["missing", "wrong", "revoked"])
async def test_missing_or_wrong_key_is_refused(
    world: World, connect: Any, mode: ResolverType, key: str
) -> None:
    selector: str | None = None
    if key == "wrong":
        selector = world.key[:-4] + ("AAAA" if not world.key.endswith("AAAA") else "BBBB")
    elif key == "revoked":
        world.log.revoke(world.key, "prod")
        selector = world.key
    target = world.servers.eval_target if mode is ResolverType.RPC else world.servers.sync_target
    connected = await connect(provider(mode, target, selector=selector), refused=True)
    details = await connected.details("boolean", "bool-flag", False)
    assert details.value is False
    assert details.error_code in (ErrorCode.PROVIDER_FATAL, ErrorCode.PROVIDER_NOT_READY), details
