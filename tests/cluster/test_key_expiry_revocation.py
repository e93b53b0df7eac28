"""Key expiry and revocation at the front door (cluster/frontend/auth.py,
front_door.confirm_caller, log_service's waits): an expired key is
``UNAUTHENTICATED API_KEY_EXPIRED`` saying when and what to do; a revoked
key ends a call in progress — an idle ``StreamFetch``, a long-poll
``Fetch`` — as soon as the node's metadata changes (metadata_watch.py), an
expired one within ``CALLER_CHECK_S``, without the catch-up wait a new call
gets. (Revocation on a real 3-node cluster:
tests/integration/test_key_revocation.py.)

No assertion here is a wall-clock window a loaded machine could miss: the
periods under test are set far apart (a 30 s catch-up wait or check period
against a 5 s bound for what must happen without it), waits are shown by a
call still pending and then completed by the event it waited for, and the
one deadline is checked from below (never answered early).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import cast

import grpc
import pytest

from client.auth import call_metadata
from cluster.controller import Principal
from cluster.controller_replica import ControllerReplica
from cluster.frontend import auth, log_service
from cluster.frontend.auth import Authenticator
from cluster.frontend.front_door import FrontDoor, acting_as, confirm_caller
from cluster.frontend.grpc_errors import ServiceError, error_info
from cluster.frontend.log_service import LogService
from partitions.replica import Replica
from raftlog.v1 import log_pb2, log_pb2_grpc
from tests.cluster.test_stream_fetch_service import GROUP, FakeReplica, _locate

pytestmark = pytest.mark.timeout(60)

KEY = "rlk_live"
EXPIRES_AT_MS = 1_800_000_000_000  # 2027-01-15T08:00:00Z


class Keys:
    """What Authenticator reads of a ControllerReplica: a key table that
    ``revoke`` changes the way an applied metadata entry does."""

    def __init__(self) -> None:
        self.keys = {KEY: Principal("k1", "acme", expires_at_ms=EXPIRES_AT_MS)}
        self.version = 0
        self._changed = asyncio.Event()
        self.state = self

    def authenticate(self, key: str) -> Principal | None:
        return self.keys.get(key)

    def tenant(self, name: str) -> object | None:
        return object()

    async def wait_changed(self, version: int, timeout: float | None = None) -> int:
        if self.version == version:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
        return self.version

    def revoke(self, key: str) -> None:
        del self.keys[key]
        self._bump()

    def add(self, key: str, principal: Principal) -> None:
        self.keys[key] = principal
        self._bump()

    def _bump(self) -> None:
        self.version += 1
        self._changed.set()


class Clock:
    def __init__(self) -> None:
        self.ms = EXPIRES_AT_MS - 60_000

    def __call__(self) -> int:
        return self.ms


class Context:
    def __init__(self, key: str) -> None:
        self._metadata = (("authorization", f"Bearer {key}"),)

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata


def make_authenticator() -> tuple[Authenticator, Keys, Clock]:
    keys, clock = Keys(), Clock()
    return Authenticator(cast(ControllerReplica, keys), clock), keys, clock


async def refusal(authenticator: Authenticator, key: str = KEY) -> ServiceError:
    with pytest.raises(ServiceError) as caught:
        await authenticator.caller(cast(grpc.aio.ServicerContext, Context(key)))
    return caught.value


async def test_a_key_is_refused_from_its_expiry_on_saying_when_and_what_to_do() -> None:
    authenticator, keys, clock = make_authenticator()
    caller = await authenticator.caller(cast(grpc.aio.ServicerContext, Context(KEY)))
    assert caller.principal.key_id == "k1"
    clock.ms = EXPIRES_AT_MS - 1
    await authenticator.caller(cast(grpc.aio.ServicerContext, Context(KEY)))
    clock.ms = EXPIRES_AT_MS
    error = await refusal(authenticator)
    assert (error.code, error.info.reason) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_EXPIRED")
    assert "k1 expired at 2027-01-15T08:00:00Z" in error.info.message
    assert "use the key that replaced it" in error.info.message
    assert dict(error.info.metadata) == {"key_id": "k1", "expired_at_ms": str(EXPIRES_AT_MS)}
    # A key with no expiry never expires.
    keys.keys[KEY] = Principal("k1", "acme")
    clock.ms = 2**62
    await authenticator.caller(cast(grpc.aio.ServicerContext, Context(KEY)))


LONG_S = 30.0
"""A catch-up wait or check period that a test must not sit through."""
BOUND_S = 5.0
"""How long a test gives what must happen without such a wait."""


async def test_an_admitted_call_checking_again_is_refused_at_once_without_the_catch_up_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(auth, "CATCH_UP_S", LONG_S)
    authenticator, keys, _ = make_authenticator()
    context = cast(grpc.aio.ServicerContext, Context(KEY))
    admitted = await authenticator.caller(context)
    keys.revoke(KEY)
    with acting_as(admitted, authenticator.caller), pytest.raises(ServiceError) as caught:
        await asyncio.wait_for(confirm_caller(context), BOUND_S)  # not the 30 s catch-up wait
    assert caught.value.info.reason == "INVALID_API_KEY"


async def test_a_new_call_with_a_key_this_node_admitted_before_is_refused_at_once_once_revoked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(auth, "CATCH_UP_S", LONG_S)
    authenticator, keys, _ = make_authenticator()
    # Well-formed keys: the node remembers admitted keys by key id.
    admitted, unseen = (f"rlk_{key_id}_{'A' * 43}" for key_id in ("0123456789abcdef", "fedcba9876543210"))
    keys.keys[admitted] = Principal("0123456789abcdef", "acme")
    await authenticator.caller(cast(grpc.aio.ServicerContext, Context(admitted)))
    keys.revoke(admitted)
    refused = await asyncio.wait_for(refusal(authenticator, admitted), BOUND_S)  # no catch-up wait
    assert refused.info.reason == "INVALID_API_KEY"
    # A key it never admitted may be new (created a moment ago elsewhere):
    # the call waits for this node's metadata, and is admitted once it arrives.
    waiting = asyncio.ensure_future(authenticator.caller(cast(grpc.aio.ServicerContext, Context(unseen))))
    await asyncio.sleep(0.1)
    assert not waiting.done(), "an unknown key was refused without waiting for this node to catch up"
    keys.add(unseen, Principal("fedcba9876543210", "acme"))
    caller = await asyncio.wait_for(waiting, BOUND_S)
    assert caller.principal.key_id == "fedcba9876543210"


# --- calls in progress -----------------------------------------------------------------


@dataclass
class Served:
    keys: Keys
    clock: Clock
    replica: FakeReplica
    stub: log_pb2_grpc.LogServiceStub


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    authenticator, keys, clock = make_authenticator()
    replica = FakeReplica()
    service = LogService(
        _locate,
        lambda group: cast(Replica, replica) if group == GROUP else None,
        lambda group: 0,
        lambda node: "",
        metadata=keys,  # a revocation wakes waiting calls, as the node's controller does
    )
    server = grpc.aio.server(interceptors=[FrontDoor(authenticator.caller, lambda node: "")])
    log_pb2_grpc.add_LogServiceServicer_to_server(service, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Served(keys, clock, replica, log_pb2_grpc.LogServiceStub(channel))
    finally:
        await channel.close()
        await server.stop(grace=None)


async def ended_within(call: object, seconds: float) -> tuple[grpc.StatusCode, str]:
    """How (code, reason) a call in progress ended, which it must within
    ``seconds`` (else ``TimeoutError`` fails the test)."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await asyncio.wait_for(call, seconds)  # type: ignore[arg-type]
    info = error_info(caught.value)
    return caught.value.code(), info.reason if info else ""


async def read_to_end(
    call: grpc.aio.UnaryStreamCall[log_pb2.StreamFetchRequest, log_pb2.FetchResponse],
) -> None:
    while await call.read() is not grpc.aio.EOF:
        pass


AUTH = call_metadata(KEY, None)
STREAM = log_pb2.StreamFetchRequest(topic="t", partition=0)


async def test_a_revoked_key_ends_an_idle_stream_at_once(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_service, "CALLER_CHECK_S", LONG_S)  # only the metadata change can end it
    call = served.stub.StreamFetch(STREAM, metadata=AUTH)
    await call.read()  # open: the first response
    await asyncio.sleep(0.05)  # idle, waiting on commits
    served.keys.revoke(KEY)
    code, reason = await ended_within(read_to_end(call), BOUND_S)
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_API_KEY")


async def test_an_expiring_key_ends_an_idle_stream_at_its_next_check(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_service, "CALLER_CHECK_S", 0.05)
    call = served.stub.StreamFetch(STREAM, metadata=AUTH)
    await call.read()
    served.clock.ms = EXPIRES_AT_MS  # no metadata change: only time passes
    code, reason = await ended_within(read_to_end(call), BOUND_S)  # not MAX_WAIT_MS
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "API_KEY_EXPIRED")


async def test_a_revoked_key_ends_a_long_poll_fetch_at_once(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_service, "CALLER_CHECK_S", LONG_S)
    fetch = served.stub.Fetch(log_pb2.FetchRequest(topic="t", partition=0, max_wait_ms=20_000), metadata=AUTH)
    await asyncio.sleep(0.1)  # waiting for data
    served.keys.revoke(KEY)
    code, reason = await ended_within(fetch, BOUND_S)
    assert (code, reason) == (grpc.StatusCode.UNAUTHENTICATED, "INVALID_API_KEY")


async def test_a_long_poll_answers_data_as_it_commits_and_empty_only_at_its_deadline(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(log_service, "CALLER_CHECK_S", 0.05)
    fetch = served.stub.Fetch(log_pb2.FetchRequest(topic="t", partition=0, max_wait_ms=20_000), metadata=AUTH)
    await asyncio.sleep(0.3)  # several check periods pass without data
    assert not fetch.done(), "a check period answered the long poll early"
    monkeypatch.setattr(log_service, "CALLER_CHECK_S", LONG_S)  # from its next slice on, only data wakes it
    await asyncio.sleep(0.2)
    served.replica.append([b"late"])
    response = await asyncio.wait_for(fetch, BOUND_S)
    assert response.batches
    started = time.monotonic()
    empty = await asyncio.wait_for(
        served.stub.Fetch(
            log_pb2.FetchRequest(topic="t", partition=0, offset=1, max_wait_ms=1_200), metadata=AUTH
        ),
        1.2 + BOUND_S,
    )
    assert not empty.batches and time.monotonic() - started >= 1.19  # never before its deadline
