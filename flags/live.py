"""``LiveFlags``: every tenant's flags and SDK keys as the log says, ready to serve.

The follower feeds it every record of each tenant's ``__flags`` topic in offset
order (``apply``); request handlers read it (``serving``, ``authenticate``,
``watch``); writers wait on it (``wait_applied``, ``result``). Everything runs
on one asyncio loop: no locks, and nothing here awaits except ``wait_applied``
and ``Watcher.next``.

Records by key: ``<env>`` and ``<env>/<flag>`` go to ``FlagStore.apply``;
``@sdk-key/<id>`` to the SDK key index (``flags/sdk_keys.py``; the store only
skips its position). A malformed SDK key record is reported (logged, and kept in
``key_problems``) and changes nothing; a record of a newer format raises
``UnsupportedChange`` before anything changes (the follower must stop that
tenant, never skip it).

Cost model (bootstrap replays 100,000s of records): ``apply`` does the store's
work plus O(1) bookkeeping: it drops the environment's cached ``Serving``
and appends to integer arrays. The flagd document and the compiled evaluator
are built by ``serving`` on first use after a change, once per environment
version. Watchers of an environment are woken only when a record changed it,
each in O(1) plus the size of the change (no task per watcher).

Invariants:

- ``applied(t)`` is the position (offset + 1) of the tenant's last record,
  flag or key record alike (``FlagStore.skip`` keeps the store's equal).
- A cached ``Serving`` is dropped by every accepted record of its
  environment, so a returned one always matches the store (its ``version``
  is ``store.env_version``).
- Every watcher of an environment is woken by every accepted record that
  changed a flag in it or changed whether it exists, and (no changes) by the
  revoke of a key of the environment; between two reads the changes coalesce
  (later type wins), none is lost.
- ``wait_applied(t, p)`` resolves True as soon as ``applied(t) >= p``.
- ``result`` remembers at most ``result_window`` results per tenant (the
  latest; ~200 bytes each, mostly the result objects). ``history_offsets``
  keeps every accepted flag/env record's offset as machine integers: 12
  bytes a record (offset and flag number), plus a name table per
  environment (100,000 offsets over 100 x 100 flags: ~2.1 MB in all).
- An SDK key authenticates iff one stored create matches its id and secret,
  no revoke for that id exists in that tenant, and its environment exists now
  (a key of a deleted environment is inert; it serves again if an environment
  of that name is created again: deleting an environment should also append
  revokes for its keys; see ``sdk_keys``).
  ``authenticate`` answers server keys only (the flagd protocols);
  ``authenticate_ofrep`` both kinds, with the kind, for OFREP. A key's kind is
  its create record's, and its clear prefix must agree (``sdk_keys``).
- ``on_change`` (when set: the metrics, flags/telemetry.py) is called once
  per accepted record that changed a flag, after its watchers were woken,
  with the record's log timestamp and whether any watcher was woken.
- ``key_epoch`` grows on every record or event that may turn an SDK key's
  ``authenticate`` answer from a scope into None (any key record, any
  environment-level record, ``forget_tenant``): a scope cached at epoch *e*
  is still the answer while ``key_epoch == e``.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType

from flags.changes import UnsupportedChange
from flags.evaluator import FlagdEvaluator
from flags.experiments.model import is_experiment_record
from flags.experiments.registry import ExperimentRegistry
from flags.flagd_ops import DEFAULT_FRACTIONAL_VERSION, FractionalVersion
from flags.live_records import EnvHistory, ResultWindow
from flags.model import flagd_json
from flags.sdk_keys import (
    KeyKind,
    MalformedSdkKeyRecord,
    SdkKeyCreate,
    decode_record,
    is_sdk_key_record,
    parse_clear_key,
    verify_secret,
    verify_unknown,
)
from flags.store import Accepted, ApplyResult, ChangeType, FlagStore

__all__ = [
    "DEFAULT_RESULT_WINDOW",
    "FLAGS_TOPIC",
    "EnvUpdate",
    "LiveFlags",
    "Scope",
    "SdkKeyInfo",
    "Serving",
    "UnsupportedChange",
    "Watcher",
]

FLAGS_TOPIC = "__flags"
DEFAULT_RESULT_WINDOW = 10_000
MAX_KEY_PROBLEMS = 100

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Scope:
    """What an SDK key (or an admin call) is scoped to."""

    tenant: str
    env: str


@dataclass(frozen=True, slots=True)
class Serving:
    """One environment as requests see it; immutable, replaced on change."""

    scope: Scope
    version: int
    """``FlagStore.env_version``: changes on every change in the environment (ETags)."""
    configuration: str
    """The environment's flagd flags.json (``model.flagd_json``), for SyncFlags/FetchAllFlags."""
    evaluator: FlagdEvaluator
    """Loaded with ``configuration``; shared by every request: never call ``set_flags`` on it."""


@dataclass(frozen=True, slots=True)
class EnvUpdate:
    """What a watcher is woken with (coalesced since its last read)."""

    version: int
    changes: Mapping[str, ChangeType]
    """flag key -> write|update|delete; of several changes to one flag, the later wins."""
    exists: bool
    """False: the environment was deleted (or its tenant forgotten)."""


@dataclass(frozen=True, slots=True)
class SdkKeyInfo:
    """An SDK key as listings show it (never the secret, salt or digest)."""

    id: str
    env: str
    name: str
    created_by: str
    created_ms: int
    revoked: bool
    revoked_by: str = ""
    revoked_ms: int = 0
    kind: KeyKind = KeyKind.SERVER


class _Key:
    """One key id in one tenant. ``digest`` None: only a revoke is known
    (compaction kept the revoke, the latest record under the key)."""

    __slots__ = (
        "created_by",
        "created_ms",
        "digest",
        "env",
        "id",
        "kind",
        "name",
        "revoked_by",
        "revoked_ms",
        "salt",
        "scope",
    )

    def __init__(self, tenant: str, key_id: str, env: str) -> None:
        self.id = key_id
        self.env = env
        self.scope = Scope(tenant, env)
        self.name = ""
        self.salt = b""
        self.digest: bytes | None = None
        self.created_by = ""
        self.created_ms = 0
        self.revoked_by: str | None = None
        self.revoked_ms = 0
        self.kind = KeyKind.SERVER

    def info(self) -> SdkKeyInfo:
        revoked = self.revoked_by is not None
        return SdkKeyInfo(
            self.id,
            self.env,
            self.name,
            self.created_by,
            self.created_ms,
            revoked,
            self.revoked_by or "",
            self.revoked_ms,
            self.kind,
        )


class Watcher:
    """Changes to one environment since the last ``next``. Use as a context
    manager (it unregisters on exit)::

        with live.watch(scope) as watcher:
            serving = live.serving(scope)       # read after registering: nothing is missed
            while True:
                update = await watcher.next()   # safe to cancel (e.g. wait_for): nothing is lost
    """

    __slots__ = ("_changes", "_closed", "_event", "_exists", "_live", "_pending", "_version", "scope")

    def __init__(self, live: LiveFlags, scope: Scope) -> None:
        self.scope = scope
        self._live = live
        self._event = asyncio.Event()
        self._changes: dict[str, ChangeType] = {}
        self._version = 0
        self._exists = True
        self._pending = False
        self._closed = False

    def __enter__(self) -> Watcher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._live._unwatch(self)

    @property
    def pending(self) -> bool:
        return self._pending

    def _push(self, version: int, changes: Mapping[str, ChangeType], exists: bool) -> None:
        self._changes.update(changes)
        self._version = version
        self._exists = exists
        self._pending = True
        self._event.set()

    def wake(self) -> None:
        """Wake ``next`` with no new changes (a caller's own timer, e.g. a keep-alive)."""
        self._push(self._version, {}, self._exists)

    def poll(self) -> EnvUpdate | None:
        """The coalesced update now, or None if nothing changed since the last read."""
        if not self._pending:
            return None
        update = EnvUpdate(self._version, self._changes, self._exists)
        self._changes = {}
        self._pending = False
        self._event.clear()
        return update

    async def next(self) -> EnvUpdate:
        """Wait for the next change (coalesced with any that came since the last read)."""
        while not self._pending:
            if self._closed:
                raise RuntimeError("next() on a closed watcher")
            self._event.clear()
            await self._event.wait()
        update = self.poll()
        assert update is not None
        return update


class LiveFlags:
    """Every tenant's flags as the log says, for serving. Single-threaded (one asyncio loop)."""

    def __init__(
        self,
        *,
        fractional: FractionalVersion | str = DEFAULT_FRACTIONAL_VERSION,
        clock: Callable[[], float] = time.time,
        result_window: int = DEFAULT_RESULT_WINDOW,
    ) -> None:
        self.store = FlagStore()
        self.experiments = ExperimentRegistry()
        """The tenants' ``@experiment/`` records (flags/experiments/registry.py)."""
        self.fractional = FractionalVersion(fractional)
        self._clock = clock
        self._result_window = result_window
        self._tenants: set[str] = set()
        self._serving: dict[tuple[str, str], Serving] = {}
        self._watchers: dict[tuple[str, str], dict[Watcher, None]] = {}
        self._results: dict[str, ResultWindow] = {}
        self._history: dict[str, dict[str, EnvHistory]] = {}
        """tenant -> environment -> offsets of its accepted records."""
        self._waiters: dict[str, list[tuple[int, int, asyncio.Future[bool]]]] = {}
        self._waiter_seq = itertools.count()
        self._keys: dict[str, dict[str, _Key]] = {}
        """tenant -> key id -> key."""
        self._keys_by_id: dict[str, list[_Key]] = {}
        """key id -> that id in every tenant that has one (ids are chosen by writers:
        another tenant may reuse one; the digest decides)."""
        self._key_problems: dict[str, deque[tuple[int, str]]] = {}
        self.key_epoch = 0
        """Read-only for others (module invariants): lets callers cache ``authenticate``."""
        self.on_change: Callable[[int | None, bool], None] | None = None
        """Told of each accepted flag change: ``(log timestamp ms or None, streams woken)``."""

    # --- the log ---------------------------------------------------------------------

    def apply(
        self, tenant: str, offset: int, key: str, value: bytes | None, timestamp_ms: int | None = None
    ) -> ApplyResult | None:
        """Apply the tenant's record at ``offset`` (offsets strictly increase per
        tenant, else ``ValueError``). None for SDK key records. ``timestamp_ms``:
        the record's log timestamp (only ``on_change`` reads it)."""
        if is_sdk_key_record(key):
            self._apply_key(tenant, offset, key, value)
            self._applied(tenant)
            return None
        if is_experiment_record(key):
            if offset < self.store.applied(tenant):  # the order the store checks, before any change
                raise ValueError(
                    f"tenant {tenant!r}: offset {offset} after position {self.store.applied(tenant)}"
                )
            self.experiments.apply(tenant, offset, key, value)  # UnsupportedChange: nothing changed
            self.store.skip(tenant, offset)
            self._tenants.add(tenant)
            self._applied(tenant)
            return None
        result = self.store.apply(tenant, offset, key, value)
        self._tenants.add(tenant)
        results = self._results.get(tenant)
        if results is None:
            results = self._results[tenant] = ResultWindow(self._result_window)
        results.add(offset, result)
        if type(result) is Accepted:
            env, _, flag = key.partition("/")
            if not flag:  # whether the environment exists may have changed: so may a key's answer
                self.key_epoch += 1
            self._serving.pop((tenant, env), None)
            history = self._history.setdefault(tenant, {}).get(env)
            if history is None:
                history = self._history[tenant][env] = EnvHistory()
            history.add(flag or None, offset)
            watchers = self._watchers.get((tenant, env))
            # An environment-level record may change whether it exists even
            # when no flag changes (an empty env-create or env-delete).
            woken = False
            if watchers and (result.changes or not flag):
                self._wake(tenant, env, watchers, {c.flag: c.type for c in result.changes if c.env == env})
                woken = True
            if result.changes and self.on_change is not None:
                self.on_change(timestamp_ms, woken)
        self._applied(tenant)
        return result

    def _apply_key(self, tenant: str, offset: int, key: str, value: bytes | None) -> None:
        try:
            record = decode_record(key, value)
        except MalformedSdkKeyRecord as exc:
            # Check the order the store would before reporting anything.
            self.store.skip(tenant, offset)
            self._tenants.add(tenant)
            self._key_problem(tenant, offset, str(exc))
            return
        # (UnsupportedChange propagates: nothing has changed yet.)
        self.store.skip(tenant, offset)
        self._tenants.add(tenant)
        self.key_epoch += 1  # a revoke ends a key; a create may clash with another tenant's id
        keys = self._keys.setdefault(tenant, {})
        known = keys.get(record.id)
        if isinstance(record, SdkKeyCreate):
            if known is not None:
                # Ids are never reused: a second create must not resurrect a revoked key.
                self._key_problem(
                    tenant, offset, f"key {record.id} is created again; the first record stands"
                )
                return
            known = keys[record.id] = _Key(tenant, record.id, record.env)
            self._keys_by_id.setdefault(record.id, []).append(known)
            known.name = record.name
            known.salt = record.salt
            known.digest = record.digest
            known.created_by = record.who
            known.created_ms = record.when
            known.kind = record.key_kind
            return
        if known is None:
            known = keys[record.id] = _Key(tenant, record.id, record.env)
            self._keys_by_id.setdefault(record.id, []).append(known)
        elif known.env != record.env:
            # Revoke anyway: refusing to serve is the safe side.
            self._key_problem(
                tenant, offset, f"revoke of key {record.id} names {record.env!r}, not {known.env!r}"
            )
        if known.revoked_by is None:
            known.revoked_by = record.who
            known.revoked_ms = record.when
            # Streams holding the key re-check it now (an empty change), not at their next change.
            watchers = self._watchers.get((tenant, known.env))
            if watchers:
                self._wake(tenant, known.env, watchers, {})

    def _key_problem(self, tenant: str, offset: int, message: str) -> None:
        _log.warning("tenant %s, %s offset %d: %s", tenant, FLAGS_TOPIC, offset, message)
        problems = self._key_problems.get(tenant)
        if problems is None:
            problems = self._key_problems[tenant] = deque(maxlen=MAX_KEY_PROBLEMS)
        problems.append((offset, message))

    def _applied(self, tenant: str) -> None:
        waiters = self._waiters.get(tenant)
        if not waiters:
            return
        position = self.store.applied(tenant)
        while waiters and waiters[0][0] <= position:
            future = heapq.heappop(waiters)[2]
            if not future.done():
                future.set_result(True)

    def _wake(
        self, tenant: str, env: str, watchers: dict[Watcher, None], changes: Mapping[str, ChangeType]
    ) -> None:
        version = self.store.env_version(tenant, env)
        exists = self.store.has_environment(tenant, env)
        for watcher in watchers:
            watcher._push(version, changes, exists)

    def forget_tenant(self, tenant: str) -> None:
        """The tenant was deleted: drop its flags, keys and results; its
        watchers see every flag deleted and ``exists`` False; its
        ``wait_applied`` callers get False."""
        self.key_epoch += 1
        self.experiments.forget_tenant(tenant)
        for (owner, env), watchers in list(self._watchers.items()):
            if owner == tenant:
                flag_set = self.store.flag_set(tenant, env)
                gone = {} if flag_set is None else dict.fromkeys(flag_set.flags, ChangeType.DELETE)
                for watcher in watchers:
                    watcher._push(self.store.env_version(tenant, env), gone, False)
        self.store.forget_tenant(tenant)
        self._tenants.discard(tenant)
        for scope in [s for s in self._serving if s[0] == tenant]:
            del self._serving[scope]
        self._results.pop(tenant, None)
        self._history.pop(tenant, None)
        self._key_problems.pop(tenant, None)
        for key_id in self._keys.pop(tenant, {}):
            others = [k for k in self._keys_by_id[key_id] if k.scope.tenant != tenant]
            if others:
                self._keys_by_id[key_id] = others
            else:
                del self._keys_by_id[key_id]
        for _, _, future in self._waiters.pop(tenant, []):
            if not future.done():
                future.set_result(False)

    # --- reading ---------------------------------------------------------------------

    def tenants(self) -> tuple[str, ...]:
        return tuple(sorted(self._tenants))

    def serving(self, scope: Scope) -> Serving | None:
        """The environment as requests see it; None: no such environment.
        Compiled on first use after a change, then cached."""
        cache_key = (scope.tenant, scope.env)
        cached = self._serving.get(cache_key)
        if cached is not None:
            return cached
        flag_set = self.store.flag_set(scope.tenant, scope.env)
        if flag_set is None:
            return None
        configuration = flagd_json(flag_set)
        evaluator = FlagdEvaluator(fractional=self.fractional, clock=self._clock)
        evaluator.set_flags(configuration)
        serving = Serving(scope, self.store.env_version(scope.tenant, scope.env), configuration, evaluator)
        self._serving[cache_key] = serving
        return serving

    def applied(self, tenant: str) -> int:
        """Position (offset + 1) of the tenant's last applied record (0: none)."""
        return self.store.applied(tenant)

    async def wait_applied(self, tenant: str, position: int, timeout_s: float) -> bool:
        """Whether the tenant's records up to ``position`` (offset + 1) are applied
        within ``timeout_s``. False also when the tenant is forgotten meanwhile."""
        if self.store.applied(tenant) >= position:
            return True
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        entry = (position, next(self._waiter_seq), future)
        waiters = self._waiters.setdefault(tenant, [])
        heapq.heappush(waiters, entry)
        try:
            return await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except TimeoutError:
            return False
        finally:
            if not future.done():
                future.cancel()
                # Timeouts are rare: an O(n) removal keeps the heap free of dead entries.
                current = self._waiters.get(tenant)
                if current is not None and entry in current:
                    current.remove(entry)
                    heapq.heapify(current)

    def result(self, tenant: str, offset: int) -> ApplyResult | None:
        """What applying the record at ``offset`` decided; None for key records,
        unknown offsets and those older than the window."""
        results = self._results.get(tenant)
        return None if results is None else results.get(offset)

    def history_offsets(self, tenant: str, env: str, flag: str | None = None) -> Sequence[int]:
        """Offsets (ascending) of accepted records under ``<env>`` and every
        ``<env>/<f>`` (flag None) or ``<env>/<flag>``. Conflicts and refusals
        changed nothing and are left out; the records are read from the log."""
        history = self._history.get(tenant, {}).get(env)
        if history is None:
            return []
        return history.offsets.tolist() if flag is None else history.of_flag(flag)

    def key_problems(self, tenant: str) -> tuple[tuple[int, str], ...]:
        """``(offset, message)`` of the latest malformed SDK key records of the tenant."""
        return tuple(self._key_problems.get(tenant, ()))

    # --- SDK keys ----------------------------------------------------------------------

    def authenticate(self, clear_key: str) -> Scope | None:
        """The scope of a server SDK key; None if it is not one, unknown,
        revoked, or its environment does not exist."""
        found = self.authenticate_ofrep(clear_key)
        return found[0] if found is not None and found[1] is KeyKind.SERVER else None

    def authenticate_ofrep(self, clear_key: str) -> tuple[Scope, KeyKind] | None:
        """The scope and kind of an SDK key of either kind (OFREP); None as
        ``authenticate``, and when the clear prefix is not the key's kind."""
        parsed = parse_clear_key(clear_key)
        if parsed is None:
            return None
        kind, key_id, secret = parsed
        candidates = self._keys_by_id.get(key_id)
        if not candidates:
            verify_unknown(secret)
            return None
        matches = []
        # Every candidate is checked (no early exit): the work does not depend on which matches.
        for key in candidates:
            if key.digest is None:
                verify_unknown(secret)
            elif verify_secret(key.salt, key.digest, secret):
                matches.append(key)
        if len(matches) != 1:
            # Two tenants holding the same id *and* digest is not something an honest
            # writer produces; serving either would be a guess.
            return None
        key = matches[0]
        if key.revoked_by is not None or not self.store.has_environment(key.scope.tenant, key.env):
            return None
        if key.kind is not kind:  # e.g. a client key's secret spelled as a server key
            return None
        return key.scope, kind

    def sdk_keys(self, tenant: str, env: str | None = None) -> tuple[SdkKeyInfo, ...]:
        """The tenant's keys (of ``env``, if given), in the order they were first recorded."""
        return tuple(k.info() for k in self._keys.get(tenant, {}).values() if env is None or k.env == env)

    # --- watching --------------------------------------------------------------------

    def watch(self, scope: Scope) -> Watcher:
        """A watcher of ``scope`` (the environment need not exist yet)."""
        watcher = Watcher(self, scope)
        self._watchers.setdefault((scope.tenant, scope.env), {})[watcher] = None
        return watcher

    def _unwatch(self, watcher: Watcher) -> None:
        key = (watcher.scope.tenant, watcher.scope.env)
        watchers = self._watchers.get(key)
        if watchers is not None:
            watchers.pop(watcher, None)
            if not watchers:
                del self._watchers[key]

    def watcher_count(self, scope: Scope) -> int:
        return len(self._watchers.get((scope.tenant, scope.env), ()))
