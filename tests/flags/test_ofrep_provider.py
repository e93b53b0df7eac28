"""The real OpenFeature OFREP provider (``openfeature-provider-ofrep``, which calls
the single-flag endpoint) against the OFREP app on a loopback port: every type
(float flags as floats), targeting, code defaults, metadata, a missing flag, a
change, refused keys, and 429 with Retry-After pausing the provider. The
provider is synchronous (``requests``): its calls run in a worker thread while
the app serves on the test's loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest
from aiohttp.test_utils import TestServer
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import FlagEvaluationDetails, Reason

from flags.live import LiveFlags
from flags.ofrep import OfrepLimits, ofrep_app
from flags.rate_limit import Rate
from flags.sdk_keys import KeyKind, issue_sdk_key
from tests.flags.flagd_harness import FLAG_SET, FlagLog

pytestmark = pytest.mark.timeout(60)

T = TypeVar("T")


@dataclass
class Remote:
    log: FlagLog
    url: str
    client_key: str

    def provider(self, key: str | None = None) -> OFREPProvider:
        sent = self.client_key if key is None else key
        return OFREPProvider(self.url, headers_factory=lambda: {"Authorization": f"Bearer {sent}"}, timeout=5)


async def in_thread(call: Callable[..., T], *args: Any) -> T:
    return await asyncio.to_thread(call, *args)


async def remote(limits: OfrepLimits) -> AsyncIterator[Remote]:
    live = LiveFlags()
    log = FlagLog(live)
    log.import_set("prod", FLAG_SET)
    issued = issue_sdk_key("prod", "app", "tester", 1, KeyKind.CLIENT)
    log.append(issued.record_key, issued.record_value)
    log.keys[issued.clear_key] = issued.key_id
    server = TestServer(ofrep_app(live, limits=limits), host="127.0.0.1")
    await server.start_server()
    try:
        yield Remote(log, str(server.make_url("/")), issued.clear_key)
    finally:
        await server.close()


@pytest.fixture
async def setup() -> AsyncIterator[Remote]:
    async for r in remote(OfrepLimits(per_key=Rate.unlimited(), per_address=Rate.unlimited())):
        yield r


def details(
    provider: OFREPProvider, method: str, flag: str, default: Any, ctx: EvaluationContext | None
) -> Any:
    """What the OpenFeature SDK would get: the provider's resolution, or its error."""
    try:
        return getattr(provider, method)(flag, default, ctx)
    except Exception as error:  # the SDK turns these into error details
        return error


CTX = EvaluationContext("user-1", {"age": 30, "email": "a@example.com"})

# (method, flag, default, value, variant, reason)
ANSWERS = [
    ("resolve_boolean_details", "bool-flag", False, True, "on", Reason.STATIC),
    ("resolve_boolean_details", "bool-zero", True, False, "off", Reason.STATIC),
    ("resolve_string_details", "string-zero", "x", "", "none", Reason.STATIC),
    ("resolve_integer_details", "int-flag", 0, 9007199254740991, "big", Reason.STATIC),
    ("resolve_integer_details", "int-zero", 5, 0, "zero", Reason.STATIC),
    ("resolve_float_details", "float-flag", 0.0, 3.25, "pi", Reason.STATIC),
    ("resolve_float_details", "float-zero", 1.0, 0.0, "zero", Reason.STATIC),
    (
        "resolve_object_details",
        "object-flag",
        {},
        {"n": 1, "nested": {"list": [1, "x", True, None]}},
        "full",
        Reason.STATIC,
    ),
    ("resolve_string_details", "adult", "", "adult", "yes", Reason.TARGETING_MATCH),
    ("resolve_boolean_details", "email-domain", False, True, "staff", Reason.TARGETING_MATCH),
    # Code defaults: the application's default, no variant.
    ("resolve_boolean_details", "disabled", False, False, None, Reason.DISABLED),
    ("resolve_string_details", "no-default", "mine", "mine", None, Reason.DEFAULT),
]


@pytest.mark.parametrize(("method", "flag", "default", "value", "variant", "reason"), ANSWERS)
async def test_the_ofrep_provider_resolves_every_type(
    setup: Remote, method: str, flag: str, default: Any, value: Any, variant: str | None, reason: Reason
) -> None:
    got = await in_thread(details, setup.provider(), method, flag, default, CTX)
    assert not isinstance(got, Exception), got
    assert (got.value, got.variant, got.reason) == (value, variant, reason)
    assert type(got.value) is type(value)


async def test_metadata_a_missing_flag_and_a_change(setup: Remote) -> None:
    provider = setup.provider()
    got = await in_thread(details, provider, "resolve_boolean_details", "with-metadata", False, CTX)
    assert got.flag_metadata["owner"] == "team-a" and got.flag_metadata["ratio"] == 0.5
    missing = await in_thread(details, provider, "resolve_boolean_details", "nope", False, CTX)
    assert isinstance(missing, Exception) and getattr(missing, "error_code", None) == ErrorCode.FLAG_NOT_FOUND
    setup.log.put("prod", "bool-flag", {"state": "ENABLED", "variants": {"on": True, "off": False},
                                         "defaultVariant": "off"})  # fmt: skip
    changed = await in_thread(details, provider, "resolve_boolean_details", "bool-flag", True, CTX)
    assert (changed.value, changed.variant) == (False, "off")


async def test_refused_keys_are_errors_the_sdk_reports(setup: Remote) -> None:
    for key in ("", "rlc_unknown", "rlk_cluster-key"):
        got = await in_thread(
            details, setup.provider(key), "resolve_boolean_details", "bool-flag", False, CTX
        )
        assert isinstance(got, Exception) and "unauthorized" in str(got), (key, got)
    setup.log.revoke(setup.client_key, "prod")
    revoked = await in_thread(details, setup.provider(), "resolve_boolean_details", "bool-flag", False, CTX)
    assert isinstance(revoked, Exception) and "unauthorized" in str(revoked)


async def test_a_429_pauses_the_provider_for_retry_after() -> None:
    async for setup in remote(OfrepLimits(per_key=Rate(0.5, 2), per_address=Rate.unlimited())):
        provider = setup.provider()
        first: list[FlagEvaluationDetails[Any] | Exception] = [
            await in_thread(details, provider, "resolve_boolean_details", "bool-flag", False, CTX)
            for _ in range(3)
        ]
        assert not isinstance(first[0], Exception) and not isinstance(first[1], Exception)
        assert isinstance(first[2], Exception) and "Rate limited, retry after: 2" in str(first[2])
        # The provider honours Retry-After: it does not even ask until then.
        assert provider.retry_after is not None
        paused = await in_thread(details, provider, "resolve_boolean_details", "bool-flag", False, CTX)
        assert isinstance(paused, Exception) and "paused" in str(paused)
