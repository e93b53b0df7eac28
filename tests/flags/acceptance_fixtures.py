"""Shared tools of the flag service's acceptance tests (issue 16, "Acceptance"):
a real 3-node cluster with a flag server *process* on it (``Stack``), tenants
made through the cluster's admin API and driven through the flag server's
admin API (``TenantFlags``, a synchronous ``raftlog.flags.v1`` client), and
the real ``openfeature-sdk`` + ``openfeature-provider-flagd`` connected in
RPC or IN_PROCESS mode (``Providers.connect``), with every provider event recorded.

Everything here is synchronous, as the provider is (it runs its own
threads): a test never needs an event loop; the few asyncio SDK calls
(tenant creation, topic description, reading the log) run in
``asyncio.run``.

Invariants:

- Each test module owns one ``Stack`` (its own cluster and flag server):
  the failover module kills nodes and flag servers, the others must not
  see that. Each test makes its own tenant (``Stack.new_tenant``), so
  tests never see each other's flags or keys.
- Providers are configured with short deadlines and backoffs
  (``PROVIDER_OPTIONS``) and shut down at the end of the test that made
  them (``Providers``), so no thread of one test talks to the next.
- ``SITE_DIR_ENV``: when set, the flag server runs that directory's
  ``sitecustomize.py`` before anything else (it is put first on the
  server's ``PYTHONPATH``, and on nothing else's). That is how each test
  here was seen failing against a server broken on purpose, without
  editing the server's files; unset, the server runs as shipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagEvaluationDetails, Reason
from openfeature.provider import ProviderStatus

from client.admin import Admin
from client.consumer import Consumer, FetchMode, OffsetReset
from client.fetcher import ConsumerRecord
from flags.live import FLAGS_TOPIC
from harness.flag_server import FlagServerProcess
from harness.local_cluster import LocalCluster
from raftlog.flags.v1 import flags_pb2, flags_pb2_grpc
from tests.flags.environment_support import environment
from tests.flags.flagd_harness import EDGE_FLAGS, STATIC_ANSWERS, TYPED_FLAGS

ENV = "production"
SITE_DIR_ENV = "RAFTLOG_ACCEPTANCE_SERVER_SITE_DIR"
CALL_TIMEOUT_S = 20.0

PROVIDER_OPTIONS: dict[str, Any] = {
    "host": "127.0.0.1",
    "deadline_ms": 3000,
    "retry_backoff_ms": 100,
    "retry_backoff_max_ms": 300,
    "retry_grace_period": 1,
    # Refusals end the provider at once (PROVIDER_FATAL) instead of retrying
    # to its deadline: the server must answer them with these codes.
    "fatal_status_codes": ["UNAUTHENTICATED", "PERMISSION_DENIED"],
}

# Every variant type with its zero value as a real variant, targeting (with
# $evaluators/$ref and flagd's operators), fractional splits, a disabled
# flag, a flag without a default variant, flag and flag-set metadata (the
# protocol tests' typed and edge flags, tests/flags/flagd_harness.py, plus these).
FLAG_SET: dict[str, Any] = {
    "$evaluators": {"is-staff": {"ends_with": [{"var": "email"}, "@acme.example"]}},
    "flags": TYPED_FLAGS
    | {
        "staff": {
            "state": "ENABLED",
            "variants": {"yes": True, "no": False},
            "defaultVariant": "no",
            "targeting": {"if": [{"$ref": "is-staff"}, "yes", None]},
        },
        "by-age": {
            "state": "ENABLED",
            "variants": {"adult": "adult", "minor": "minor"},
            "defaultVariant": "minor",
            "targeting": {"if": [{">=": [{"var": "age"}, 18]}, "adult", "minor"]},
        },
        "by-version": {
            "state": "ENABLED",
            "variants": {"new": 2, "old": 1},
            "defaultVariant": "old",
            "targeting": {"if": [{"sem_ver": [{"var": "app"}, ">=", "2.1.0"]}, "new", "old"]},
        },
        "by-key": {
            "state": "ENABLED",
            "variants": {"vip": 1.5, "normal": 0.0},
            "defaultVariant": "normal",
            "targeting": {"if": [{"starts_with": [{"var": "targetingKey"}, "vip-"]}, "vip", "normal"]},
        },
        "split-by-plan": {
            "state": "ENABLED",
            "variants": {"a": 1, "b": 2},
            "defaultVariant": "a",
            "targeting": {
                "fractional": [{"cat": [{"var": "plan"}, "-", {"var": "targetingKey"}]}, ["a", 1], ["b", 1]]
            },
        },
    }
    | EDGE_FLAGS,
    "metadata": {"flagSetId": "acceptance", "version": "7"},
}

# kind, flag, default, context, (value, variant, reason)
TARGETED_ANSWERS: list[tuple[str, str, Any, EvaluationContext, Any, str, str]] = [
    (
        "boolean",
        "staff",
        False,
        EvaluationContext("u1", {"email": "ann@acme.example"}),
        True,
        "yes",
        "TARGETING_MATCH",
    ),
    (
        "boolean",
        "staff",
        True,
        EvaluationContext("u1", {"email": "ann@other.example"}),
        False,
        "no",
        "DEFAULT",
    ),
    ("string", "by-age", "x", EvaluationContext("u1", {"age": 30}), "adult", "adult", "TARGETING_MATCH"),
    ("string", "by-age", "x", EvaluationContext("u1", {"age": 3}), "minor", "minor", "TARGETING_MATCH"),
    ("integer", "by-version", 0, EvaluationContext("u1", {"app": "2.3.1"}), 2, "new", "TARGETING_MATCH"),
    ("integer", "by-version", 0, EvaluationContext("u1", {"app": "2.0.9"}), 1, "old", "TARGETING_MATCH"),
    ("float", "by-key", 9.0, EvaluationContext("vip-7", {}), 1.5, "vip", "TARGETING_MATCH"),
    ("float", "by-key", 9.0, EvaluationContext("joe", {}), 0.0, "normal", "TARGETING_MATCH"),
]

FLAG_METADATA = {"owner": "team-a", "ticket": 42, "beta": True, "ratio": 0.5}
SET_METADATA = {"flagSetId": "acceptance", "version": "7"}


def bool_flag(default: str) -> dict[str, Any]:
    return {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": default}


def string_flag(value: str) -> dict[str, Any]:
    return {"state": "ENABLED", "variants": {"v": value}, "defaultVariant": "v"}


def until(check: Callable[[], Any], timeout_s: float = 10.0, what: str = "condition") -> None:
    """Poll ``check`` until it holds; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what}: not reached in {timeout_s} s"
        time.sleep(0.02)


# --- the flag server's admin API, synchronous -------------------------------------------


class FlagAdminError(Exception):
    def __init__(self, error: grpc.RpcError) -> None:
        self.code: grpc.StatusCode = error.code()
        self.details: str = error.details() or ""
        super().__init__(f"{self.code.name}: {self.details}")


@dataclass
class TenantFlags:
    """One tenant as its owner sees the flag server: its cluster API key on
    the admin API (``authorization: Bearer rlk_...``)."""

    tenant: str
    api_key: str
    address: str
    _channel: grpc.Channel | None = None

    def _stub(self) -> flags_pb2_grpc.FlagAdminServiceStub:
        if self._channel is None:
            self._channel = grpc.insecure_channel(self.address)
        return flags_pb2_grpc.FlagAdminServiceStub(self._channel)

    def call(self, method: str, request: Any, timeout_s: float = CALL_TIMEOUT_S) -> Any:
        try:
            return getattr(self._stub(), method)(
                request, metadata=(("authorization", f"Bearer {self.api_key}"),), timeout=timeout_s
            )
        except grpc.RpcError as error:
            raise FlagAdminError(error) from None

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def create_env(self, env: str = ENV) -> None:
        self.call("CreateEnvironment", flags_pb2.CreateEnvironmentRequest(name=env))

    def import_flags(self, document: dict[str, Any], env: str = ENV) -> int:
        answer = self.call(
            "ImportFlags", flags_pb2.ImportFlagsRequest(environment=env, flags_json=json.dumps(document))
        )
        return int(answer.version)

    def put_flag(
        self, flag: str, definition: dict[str, Any], env: str = ENV, timeout_s: float = CALL_TIMEOUT_S
    ) -> int:
        request = flags_pb2.PutFlagRequest(environment=env, flag=flag, definition_json=json.dumps(definition))
        return int(self.call("PutFlag", request, timeout_s).version)

    def set_enabled(self, flag: str, enabled: bool, env: str = ENV) -> None:
        self.call("SetFlagState", flags_pb2.SetFlagStateRequest(environment=env, flag=flag, enabled=enabled))

    def delete_flag(self, flag: str, env: str = ENV) -> None:
        self.call("DeleteFlag", flags_pb2.DeleteFlagRequest(environment=env, flag=flag))

    def get_flag(self, flag: str, env: str = ENV) -> Any:
        return self.call("GetFlag", flags_pb2.GetFlagRequest(environment=env, flag=flag)).flag

    def create_sdk_key(self, env: str = ENV) -> tuple[str, str]:
        """A new SDK key: (clear key, key id)."""
        answer = self.call("CreateSdkKey", flags_pb2.CreateSdkKeyRequest(environment=env, name="acceptance"))
        return str(answer.clear_key), str(answer.key.key_id)

    def revoke_sdk_key(self, key_id: str) -> None:
        self.call("RevokeSdkKey", flags_pb2.RevokeSdkKeyRequest(key_id=key_id))

    def history(self, flag: str = "", env: str = ENV) -> list[Any]:
        """Every history entry, oldest first."""
        entries: list[Any] = []
        token = ""
        while True:
            request = flags_pb2.GetHistoryRequest(
                environment=env, flag=flag, page_size=1000, page_token=token
            )
            answer = self.call("GetHistory", request)
            entries.extend(answer.entries)
            token = answer.next_page_token
            if not token:
                return entries[::-1]


# --- the stack: a cluster and a flag server process -------------------------------------


@dataclass
class Stack:
    cluster: LocalCluster
    server: FlagServerProcess
    root: Path
    site_dir: Path | None = None
    """First on the flag server's ``PYTHONPATH`` (``SITE_DIR_ENV``)."""
    _tenants: itertools.count[int] = field(default_factory=itertools.count)
    _admins: list[TenantFlags] = field(default_factory=list)

    @property
    def bootstrap(self) -> list[str]:
        return list(self.cluster.addresses.values())

    def _server_environment(self) -> contextlib.AbstractContextManager[None]:
        if self.site_dir is None:
            return contextlib.nullcontext()
        return environment({"PYTHONPATH": str(self.site_dir)})

    def start_server(self) -> None:
        with self._server_environment():
            self.server.start()

    def restart_server(self, *, kill: bool = False) -> None:
        with self._server_environment():
            self.server.restart(kill=kill)

    def new_tenant(self, prefix: str = "t") -> TenantFlags:
        """A fresh tenant of the cluster, with its first API key, on the flag server."""
        name = f"{prefix}-{next(self._tenants)}"

        async def create() -> str:
            async with Admin(self.bootstrap, api_key=self.cluster.api_key) as admin:
                return str((await admin.create_tenant(name)).api_key.clear_text)

        tenant = TenantFlags(name, asyncio.run(create()), self.server.eval_address)
        self._admins.append(tenant)
        return tenant

    def tenant_with_flags(
        self, prefix: str = "t", document: dict[str, Any] | None = None
    ) -> tuple[TenantFlags, str]:
        """A new tenant whose ``ENV`` holds ``document`` (``FLAG_SET``), and an SDK key for it."""
        tenant = self.new_tenant(prefix)
        tenant.create_env()
        tenant.import_flags(FLAG_SET if document is None else document)
        key, _ = tenant.create_sdk_key()
        return tenant, key

    def partition_leader(self, tenant: str) -> int:
        """The node leading ``tenant``'s flags partition (0: none known)."""

        async def describe() -> int:
            async with Admin(self.bootstrap, api_key=self.cluster.api_key, tenant=tenant) as admin:
                topic = await admin.describe_topic(FLAGS_TOPIC)
            return int(topic.assignments[0].leader)

        return asyncio.run(describe())

    def read_log(self, tenant: str) -> list[ConsumerRecord]:
        """Every record of ``tenant``'s flags topic, straight from the cluster."""

        async def read() -> list[ConsumerRecord]:
            tp = (FLAGS_TOPIC, 0)
            consumer = Consumer(
                self.bootstrap,
                api_key=self.cluster.api_key,
                tenant=tenant,
                fetch_mode=FetchMode.POLL,
                fetch_max_wait_ms=100,
                auto_offset_reset=OffsetReset.EARLIEST,
            )
            async with consumer:
                consumer.assign([tp])
                await consumer.seek_to_end(tp)
                end = consumer.position(tp) or 0
                consumer.seek(*tp, 0)
                records: list[ConsumerRecord] = []
                deadline = time.monotonic() + CALL_TIMEOUT_S
                while (consumer.position(tp) or 0) < end:
                    assert time.monotonic() < deadline, f"{tenant}: read {len(records)} records, end {end}"
                    records.extend(await consumer.poll(1.0))
                return records

        return asyncio.run(read())

    def close(self) -> None:
        for tenant in self._admins:
            tenant.close()
        self.server.close()
        self.cluster.close()


@contextlib.contextmanager
def running_stack(root: Path) -> Iterator[Stack]:
    """A 3-node cluster and a flag server on it, ready; closed on the way out."""
    site_dir = Path(os.environ[SITE_DIR_ENV]) if os.environ.get(SITE_DIR_ENV) else None
    cluster = LocalCluster(root / "cluster", topics=())
    server = FlagServerProcess(root / "flag-server", [], cluster.api_key)
    stack = Stack(cluster, server, root, site_dir)
    try:
        cluster.start_all()
        server.bootstrap = ",".join(stack.bootstrap)
        stack.start_server()
        yield stack
    finally:
        stack.close()


# --- the real OpenFeature provider ------------------------------------------------------

_domains = itertools.count()


def port_of(address: str) -> int:
    return int(address.rpartition(":")[2])


def bearer_credentials(key: str) -> grpc.ChannelCredentials:
    """The SDK key as ``authorization: Bearer`` (gRPC sends call credentials
    only on secure channels: local credentials count as one on loopback)."""
    return grpc.composite_channel_credentials(
        grpc.local_channel_credentials(), grpc.access_token_call_credentials(key)
    )


@dataclass
class Connected:
    """One provider behind its own OpenFeature domain, with its events."""

    client: OpenFeatureClient
    provider: FlagdProvider
    init_error: Exception | None
    events: list[tuple[ProviderEvent, EventDetails]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, kind: ProviderEvent) -> Callable[[EventDetails], None]:
        def handler(details: EventDetails) -> None:
            with self.lock:
                self.events.append((kind, details))

        return handler

    def seen(self, kind: ProviderEvent) -> list[EventDetails]:
        with self.lock:
            return [details for event, details in self.events if event is kind]

    def changed_keys(self) -> list[str]:
        return [
            key
            for details in self.seen(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
            for key in details.flags_changed or ()
        ]

    def details(
        self, kind: str, flag: str, default: Any, ctx: EvaluationContext | None = None
    ) -> FlagEvaluationDetails[Any]:
        method: Callable[..., FlagEvaluationDetails[Any]] = getattr(self.client, f"get_{kind}_details")
        return method(flag, default, ctx)


class Providers:
    """Connects providers and shuts every one down at the end (``close``)."""

    def __init__(self) -> None:
        self.started: list[FlagdProvider] = []

    def connect(
        self, mode: ResolverType, address: str, *, expect_ready: bool = True, **options: Any
    ) -> Connected:
        settings = PROVIDER_OPTIONS | {"resolver_type": mode, "port": port_of(address)} | options
        provider = FlagdProvider(**settings)
        self.started.append(provider)
        domain = f"acceptance-{next(_domains)}"
        init_error: Exception | None = None
        try:
            api.set_provider_and_wait(provider, domain)
        except Exception as error:  # a refused key ends initialisation with an error
            init_error = error
        assert (init_error is None) == expect_ready, f"init error: {init_error!r}"
        connected = Connected(api.get_client(domain), provider, init_error)
        for kind in (
            ProviderEvent.PROVIDER_READY,
            ProviderEvent.PROVIDER_ERROR,
            ProviderEvent.PROVIDER_STALE,
            ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
        ):
            connected.client.add_handler(kind, connected.record(kind))
        return connected

    def close(self) -> None:
        for provider in self.started:
            provider.shutdown()
        self.started.clear()


def check_every_type(connected: Connected) -> None:
    """Every type and zero value, disabled, no default, missing flag, wrong type."""
    for kind, flag, default, value, variant, reason in STATIC_ANSWERS:
        got = connected.details(kind, flag, default)
        assert got.error_code is None, (flag, got.error_code, got.error_message)
        assert (got.value, got.variant, got.reason) == (value, variant, reason), flag
        assert type(got.value) is type(value), (flag, got.value)
    missing = connected.details("boolean", "no-such-flag", True)
    assert (missing.value, missing.error_code) == (True, ErrorCode.FLAG_NOT_FOUND)
    mismatch = connected.details("integer", "string-flag", 7)
    assert (mismatch.value, mismatch.error_code) == (7, ErrorCode.TYPE_MISMATCH)


def check_targeting(connected: Connected) -> None:
    for kind, flag, default, ctx, value, variant, reason in TARGETED_ANSWERS:
        got = connected.details(kind, flag, default, ctx)
        assert got.error_code is None, (flag, got.error_code, got.error_message)
        assert (got.value, got.variant, got.reason) == (value, variant, reason), (flag, ctx)
        assert type(got.value) is type(value), (flag, got.value)


def fractional_answers(connected: Connected, keys: int = 300) -> list[tuple[Any, ...]]:
    """Both split flags for ``keys`` targeting keys: (variant, reason, value) each."""
    out: list[tuple[Any, ...]] = []
    for n in range(keys):
        ctx = EvaluationContext(f"user-{n}", {"plan": ("free", "pro", "team")[n % 3]})
        split = connected.details("string", "split", "x", ctx)
        by_plan = connected.details("integer", "split-by-plan", 0, ctx)
        out.append((split.variant, split.reason, split.value, by_plan.variant, by_plan.value))
    return out


BAD_KEYS = ("missing", "wrong secret", "revoked", "cluster api key", "spliced")


def bad_key(how: str, tenant: TenantFlags, key: str, other_key: str) -> str | None:
    """A selector the server must refuse (``how``: one of ``BAD_KEYS``);
    ``key`` is ``tenant``'s SDK key, ``other_key`` another tenant's."""
    if how == "missing":
        return None
    if how == "wrong secret":
        return key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    if how == "revoked":
        fresh, fresh_id = tenant.create_sdk_key()
        tenant.revoke_sdk_key(fresh_id)
        return fresh
    if how == "cluster api key":
        return tenant.api_key
    assert how == "spliced", how  # this tenant's key id with the other tenant's secret
    return key.rsplit("_", 1)[0] + "_" + other_key.rsplit("_", 1)[1]


def refused(connected: Connected) -> None:
    """The provider reports an error, never a value: the server refused the key
    with a status the provider treats as final."""
    assert connected.init_error is not None
    assert connected.client.get_provider_status() is ProviderStatus.FATAL
    got = connected.details("boolean", "bool-flag", False)
    assert got.value is False and got.reason == Reason.ERROR, got
    assert got.error_code == ErrorCode.PROVIDER_FATAL, (got.error_code, got.error_message)
