"""LiveFlags: replay equivalence, lazy serving, watchers, SDK keys, waiting for positions."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import FlagNotFoundError

import flags.live
from flags.changes import Change, Kind, UnsupportedChange, encode
from flags.evaluator import FlagdEvaluator
from flags.experiments.model import Experiment, Metric, MetricType, State, encode_record
from flags.live import LiveFlags, Scope
from flags.model import Flag, FlagSet, flagd_json, validate_flag
from flags.sdk_keys import issue_sdk_key, revoke_record
from flags.store import Accepted, ChangeType, Conflict, FlagStore

ACME = Scope("acme", "prod")


def make_flag(key: str, domain: str, enabled: bool = True) -> Flag:
    doc = {
        "state": "ENABLED" if enabled else "DISABLED",
        "variants": {"on": True, "off": False},
        "defaultVariant": "off",
        "targeting": {"if": [{"ends_with": [{"var": "email"}, domain]}, "on", None]},
    }
    return validate_flag(key, doc)


def env_create(env: str = "prod") -> bytes:
    return encode(Change(Kind.ENV_CREATE, env, None, "key-1", 1))


def env_delete(env: str, expected: int) -> bytes:
    return encode(Change(Kind.ENV_DELETE, env, None, "key-1", 1, expected=expected))


def flag_write(kind: Kind, env: str, key: str, expected: int, domain: str = "@a.com") -> bytes:
    definition = None if kind is Kind.DELETE else make_flag(key, domain, kind is not Kind.DISABLE)
    return encode(Change(kind, env, key, "key-1", 1, expected=expected, definition=definition))


class Feed:
    """A tenant's topic: appends records and applies them in offset order."""

    def __init__(self, live: LiveFlags, tenant: str = "acme", start: int = 0) -> None:
        self.live, self.tenant, self.offset = live, tenant, start

    def __call__(self, key: str, value: bytes | None) -> Any:
        result = self.live.apply(self.tenant, self.offset, key, value)
        self.offset += 1
        return result


def random_log(rng: random.Random, length: int) -> list[tuple[str, str, bytes | None]]:
    """Records of two tenants and two environments as writers (some stale) would
    append them, with SDK key records between them."""
    log: list[tuple[str, str, bytes | None]] = []
    reference = FlagStore()
    offsets = {"acme": 0, "globex": 0}
    for _ in range(length):
        tenant = rng.choice(("acme", "globex"))
        env = rng.choice(("prod", "dev"))
        roll = rng.random()
        if roll < 0.08:
            key: str = env
            expected = reference.set_version(tenant, env)
            value: bytes | None = env_create(env) if rng.random() < 0.7 else env_delete(env, expected)
        elif roll < 0.14:
            issued = issue_sdk_key(env, "k", "key-1", 1)
            key, value = issued.record_key, issued.record_value
        else:
            flag = rng.choice(("a", "b", "c"))
            key = f"{env}/{flag}"
            version = reference.flag_version(tenant, env, flag)
            stale = max(0, version - rng.choice((0, 0, 0, 1)))
            exists = reference.flag(tenant, env, flag) is not None
            honest = (Kind.UPDATE, Kind.UPDATE, Kind.DISABLE, Kind.DELETE) if exists else (Kind.CREATE,)
            kind = rng.choice(honest) if rng.random() < 0.9 else rng.choice(list(Kind)[:4])
            value = flag_write(kind, env, flag, stale, rng.choice(("@a.com", "@b.com")))
        if key.startswith("@"):
            reference.skip(tenant, offsets[tenant])
        else:
            reference.apply(tenant, offsets[tenant], key, value)
        offsets[tenant] += 1
        log.append((tenant, key, value))
    return log


CONTEXTS = [EvaluationContext("u1", {"email": "x@a.com"}), EvaluationContext("u2", {"email": "x@b.com"})]


def answers(evaluator: FlagdEvaluator, keys: list[str]) -> list[Any]:
    out: list[Any] = []
    for key in keys:
        for ctx in CONTEXTS:
            try:
                details = evaluator.resolve_boolean_value(key, False, ctx)
            except FlagNotFoundError:
                out.append((key, "FLAG_NOT_FOUND"))
                continue
            out.append((key, details.value, details.variant, details.reason))
    return out


@pytest.mark.parametrize("seed", range(6))
def test_replay_serves_what_the_store_holds(seed: int) -> None:
    rng = random.Random(seed)
    log = random_log(rng, 300)
    live = LiveFlags()
    reference = FlagStore()
    offsets = {"acme": 0, "globex": 0}
    for tenant, key, value in log:
        live.apply(tenant, offsets[tenant], key, value)
        if key.startswith("@"):
            reference.skip(tenant, offsets[tenant])
        else:
            reference.apply(tenant, offsets[tenant], key, value)
        offsets[tenant] += 1
        # Read between records too: a stale cached Serving would show here.
        if rng.random() < 0.3:
            check_serving(live, reference, Scope(tenant, rng.choice(("prod", "dev"))))
    assert live.store.view() == reference.view()
    for tenant in ("acme", "globex"):
        assert live.applied(tenant) == offsets[tenant]
        for env in ("prod", "dev"):
            check_serving(live, reference, Scope(tenant, env))


def check_serving(live: LiveFlags, reference: FlagStore, scope: Scope) -> None:
    serving = live.serving(scope)
    flag_set = reference.flag_set(scope.tenant, scope.env)
    if flag_set is None:
        assert serving is None
        return
    assert serving is not None and serving.scope == scope
    assert serving.version == reference.env_version(scope.tenant, scope.env)
    assert serving.configuration == flagd_json(flag_set)
    fresh = FlagdEvaluator()
    fresh.set_flags(flagd_json(flag_set))
    keys = [*flag_set.flags, "missing"]
    assert answers(serving.evaluator, keys) == answers(fresh, keys)


def test_apply_never_builds_the_document_and_serving_builds_it_once_per_version(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    built: list[FlagSet] = []

    def counting_flagd_json(flag_set: FlagSet) -> str:
        built.append(flag_set)
        return flagd_json(flag_set)

    monkeypatch.setattr(flags.live, "flagd_json", counting_flagd_json)
    live = LiveFlags()
    feed = Feed(live)
    feed("prod", env_create())
    for i in range(50):
        feed(f"prod/f{i}", flag_write(Kind.CREATE, "prod", f"f{i}", 1))
    assert built == []
    first = live.serving(ACME)
    assert live.serving(ACME) is first and len(built) == 1
    feed("prod/f0", flag_write(Kind.UPDATE, "prod", "f0", 2, "@b.com"))
    second = live.serving(ACME)
    assert second is not first and second is not None and len(built) == 2
    assert second.version == 52 and first is not None and first.version == 51
    # A refused record changes nothing: the cached Serving stays.
    assert isinstance(feed("prod/f1", flag_write(Kind.UPDATE, "prod", "f1", 1)), Conflict)
    assert live.serving(ACME) is second and len(built) == 2


async def test_watchers_coalesce_changes_between_reads() -> None:
    live = LiveFlags()
    feed = Feed(live)
    with (
        live.watch(ACME) as watcher,
        live.watch(Scope("acme", "dev")) as other_env,
        live.watch(Scope("globex", "prod")) as other_tenant,
    ):
        feed("prod", env_create())
        feed("prod/a", flag_write(Kind.CREATE, "prod", "a", 1))
        feed("prod/b", flag_write(Kind.CREATE, "prod", "b", 1))
        feed("prod/a", flag_write(Kind.UPDATE, "prod", "a", 2, "@b.com"))
        feed("prod/b", flag_write(Kind.DELETE, "prod", "b", 3))
        update = await asyncio.wait_for(watcher.next(), 1)
        assert update.exists and update.version == 5
        assert dict(update.changes) == {"a": ChangeType.UPDATE, "b": ChangeType.DELETE}
        assert not other_env.pending and not other_tenant.pending
        assert watcher.poll() is None

        # A reader parked in next() is woken by the change.
        reader = asyncio.ensure_future(watcher.next())
        await asyncio.sleep(0)
        assert not reader.done()
        feed("prod/c", flag_write(Kind.CREATE, "prod", "c", 1))
        update = await asyncio.wait_for(reader, 1)
        assert dict(update.changes) == {"c": ChangeType.WRITE} and update.version == 6

        # Cancelling a wait loses nothing.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(watcher.next(), 0.01)
        feed("prod/c", flag_write(Kind.DISABLE, "prod", "c", 6))
        update = await asyncio.wait_for(watcher.next(), 1)
        assert dict(update.changes) == {"c": ChangeType.UPDATE}
    assert live.watcher_count(ACME) == 0 and live.watcher_count(Scope("globex", "prod")) == 0


async def test_one_change_wakes_every_watcher_of_its_environment_only() -> None:
    live = LiveFlags()
    feed = Feed(live)
    feed("prod", env_create())
    feed("dev", env_create("dev"))
    watchers = [live.watch(ACME) for _ in range(1000)]
    bystanders = [live.watch(Scope("acme", "dev")) for _ in range(10)]
    feed("prod/a", flag_write(Kind.CREATE, "prod", "a", 1))
    assert all(w.pending for w in watchers) and not any(w.pending for w in bystanders)
    updates = await asyncio.gather(*(w.next() for w in watchers[:10]))
    assert {u.changes["a"] for u in updates} == {ChangeType.WRITE}
    for w in watchers + bystanders:
        w.close()
    assert live.watcher_count(ACME) == 0


async def test_deleted_environment() -> None:
    live = LiveFlags()
    feed = Feed(live)
    feed("prod", env_create())
    feed("prod/a", flag_write(Kind.CREATE, "prod", "a", 1))
    issued = issue_sdk_key("prod", "web", "key-1", 1)
    feed(issued.record_key, issued.record_value)
    assert live.authenticate(issued.clear_key) == ACME and live.serving(ACME) is not None
    with live.watch(ACME) as watcher:
        feed("prod", env_delete("prod", 1))
        update = watcher.poll()
        assert update is not None and not update.exists and dict(update.changes) == {"a": ChangeType.DELETE}
        assert live.serving(ACME) is None
        assert live.authenticate(issued.clear_key) is None
        # An empty environment of that name again: existence alone wakes watchers.
        feed("prod", env_create())
        update = watcher.poll()
        assert update is not None and update.exists and dict(update.changes) == {}
    serving = live.serving(ACME)
    assert serving is not None and serving.configuration == '{"flags":{}}'


def test_sdk_keys_create_revoke_unknown_tampered_and_other_tenants(monkeypatch: pytest.MonkeyPatch) -> None:
    live = LiveFlags()
    acme, globex = Feed(live, "acme"), Feed(live, "globex")
    acme("prod", env_create())
    globex("prod", env_create())
    issued = issue_sdk_key("prod", "web", "key-1", 11)
    assert acme(issued.record_key, issued.record_value) is None
    assert live.authenticate(issued.clear_key) == ACME
    (info,) = live.sdk_keys("acme")
    assert (info.id, info.env, info.name, info.created_by, info.created_ms, info.revoked) == (
        issued.key_id,
        "prod",
        "web",
        "key-1",
        11,
        False,
    )
    assert live.sdk_keys("acme", "dev") == () and live.sdk_keys("globex") == ()

    # Another tenant writes a key with the same id: each secret finds its own tenant.
    clash = issue_sdk_key("prod", "copy", "key-9", 1)
    clash_value = clash.record_value.replace(clash.key_id.encode(), issued.key_id.encode())
    globex(issued.record_key, clash_value)
    clash_key = clash.clear_key.replace(clash.key_id, issued.key_id)
    assert live.authenticate(issued.clear_key) == ACME
    assert live.authenticate(clash_key) == Scope("globex", "prod")
    # ... and revoking it there leaves acme's key alone.
    globex(*revoke_record(issued.key_id, "prod", "key-9", 2))
    assert live.authenticate(clash_key) is None and live.authenticate(issued.clear_key) == ACME

    tampered = issued.clear_key[:-2] + ("AA" if issued.clear_key[-2:] != "AA" else "BA")
    assert live.authenticate(tampered) is None
    assert live.authenticate("rlf_" + "0" * 16 + issued.clear_key[20:]) is None
    assert live.authenticate("") is None and live.authenticate("rlk_" + issued.clear_key[4:]) is None

    # An unknown id costs the same HMAC as a known one.
    calls: list[bytes] = []
    monkeypatch.setattr(flags.live, "verify_unknown", calls.append)
    assert live.authenticate("rlf_" + "f" * 16 + issued.clear_key[20:]) is None
    assert len(calls) == 1

    acme(*revoke_record(issued.key_id, "prod", "key-2", 12))
    assert live.authenticate(issued.clear_key) is None
    (info,) = live.sdk_keys("acme")
    assert info.revoked and info.revoked_by == "key-2" and info.revoked_ms == 12
    # A second create of the same id does not bring a revoked key back.
    acme(issued.record_key, issued.record_value)
    assert live.authenticate(issued.clear_key) is None
    assert "created again" in live.key_problems("acme")[-1][1]

    live.forget_tenant("globex")
    fresh = issue_sdk_key("prod", "web", "key-1", 1)
    acme(fresh.record_key, fresh.record_value)
    assert live.authenticate(fresh.clear_key) == ACME
    live.forget_tenant("acme")
    assert live.authenticate(fresh.clear_key) is None and live.sdk_keys("acme") == ()
    assert live.tenants() == ()
    # A tenant of the same name later has a new topic: none of the old keys count.
    Feed(live, "acme")("prod", env_create())
    assert live.authenticate(fresh.clear_key) is None and live.authenticate(issued.clear_key) is None


def test_a_key_recorded_in_two_tenants_serves_neither() -> None:
    # Not something an honest writer produces (the digest of an unknown secret would
    # have to be copied across topics); serving either tenant would be a guess.
    live = LiveFlags()
    acme, globex = Feed(live, "acme"), Feed(live, "globex")
    acme("prod", env_create())
    globex("prod", env_create())
    issued = issue_sdk_key("prod", "web", "key-1", 1)
    acme(issued.record_key, issued.record_value)
    assert live.authenticate(issued.clear_key) == ACME
    globex(issued.record_key, issued.record_value)
    assert live.authenticate(issued.clear_key) is None
    live.forget_tenant("globex")
    assert live.authenticate(issued.clear_key) == ACME


def test_a_revoke_alone_survives_compaction_and_malformed_key_records_are_reported() -> None:
    live = LiveFlags()
    feed = Feed(live)
    feed("prod", env_create())
    issued = issue_sdk_key("prod", "web", "key-1", 1)
    feed(*revoke_record(issued.key_id, "prod", "key-1", 2))  # the create was compacted away
    (info,) = live.sdk_keys("acme")
    assert info.revoked and info.name == ""
    feed(issued.record_key, issued.record_value)
    assert live.authenticate(issued.clear_key) is None
    feed("@sdk-key/0123456789abcdef", b"{}")
    feed("@sdk-key/0123456789abcdef", None)
    assert [offset for offset, _ in live.key_problems("acme")] == [2, 3, 4]
    assert live.applied("acme") == 5 and live.store.applied("acme") == 5
    assert live.result("acme", 3) is None


async def test_wait_applied_before_and_after_the_record() -> None:
    live = LiveFlags()
    feed = Feed(live)
    feed("prod", env_create())
    assert await live.wait_applied("acme", 1, 0.01)
    assert not await live.wait_applied("acme", 2, 0.01)
    assert live._waiters["acme"] == []  # a timed-out waiter leaves nothing behind
    early = asyncio.ensure_future(live.wait_applied("acme", 2, 5))
    later = asyncio.ensure_future(live.wait_applied("acme", 4, 5))
    await asyncio.sleep(0)
    assert not early.done()
    issued = issue_sdk_key("prod", "web", "key-1", 1)
    feed(issued.record_key, issued.record_value)  # key records count as positions too
    assert await asyncio.wait_for(early, 1)
    await asyncio.sleep(0)
    assert not later.done()
    live.apply("acme", 9, "prod/a", flag_write(Kind.CREATE, "prod", "a", 1))  # compaction gap
    assert await asyncio.wait_for(later, 1)
    assert isinstance(live.result("acme", 9), Accepted)
    assert live.result("acme", 1) is None and live.result("acme", 5) is None  # a key record, a gap
    gone = asyncio.ensure_future(live.wait_applied("acme", 100, 5))
    await asyncio.sleep(0)
    live.forget_tenant("acme")
    assert await asyncio.wait_for(gone, 1) is False


def test_results_are_kept_for_a_bounded_window() -> None:
    live = LiveFlags(result_window=10)
    feed = Feed(live)
    feed("prod", env_create())
    for i in range(40):
        feed(f"prod/f{i}", flag_write(Kind.CREATE, "prod", f"f{i}", 1))
    assert live.result("acme", 0) is None and live.result("acme", 30) is None
    assert all(isinstance(live.result("acme", offset), Accepted) for offset in range(31, 41))
    assert len(live._results["acme"]) == 10
    for i in range(40, 100):  # trimming keeps at most 1/8 of the window beyond it
        feed(f"prod/f{i}", flag_write(Kind.CREATE, "prod", f"f{i}", 1))
        assert len(live._results["acme"].results) <= 11
    assert live.result("acme", 90) is None and isinstance(live.result("acme", 91), Accepted)
    assert live.result("globex", 40) is None


def test_history_offsets_are_accepted_records_of_the_environment() -> None:
    live = LiveFlags()
    feed = Feed(live)
    feed("prod", env_create())  # 0
    feed("dev", env_create("dev"))  # 1
    feed("prod/a", flag_write(Kind.CREATE, "prod", "a", 1))  # 2
    feed("prod/b", flag_write(Kind.CREATE, "prod", "b", 1))  # 3
    feed("prod/a", flag_write(Kind.UPDATE, "prod", "a", 1))  # 4: conflict
    feed("dev/a", flag_write(Kind.CREATE, "dev", "a", 2))  # 5
    issued = issue_sdk_key("prod", "web", "key-1", 1)
    feed(issued.record_key, issued.record_value)  # 6
    feed("prod/a", flag_write(Kind.UPDATE, "prod", "a", 3))  # 7
    assert list(live.history_offsets("acme", "prod")) == [0, 2, 3, 7]
    assert list(live.history_offsets("acme", "prod", "a")) == [0, 2, 7]
    assert list(live.history_offsets("acme", "dev", "a")) == [1, 5]
    assert list(live.history_offsets("acme", "prod", "zzz")) == [0]
    assert list(live.history_offsets("globex", "prod")) == []


def test_forgetting_a_tenant_tells_its_watchers_and_restarts_its_offsets() -> None:
    live = LiveFlags()
    feed = Feed(live)
    feed("prod", env_create())
    feed("prod/a", flag_write(Kind.CREATE, "prod", "a", 1))
    assert live.serving(ACME) is not None
    with live.watch(ACME) as watcher:
        live.forget_tenant("acme")
        update = watcher.poll()
        assert update is not None and not update.exists and dict(update.changes) == {"a": ChangeType.DELETE}
    assert live.serving(ACME) is None and live.applied("acme") == 0
    assert live.history_offsets("acme", "prod") == [] and live.result("acme", 1) is None
    Feed(live)("prod", env_create())
    assert live.serving(ACME) is not None and live.tenants() == ("acme",)


def test_out_of_order_records_are_refused() -> None:
    live = LiveFlags()
    live.apply("acme", 3, "prod", env_create())
    with pytest.raises(ValueError):
        live.apply("acme", 3, "@sdk-key/0123456789abcdef", b"{}")
    with pytest.raises(ValueError):
        live.apply("acme", 2, "prod", env_create())


def test_a_newer_format_stops_the_tenant_before_anything_changes() -> None:
    live = LiveFlags()
    feed = Feed(live)
    feed("prod", env_create())
    newer = b'{"env":"prod","format":2,"id":"0123456789abcdef","kind":"sdk-key-create"}'
    with pytest.raises(UnsupportedChange):
        live.apply("acme", 1, "@sdk-key/0123456789abcdef", newer)
    with pytest.raises(UnsupportedChange):
        live.apply("acme", 1, "prod", b'{"format":2}')
    assert live.applied("acme") == 1 and live.key_problems("acme") == ()
    assert live.history_offsets("acme", "prod") == [0] and live.result("acme", 1) is None


@pytest.mark.parametrize("seed", range(4))
def test_a_scope_cached_at_the_current_key_epoch_is_still_the_answer(seed: int) -> None:
    # What SDK key caches rely on: while key_epoch stands still, every key that
    # authenticated still authenticates to the same scope; flag writes leave it alone.
    rng = random.Random(seed)
    live = LiveFlags()
    feeds = {tenant: Feed(live, tenant) for tenant in ("acme", "globex")}
    issued: list[tuple[str, str, str]] = []  # (tenant, key id, clear key)
    cached: dict[str, tuple[Scope, int]] = {}
    for _ in range(300):
        tenant, env = rng.choice(("acme", "globex")), rng.choice(("prod", "dev"))
        feed, roll, epoch = feeds[tenant], rng.random(), live.key_epoch
        if roll < 0.1:
            store = live.store
            exists = store.has_environment(tenant, env)
            feed(env, env_delete(env, store.set_version(tenant, env)) if exists else env_create(env))
        elif roll < 0.2:
            key = issue_sdk_key(env, "k", "key-1", 1)
            feed(key.record_key, key.record_value)
            issued.append((tenant, key.key_id, key.clear_key))
        elif roll < 0.27 and issued:
            owner, key_id, _ = rng.choice(issued)
            feeds[owner](*revoke_record(key_id, env, "key-1", 2))
        elif roll < 0.29:
            live.forget_tenant(tenant)
            feeds[tenant] = Feed(live, tenant)
        else:
            flag = rng.choice(("a", "b"))
            kind = Kind.UPDATE if live.store.flag(tenant, env, flag) is not None else Kind.CREATE
            feed(f"{env}/{flag}", flag_write(kind, env, flag, live.store.flag_version(tenant, env, flag)))
            assert live.key_epoch == epoch
        for clear_key, (scope, at) in cached.items():
            if at == live.key_epoch:
                assert live.authenticate(clear_key) == scope
        for _, _, clear_key in issued:
            now = live.authenticate(clear_key)
            if now is not None:
                cached[clear_key] = (now, live.key_epoch)
            else:
                cached.pop(clear_key, None)
    assert len(cached) > 3 and live.key_epoch > 20


def test_a_revoke_wakes_the_watchers_of_its_environment_only() -> None:
    # Streams holding the key re-check it at once instead of at their next change.
    live = LiveFlags()
    feed = Feed(live)
    feed("prod", env_create())
    feed("dev", env_create("dev"))
    issued = issue_sdk_key("prod", "web", "key-1", 1)
    feed(issued.record_key, issued.record_value)
    with live.watch(ACME) as prod, live.watch(Scope("acme", "dev")) as dev:
        feed(*revoke_record(issued.key_id, "prod", "key-1", 2))
        update = prod.poll()
        assert update is not None and dict(update.changes) == {} and update.exists
        assert dev.poll() is None
        feed(*revoke_record(issued.key_id, "prod", "key-1", 3))  # revoked already: nothing new
        assert prod.poll() is None


def test_experiment_records_go_to_the_registry_and_count_as_applied() -> None:
    """``@experiment/`` records (flags/experiments/model.py) share the tenant's
    ``__flags`` order: the registry holds them, the store's position moves
    past them (writers waiting on them are woken), and flag records around
    them apply as before; a forgotten tenant loses its experiments."""
    live = LiveFlags()
    experiment = Experiment(
        "prod",
        "welcome",
        "new-welcome",
        "off",
        (Metric("signup", MetricType.CONVERSION),),
        State.DRAFT,
        "w",
        1,
    )
    live.apply("acme", 0, "prod", env_create())
    live.apply("acme", 1, experiment.key, encode_record(experiment))
    assert live.applied("acme") == 2
    stored = live.experiments.get("acme", "prod", "welcome")
    assert stored is not None and stored.experiment == experiment
    result = live.apply("acme", 2, "prod/new-welcome", flag_write(Kind.CREATE, "prod", "new-welcome", 1))
    assert type(result) is Accepted and live.store.flag("acme", "prod", "new-welcome") is not None
    with pytest.raises(ValueError):
        live.apply("acme", 2, experiment.key, encode_record(experiment))
    live.forget_tenant("acme")
    assert live.experiments.get("acme", "prod", "welcome") is None


async def test_wake_returns_no_changes_and_loses_none() -> None:
    live = LiveFlags()
    feed = Feed(live)
    feed("prod", env_create())
    with live.watch(ACME) as watcher:
        feed("prod/a", flag_write(Kind.CREATE, "prod", "a", 1))
        first = await watcher.next()
        watcher.wake()
        woken = await asyncio.wait_for(watcher.next(), 1)
        assert (dict(woken.changes), woken.version, woken.exists) == ({}, first.version, True)
        feed("prod/b", flag_write(Kind.CREATE, "prod", "b", 1))
        watcher.wake()  # after a change and before the read: the change stays
        update = await asyncio.wait_for(watcher.next(), 1)
        assert dict(update.changes) == {"b": ChangeType.WRITE} and watcher.poll() is None
