"""Test tools for the flagd protocol servers: a tenant's flag log fed straight into
``LiveFlags`` (no cluster), and the evaluation and sync services on an in-process
grpc.aio server on free loopback ports.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
from openfeature.flag_evaluation import Reason

from flags.changes import Change, Kind, encode
from flags.exposure_api import ExposureRecorder
from flags.flagd_evaluation import register_evaluation
from flags.flagd_sync import register_sync
from flags.live import LiveFlags
from flags.model import validate_flag, validate_flag_set
from flags.sdk_keys import issue_sdk_key, revoke_record

# Every variant type with its zero value as a real variant (by name: "-zero"
# flags default to it), read the same way by every protocol test.
TYPED_FLAGS: dict[str, Any] = {
    "bool-flag": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"},
    "bool-zero": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "off"},
    "string-flag": {"state": "ENABLED", "variants": {"a": "alpha", "none": ""}, "defaultVariant": "a"},
    "string-zero": {"state": "ENABLED", "variants": {"a": "alpha", "none": ""}, "defaultVariant": "none"},
    "int-flag": {
        "state": "ENABLED",
        "variants": {"big": 9007199254740991, "neg": -42, "zero": 0},
        "defaultVariant": "big",
    },
    "int-zero": {"state": "ENABLED", "variants": {"neg": -42, "zero": 0}, "defaultVariant": "zero"},
    "float-flag": {"state": "ENABLED", "variants": {"pi": 3.25, "zero": 0.0}, "defaultVariant": "pi"},
    "float-zero": {"state": "ENABLED", "variants": {"pi": 3.25, "zero": 0.0}, "defaultVariant": "zero"},
    "object-flag": {
        "state": "ENABLED",
        "variants": {"full": {"n": 1, "nested": {"list": [1, "x", True, None]}}, "empty": {}},
        "defaultVariant": "full",
    },
    "object-zero": {
        "state": "ENABLED",
        "variants": {"full": {"n": 1}, "empty": {}},
        "defaultVariant": "empty",
    },
}
# A fractional split, a disabled flag, a flag without a default variant and
# one with metadata of its own.
EDGE_FLAGS: dict[str, Any] = {
    "split": {
        "state": "ENABLED",
        "variants": {"red": "r", "green": "g", "blue": "b"},
        "defaultVariant": "red",
        "targeting": {"fractional": [["red", 50], ["green", 30], ["blue", 20]]},
    },
    "disabled": {"state": "DISABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"},
    "no-default": {"state": "ENABLED", "variants": {"x": "ex"}, "defaultVariant": None},
    "with-metadata": {
        "state": "ENABLED",
        "variants": {"on": True},
        "defaultVariant": "on",
        "metadata": {"owner": "team-a", "ticket": 42, "beta": True, "ratio": 0.5},
    },
}

# What an OpenFeature client answers for TYPED_FLAGS and for EDGE_FLAGS'
# disabled and no-default flags, in either provider mode (no context needed):
# (kind, flag, default, value, variant, reason); the default is the
# application's, so DISABLED and DEFAULT answers give it back with no variant.
STATIC_ANSWERS: list[tuple[str, str, Any, Any, str | None, str]] = [
    ("boolean", "bool-flag", False, True, "on", Reason.STATIC),
    ("boolean", "bool-zero", True, False, "off", Reason.STATIC),
    ("string", "string-flag", "dflt", "alpha", "a", Reason.STATIC),
    ("string", "string-zero", "dflt", "", "none", Reason.STATIC),
    ("integer", "int-flag", 1, 9007199254740991, "big", Reason.STATIC),
    ("integer", "int-zero", 1, 0, "zero", Reason.STATIC),
    ("float", "float-flag", 1.5, 3.25, "pi", Reason.STATIC),
    ("float", "float-zero", 1.5, 0.0, "zero", Reason.STATIC),
    (
        "object",
        "object-flag",
        {"d": 1},
        {"n": 1, "nested": {"list": [1, "x", True, None]}},
        "full",
        Reason.STATIC,
    ),
    ("object", "object-zero", {"d": 1}, {}, "empty", Reason.STATIC),
    ("boolean", "disabled", False, False, None, Reason.DISABLED),
    ("string", "no-default", "dflt", "dflt", None, Reason.DEFAULT),
]


# Every variant type, with zero values, targeting, fractional, disabled, no
# default variant and metadata: one set serves the protocol and provider tests.
FLAG_SET: dict[str, Any] = {
    "flags": TYPED_FLAGS
    | {
        "adult": {
            "state": "ENABLED",
            "variants": {"yes": "adult", "no": "minor"},
            "defaultVariant": "no",
            "targeting": {"if": [{">=": [{"var": "age"}, 18]}, "yes", None]},
        },
        "email-domain": {
            "state": "ENABLED",
            "variants": {"staff": True, "public": False},
            "defaultVariant": "public",
            "targeting": {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "staff", "public"]},
        },
        "level-name": {
            "state": "ENABLED",
            "variants": {"1": "one", "2": "two"},
            "defaultVariant": "1",
            # The context number names the variant: 2 must read "2", as in-process and in flagd.
            "targeting": {"var": "level"},
        },
        "split-by-age": {
            "state": "ENABLED",
            "variants": {"a": 1, "b": 2},
            "defaultVariant": "a",
            # Bucketing on a number from the context (a double on the wire).
            "targeting": {
                "fractional": [{"cat": [{"var": "age"}, "-", {"var": "targetingKey"}]}, ["a", 1], ["b", 1]]
            },
        },
    }
    | EDGE_FLAGS,
    "metadata": {"flagSetId": "test-set", "version": "7"},
}


@dataclass
class FlagLog:
    """One tenant's ``__flags`` topic, applied to ``live`` as it is appended."""

    live: LiveFlags
    tenant: str = "acme"
    offset: int = 0
    keys: dict[str, str] = field(default_factory=dict)
    """clear key -> key id."""

    def append(self, key: str, value: bytes | None) -> Any:
        result = self.live.apply(self.tenant, self.offset, key, value)
        self.offset += 1
        return result

    def change(self, change: Change) -> Any:
        return self.append(change.key, encode(change))

    def import_set(self, env: str, document: dict[str, Any]) -> Any:
        store = self.live.store
        expected = store.set_version(self.tenant, env)
        kind = (
            Kind.IMPORT
            if store.has_environment(self.tenant, env) or document.get("flags")
            else Kind.ENV_CREATE
        )
        definition = validate_flag_set(document) if kind is Kind.IMPORT else None
        return self.change(Change(kind, env, None, "tester", 1, expected, definition))

    def put(self, env: str, key: str, definition: dict[str, Any]) -> Any:
        expected = self.live.store.flag_version(self.tenant, env, key)
        exists = self.live.store.flag(self.tenant, env, key) is not None
        kind = Kind.UPDATE if exists else Kind.CREATE
        return self.change(Change(kind, env, key, "tester", 1, expected, validate_flag(key, definition)))

    def delete_flag(self, env: str, key: str) -> Any:
        expected = self.live.store.flag_version(self.tenant, env, key)
        return self.change(Change(Kind.DELETE, env, key, "tester", 1, expected))

    def delete_env(self, env: str) -> Any:
        expected = self.live.store.set_version(self.tenant, env)
        return self.change(Change(Kind.ENV_DELETE, env, None, "tester", 1, expected))

    def issue_key(self, env: str) -> str:
        issued = issue_sdk_key(env, f"{env} test key", "tester", 1)
        self.append(issued.record_key, issued.record_value)
        self.keys[issued.clear_key] = issued.key_id
        return issued.clear_key

    def revoke(self, clear_key: str, env: str) -> None:
        self.append(*revoke_record(self.keys[clear_key], env, "tester", 2))


@dataclass
class Ready:
    """A switchable ``is_ready``."""

    ready: bool = True

    def __call__(self) -> bool:
        return self.ready


@dataclass(frozen=True)
class Servers:
    eval_target: str
    sync_target: str
    ready: Ready
    local_eval_target: str = ""
    """The evaluation services again behind local credentials (Bearer keys from the provider)."""
    local_sync_target: str = ""


@contextlib.asynccontextmanager
async def flagd_servers(
    live: LiveFlags,
    *,
    keep_alive_s: float = 20.0,
    local_credentials: bool = False,
    exposures: ExposureRecorder | None = None,
) -> AsyncIterator[Servers]:
    """Evaluation and sync services of ``live`` on free 127.0.0.1 ports (separate servers, as deployed)."""
    ready = Ready()
    eval_server = grpc.aio.server()
    sync_server = grpc.aio.server()
    register_evaluation(eval_server, live, is_ready=ready, keep_alive_s=keep_alive_s, exposures=exposures)
    register_sync(sync_server, live, is_ready=ready)
    eval_port = eval_server.add_insecure_port("127.0.0.1:0")
    sync_port = sync_server.add_insecure_port("127.0.0.1:0")
    local_eval = local_sync = ""
    if local_credentials:
        # gRPC sends call credentials (the Bearer key) only over TLS or local credentials.
        creds = grpc.local_server_credentials(grpc.LocalConnectionType.LOCAL_TCP)
        local_eval = f"127.0.0.1:{eval_server.add_secure_port('127.0.0.1:0', creds)}"
        local_sync = f"127.0.0.1:{sync_server.add_secure_port('127.0.0.1:0', creds)}"
    await eval_server.start()
    await sync_server.start()
    try:
        yield Servers(f"127.0.0.1:{eval_port}", f"127.0.0.1:{sync_port}", ready, local_eval, local_sync)
    finally:
        await eval_server.stop(grace=None)
        await sync_server.stop(grace=None)


def bearer(key: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {key}"),)


def selector(value: str) -> tuple[tuple[str, str], ...]:
    return (("flagd-selector", value),)


async def eventually(check: Callable[[], bool], timeout_s: float = 2.0) -> None:
    """Wait until ``check()`` holds (polling the loop), else fail."""
    import asyncio

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not check():
        assert loop.time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)
