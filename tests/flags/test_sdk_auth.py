"""SdkGate's key cache (flags/sdk_auth.py ``KeyCache``): a known key costs a dict
lookup, and anything that ends a key (revoke, deleted environment, forgotten
tenant, a clashing key id) refuses it on the very next call; unknown keys are
never stored and the cache stays within its bound."""

from __future__ import annotations

from typing import Any

import pytest

from flags.live import LiveFlags, Scope
from flags.sdk_auth import KeyCache
from flags.sdk_keys import issue_sdk_key
from tests.flags.flagd_harness import FlagLog

ACME = Scope("acme", "prod")


class CountingLive(LiveFlags):
    """LiveFlags counting full key checks (parse + HMAC)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.full_checks = 0

    def authenticate(self, clear_key: str) -> Scope | None:
        self.full_checks += 1
        return super().authenticate(clear_key)


@pytest.fixture
def live() -> CountingLive:
    return CountingLive()


def test_a_known_key_is_checked_in_full_once(live: CountingLive) -> None:
    log = FlagLog(live)
    log.import_set("prod", {"flags": {}})
    key = log.issue_key("prod")
    cache = KeyCache(live)
    assert [cache.authenticate(key) for _ in range(50)] == [ACME] * 50
    assert live.full_checks == 1
    # A flag change does not touch keys: still cached.
    log.put("prod", "f", {"state": "ENABLED", "variants": {"on": True}, "defaultVariant": "on"})
    assert cache.authenticate(key) == ACME and live.full_checks == 1


def test_revoke_deleted_environment_and_forgotten_tenant_refuse_the_next_call(live: CountingLive) -> None:
    log = FlagLog(live)
    log.import_set("prod", {"flags": {}})
    revoked, in_deleted_env, in_forgotten = (log.issue_key("prod") for _ in range(3))
    cache = KeyCache(live)
    for key in (revoked, in_deleted_env, in_forgotten):
        assert cache.authenticate(key) == ACME
    log.revoke(revoked, "prod")
    assert cache.authenticate(revoked) is None
    assert cache.authenticate(in_deleted_env) == ACME  # checked again in full, still good
    log.delete_env("prod")
    assert cache.authenticate(in_deleted_env) is None
    log.import_set("prod", {"flags": {}})  # the environment back: its keys serve again
    assert cache.authenticate(in_forgotten) == ACME
    live.forget_tenant("acme")
    assert cache.authenticate(in_forgotten) is None
    assert cache.authenticate(revoked) is None


def test_a_clashing_key_id_in_another_tenant_refuses_the_next_call(live: CountingLive) -> None:
    acme, globex = FlagLog(live, "acme"), FlagLog(live, "globex")
    acme.import_set("prod", {"flags": {}})
    globex.import_set("prod", {"flags": {}})
    issued = issue_sdk_key("prod", "web", "key-1", 1)
    acme.append(issued.record_key, issued.record_value)
    cache = KeyCache(live)
    assert cache.authenticate(issued.clear_key) == ACME
    globex.append(issued.record_key, issued.record_value)  # same id and digest: serve neither
    assert cache.authenticate(issued.clear_key) is None


def test_unknown_keys_are_never_stored_and_known_ones_stay_within_the_bound(live: CountingLive) -> None:
    log = FlagLog(live)
    log.import_set("prod", {"flags": {}})
    keys = [log.issue_key("prod") for _ in range(5)]
    cache = KeyCache(live, max_keys=3)
    for n in range(200):
        unknown = issue_sdk_key("prod", "never recorded", "key-1", n).clear_key
        assert cache.authenticate(unknown) is None
        assert cache.authenticate(f"rlf_{n}") is None
    assert len(cache) == 0
    for _ in range(2):
        assert [cache.authenticate(key) for key in keys] == [ACME] * 5
        assert len(cache) == 3
    # The last three stayed; the evicted ones were checked in full again.
    checks = live.full_checks
    assert [cache.authenticate(key) for key in keys[2:]] == [ACME] * 3
    assert live.full_checks == checks
