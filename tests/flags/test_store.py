"""FlagStore: decisions, isolation, and replays of compacted logs (hypothesis)."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flags.changes import Change, Kind, UnsupportedChange, encode
from flags.model import Flag, validate_flag, validate_flag_set
from flags.store import Accepted, ChangeType, Conflict, FlagChanged, FlagStore, Rejected, RejectReason

TENANTS = ("acme", "globex")
ENVS = ("production", "staging")
KEYS = ("a", "b", "c")


def make_flag(key: str, default: str, enabled: bool = True) -> Flag:
    doc = {
        "state": "ENABLED" if enabled else "DISABLED",
        "variants": {"x": "X", "y": "Y"},
        "defaultVariant": default,
    }
    return validate_flag(key, doc)


@dataclass
class Log:
    records: list[tuple[str, str, bytes | None]] = field(default_factory=list)
    """(tenant, key, value); the offset is a tenant's own count."""

    def append(self, tenant: str, key: str, value: bytes | None) -> int:
        self.records.append((tenant, key, value))
        return sum(1 for t, _, _ in self.records if t == tenant) - 1


def replay(records: list[tuple[str, str, bytes | None]], offsets: list[int]) -> FlagStore:
    store = FlagStore()
    for (tenant, key, value), offset in zip(records, offsets, strict=True):
        store.apply(tenant, offset, key, value)
        store.check_invariants()
    return store


def offsets_of(records: list[tuple[str, str, bytes | None]]) -> list[int]:
    counts: dict[str, int] = {}
    out = []
    for tenant, _, _ in records:
        out.append(counts.get(tenant, 0))
        counts[tenant] = out[-1] + 1
    return out


def compact(records: list[tuple[str, str, bytes | None]], cut: int, drop_tombstones: bool) -> list[int]:
    """Indexes that survive: below ``cut`` only the latest record per key
    before the cut (and no tombstones when ``drop_tombstones``); from ``cut``
    on, everything (younger than ``min_compaction_lag_ms``)."""
    kept = []
    for i, (tenant, key, value) in enumerate(records):
        if i >= cut:
            kept.append(i)
            continue
        later = any((t, k) == (tenant, key) for t, k, _ in records[i + 1 : cut])
        if not later and not (drop_tombstones and value is None):
            kept.append(i)
    return kept


def repair(log: Log, live: FlagStore, offsets: list[int]) -> None:
    """What the writers do after a conflict: append a restate per dirty key."""
    for _ in range(10):
        pending = [(t, item) for t in TENANTS for item in live.needs_restate(t)]
        if not pending:
            return
        for tenant, (env, key, _) in pending:
            change = live.restate(tenant, env, key, "repairer", 0)
            assert change is not None
            offset = log.append(tenant, change.key, encode(change))
            offsets.append(offset)
            live.apply(tenant, offset, change.key, encode(change))
    raise AssertionError("restates did not converge")


@st.composite
def scenario(draw: st.DrawFn) -> list[tuple[int, str, str, str, str, int, int]]:
    steps = draw(st.integers(5, 45))
    return [
        (
            draw(st.integers(0, 2)),  # writer
            draw(st.sampled_from(TENANTS)),
            draw(st.sampled_from(ENVS)),
            draw(st.sampled_from(KEYS)),
            draw(
                st.sampled_from(
                    [
                        "create",
                        "update",
                        "update",
                        "enable",
                        "disable",
                        "delete",
                        "rollback",
                        "env-create",
                        "import",
                        "env-delete",
                        "purge",
                        "garbage",
                        "stale",
                    ]
                )
            ),
            draw(
                st.one_of(st.just(100), st.integers(0, 100))
            ),  # how far the writer catches up (% of its lag)
            draw(st.integers(0, 1)),  # which default variant
        )
        for _ in range(steps)
    ]


def run(steps: list[tuple[int, str, str, str, str, int, int]]) -> tuple[Log, FlagStore, list[int]]:
    log = Log()
    offsets: list[int] = []
    live = FlagStore()
    views = [FlagStore() for _ in range(3)]
    cursors = [0, 0, 0]
    for writer, tenant, env, key, action, catch_up, choice in steps:
        view = views[writer]
        target = cursors[writer] + (len(log.records) - cursors[writer]) * catch_up // 100
        for i in range(cursors[writer], target):
            t, k, v = log.records[i]
            view.apply(t, offsets[i], k, v)
        cursors[writer] = target
        flag = make_flag(key, "xy"[choice], enabled=action != "disable")
        expected = view.flag_version(tenant, env, key)
        value: bytes | None
        if action in ("env-create", "import", "env-delete"):
            definition = None
            if action == "import":
                doc = {
                    "flags": {key: flag.to_json(), "b": make_flag("b", "y").to_json()},
                    "metadata": {"n": choice},
                }
                definition = validate_flag_set(doc)
            change = Change(
                Kind(action), env, None, f"w{writer}", 0, view.set_version(tenant, env), definition
            )
            record_key, value = env, encode(change)
        elif action == "restate":  # a lagging writer's restate: possibly stale
            restate = view.restate(tenant, env, key, f"w{writer}", 0)
            if restate is None:
                continue
            record_key, value = restate.key, encode(restate)
        elif action == "purge":
            record_key, value = f"{env}/{key}", None
        elif action == "garbage":
            record_key, value = f"{env}/{key}", b'{"format":1,"kind":"update"}'
        else:
            kind = Kind.UPDATE if action == "stale" else Kind(action)
            if action == "stale":
                expected = max(0, expected - 1 - choice)
            new_flag = None if kind is Kind.DELETE else flag
            change = Change(kind, env, key, f"w{writer}", 0, expected, new_flag, rollback_to=0)
            record_key, value = change.key, encode(change)
        offset = log.append(tenant, record_key, value)
        offsets.append(offset)
        result = live.apply(tenant, offset, record_key, value)
        live.check_invariants()
        if isinstance(result, Conflict):
            assert result.current > result.expected
    return log, live, offsets


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario(), st.one_of(st.just(1.0), st.floats(0, 1)), st.booleans())
def test_replays_of_the_compacted_log_rebuild_the_same_store(steps, cut_fraction, drop_tombstones) -> None:
    log, live, offsets = run(steps)
    assert replay(log.records, offsets).view() == live.view()  # two views of one log agree
    repair(log, live, offsets)
    live.check_invariants()
    cut = int(len(log.records) * cut_fraction)
    kept = compact(log.records, cut, drop_tombstones)
    compacted = replay([log.records[i] for i in kept], [offsets[i] for i in kept])
    assert compacted.view() == live.view()


@settings(max_examples=200, deadline=None)
@given(scenario())
def test_stale_writes_change_nothing_and_tenants_are_isolated(steps) -> None:
    log, live, offsets = run(steps)
    other = FlagStore()
    for (tenant, key, value), offset in zip(log.records, offsets, strict=True):
        if tenant == "acme":
            other.apply(tenant, offset, key, value)
    acme_only = [row for row in live.view() if row[0] == "acme"]
    assert other.view() == tuple(acme_only)
    for env in ENVS:
        for key in KEYS:
            version = live.flag_version("acme", env, key)
            if version == 0 or live.flag("acme", env, key) is None:
                continue
            before = live.view()
            stale = Change(Kind.UPDATE, env, key, "late", 0, version - 1, make_flag(key, "y"))
            offset = log.append("acme", stale.key, encode(stale))
            result = live.apply("acme", offset, stale.key, encode(stale))
            assert isinstance(result, Conflict)
            assert live.view() == before


def create(store: FlagStore, tenant: str, offset: int, change: Change) -> object:
    return store.apply(tenant, offset, change.key, encode(change))


def test_decisions_and_what_changed() -> None:
    store = FlagStore()
    a = make_flag("a", "x")
    assert isinstance(create(store, "t", 0, Change(Kind.CREATE, "production", "a", "k", 0, 0, a)), Rejected)
    assert store.needs_restate("t") == ()  # refused for a missing environment: nothing to repair
    assert create(store, "t", 1, Change(Kind.ENV_CREATE, "production", None, "k", 0, 0)) == Accepted(1, 2)
    result = create(store, "t", 2, Change(Kind.CREATE, "production", "a", "k", 0, 2, a))
    assert result == Accepted(2, 3, (FlagChanged("production", "a", ChangeType.WRITE),))
    again = create(store, "t", 3, Change(Kind.CREATE, "production", "a", "k", 0, 3, a))
    assert isinstance(again, Rejected) and again.reason is RejectReason.FLAG_EXISTS
    stale = create(store, "t", 4, Change(Kind.UPDATE, "production", "a", "k", 0, 2, make_flag("a", "y")))
    assert stale == Conflict(4, 2, 3, "production/a is at version 3, not 2: read it again")
    assert [item[:2] for item in store.needs_restate("t")] == [("production", "a")]
    restate = store.restate("t", "production", "a", "k", 0)
    assert restate is not None and create(store, "t", 5, restate) == Accepted(5, 3)
    assert store.needs_restate("t") == ()
    deleted = create(store, "t", 6, Change(Kind.DELETE, "production", "a", "k", 0, 3))
    assert deleted == Accepted(6, 7, (FlagChanged("production", "a", ChangeType.DELETE),))
    assert store.flag("t", "production", "a") is None and store.flag_version("t", "production", "a") == 7
    stale_restate = create(store, "t", 7, restate)  # written before the delete: must not revive the flag
    assert isinstance(stale_restate, Conflict) and store.flag("t", "production", "a") is None
    future = create(store, "t", 8, Change(Kind.CREATE, "production", "a", "k", 0, 9, a))
    assert isinstance(future, Rejected) and future.reason is RejectReason.INVALID_EXPECTED_VERSION
    assert [item[:2] for item in store.needs_restate("t")] == [("production", "a")]
    view = store.flag_set("t", "production")
    assert view is not None and view.flags == {}
    store.check_invariants()


def test_tombstones_and_newer_formats() -> None:
    store = FlagStore()
    create(store, "t", 0, Change(Kind.ENV_CREATE, "production", None, "k", 0, 0))
    refused = store.apply("t", 1, "production", None)
    assert isinstance(refused, Rejected) and refused.reason is RejectReason.TOMBSTONE_ON_ENVIRONMENT
    assert store.environments("t") == ("production",)
    create(store, "t", 2, Change(Kind.CREATE, "production", "a", "k", 0, 1, make_flag("a", "x")))
    purged = store.apply("t", 3, "production/a", None)
    assert purged == Accepted(3, 1, (FlagChanged("production", "a", ChangeType.DELETE),))
    newer = b'{"format":2,"kind":"update"}'
    with pytest.raises(UnsupportedChange):
        store.apply("t", 4, "production/a", newer)
    assert store.applied("t") == 4  # nothing moved
    with pytest.raises(ValueError, match="applied after"):
        store.apply("t", 3, "production/a", None)


def test_listing_is_paginated_and_scoped() -> None:
    store = FlagStore()
    create(store, "t", 0, Change(Kind.ENV_CREATE, "production", None, "k", 0, 0))
    for i, key in enumerate(["c", "a", "b"]):
        create(store, "t", i + 1, Change(Kind.CREATE, "production", key, "k", 0, 1, make_flag(key, "x")))
    first = store.list_flags("t", "production", page_size=2)
    assert [v.key for v in first.items] == ["a", "b"] and first.next_page_token
    second = store.list_flags("t", "production", page_size=2, page_token=first.next_page_token)
    assert [v.key for v in second.items] == ["c"] and second.next_page_token == ""
    with pytest.raises(ValueError, match="another listing"):
        store.list_flags("t", "staging", page_token=first.next_page_token)
    assert store.list_flags("other", "production").items == ()
    assert store.environments("other") == ()
    assert store.env_version("t", "production") == 4


def test_check_change_is_exact_and_resolves_refs() -> None:
    store = FlagStore()
    doc = {"$evaluators": {"r": {"==": [1, 1]}}, "flags": {}}
    create(store, "t", 0, Change(Kind.IMPORT, "production", None, "k", 0, 0, validate_flag_set(doc)))
    good = validate_flag("a", {"state": "ENABLED", "variants": {"x": 1}, "targeting": {"$ref": "r"}})
    bad = validate_flag("a", {"state": "ENABLED", "variants": {"x": 1}, "targeting": {"$ref": "nope"}})
    assert store.check_change("t", Change(Kind.CREATE, "production", "a", "k", 0, 1, good)) is None
    refused = store.check_change("t", Change(Kind.CREATE, "production", "a", "k", 0, 1, bad))
    assert isinstance(refused, Rejected) and 'unknown evaluator "nope"' in refused.message
    gap = store.check_change("t", Change(Kind.CREATE, "production", "a", "k", 0, 0, good))
    assert isinstance(gap, Conflict)
    create(store, "t", 1, Change(Kind.CREATE, "production", "a", "k", 0, 1, good))
    exists = store.check_change("t", Change(Kind.CREATE, "production", "a", "k", 0, 2, good))
    assert isinstance(exists, Rejected) and exists.reason is RejectReason.FLAG_EXISTS
    env = store.check_change("t", Change(Kind.ENV_DELETE, "production", None, "k", 0, 0))
    assert isinstance(env, Conflict)


def test_skip_advances_positions_and_forget_tenant_drops_one_tenant() -> None:
    store = FlagStore()
    create(store, "t", 0, Change(Kind.ENV_CREATE, "production", None, "k", 0, 0))
    create(store, "u", 0, Change(Kind.ENV_CREATE, "production", None, "k", 0, 0))
    store.skip("t", 1)  # an SDK key record at offset 1
    assert store.applied("t") == 2 and store.has_environment("t", "production")
    with pytest.raises(ValueError):
        store.skip("t", 1)
    with pytest.raises(ValueError):
        store.apply("t", 1, "production", encode(Change(Kind.ENV_DELETE, "production", None, "k", 0, 1)))
    # A write made against the skipped position's view is decided as usual.
    create(store, "t", 2, Change(Kind.CREATE, "production", "a", "k", 0, 1, make_flag("a", "x")))
    assert store.flag_version("t", "production", "a") == 3
    store.check_invariants()
    store.forget_tenant("t")
    assert store.applied("t") == 0 and not store.has_environment("t", "production")
    assert store.has_environment("u", "production") and not store.has_environment("u", "staging")
    create(store, "t", 0, Change(Kind.ENV_CREATE, "staging", None, "k", 0, 0))
    assert store.environments("t") == ("staging",)
    store.check_invariants()
