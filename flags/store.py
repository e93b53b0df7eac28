"""The materialised view of every tenant's flag sets, built from the log.

``FlagStore.apply(tenant, offset, key, value)`` takes each record of a
tenant's flag-change topic (``flags/changes.py``) in log order; ``value``
None is a tombstone. Pure: no I/O, no clock. Results are values
(``Accepted``, ``Conflict``, ``Rejected``); a record from a newer format
raises ``UnsupportedChange`` before anything changes.

Versions are positions (``offset + 1``) of the record that produced a state;
0 is "never". An environment has a *set version* (its latest env-level
record) and each flag an effective version: its own last accepted record if
that is newer than the set version, else the set version.

Deciding a flag write (``create`` ... ``delete``) with expected version e
against the flag's effective version v, at position p:

- the environment must exist, and e < p (else ``Rejected``);
- e < v: stale, ``Conflict`` (nothing changes);
- e == v: the kind's precondition (create: absent; the others: present);
- e > v: a *gap*. An honest writer read v' <= v (its view is a prefix of the
  log and versions only grow), so a gap never happens on a complete log; it
  happens on a *compacted* log whose earlier records for the key are gone,
  and then the record was accepted when first applied. It is accepted
  unconditionally: the record carries the complete new definition.

Environment-level records (``env-create``, ``import``, ``env-delete``) are
always applied (last writer wins; the writer checks its expected set
version before writing — ``check_change``): ``env-create`` and ``import``
replace the whole set, ``env-delete`` empties it, and every flag's own
state older than the record is dropped. They cannot be refused at apply
time because compaction keeps only the latest record under ``<env>``: a
refused one would become the survivor, and every flag's decision depends on
the environment, so the damage would spread beyond one key.

Why a replay of the compacted log rebuilds the same store (tests check it):
compaction keeps, per key, the latest record (and everything younger than
``min_compaction_lag_ms``). After the latest env-level record, the
environment is the same on every replay; flag records before it are
overwritten by it. A flag's latest *effective* record replays as a gap or as
an exact match and sets the same state and version. The one hazard is a
*non-effective* record (a conflict, a refused or malformed write) that is
the latest under its key: on a replay it could be accepted. So every such
record marks its key *dirty* until a ``restate`` record (the key's current
state, its version, and ``as_of`` = the writer's applied position) follows
it; ``needs_restate``/``restate`` give the writer what to append (the writer
told "conflict" appends it at once; a sweep covers crashes). A restate is
effective when the flag's state has not changed since ``as_of`` (else it is
stale: ignored, and the key stays dirty), and then sets the restated state,
which on a complete log changes nothing. Compaction is safe once restates
land within ``min_compaction_lag_ms`` (hours at least; 90 days by default).

Tombstones: on a flag key, a purge (the flag's own state is forgotten: it
falls back to the set); never written for a delete, which must stay visible
so stale writes after it conflict. On an environment key, refused: the
service never writes one (it would lose the set's base after compaction).

Invariants (``check_invariants``):

- Per tenant, applied positions strictly increase; every version and origin
  is at most the applied position.
- Every flag override is at least as new as its environment's set version;
  a deleted environment has no base flags, evaluators or overrides; every
  flag key and environment name is valid.
- Tenants are separate maps: every query takes a tenant and reads only it.
"""

from __future__ import annotations

import base64
import binascii
import enum
import json
from dataclasses import dataclass, field
from typing import Any

from flags.changes import (
    Change,
    Kind,
    MalformedChange,
    decode,
    parse_record_key,
)
from flags.model import (
    Flag,
    FlagSet,
    InvalidDefinition,
    check_environment_name,
    check_flag_key,
    validate_flag,
)

__all__ = [
    "Accepted",
    "ApplyResult",
    "ChangeType",
    "Conflict",
    "FlagChanged",
    "FlagStore",
    "FlagView",
    "InconsistentStore",
    "Page",
    "RejectReason",
    "Rejected",
]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000


class InconsistentStore(AssertionError):
    pass


class RejectReason(enum.StrEnum):
    MALFORMED = "MALFORMED"
    UNKNOWN_ENVIRONMENT = "UNKNOWN_ENVIRONMENT"
    FLAG_EXISTS = "FLAG_EXISTS"
    UNKNOWN_FLAG = "UNKNOWN_FLAG"
    INVALID_EXPECTED_VERSION = "INVALID_EXPECTED_VERSION"
    INVALID_DEFINITION = "INVALID_DEFINITION"
    """Only from ``check_change`` (e.g. a ``$ref`` to no evaluator)."""
    TOMBSTONE_ON_ENVIRONMENT = "TOMBSTONE_ON_ENVIRONMENT"


class ChangeType(enum.StrEnum):
    """flagd's ``configuration_change`` types."""

    WRITE = "write"
    UPDATE = "update"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class FlagChanged:
    env: str
    flag: str
    type: ChangeType


@dataclass(frozen=True, slots=True)
class Accepted:
    offset: int
    version: int
    changes: tuple[FlagChanged, ...] = ()


@dataclass(frozen=True, slots=True)
class Conflict:
    offset: int
    expected: int
    current: int
    message: str


@dataclass(frozen=True, slots=True)
class Rejected:
    offset: int
    reason: RejectReason
    message: str


ApplyResult = Accepted | Conflict | Rejected


@dataclass(frozen=True, slots=True)
class FlagView:
    key: str
    version: int
    flag: Flag


@dataclass(frozen=True, slots=True)
class Page:
    items: tuple[FlagView, ...]
    next_page_token: str


@dataclass(frozen=True, slots=True)
class _Entry:
    version: int
    flag: Flag | None
    origin: int
    """Position of the record that last set this entry (restates included)."""


@dataclass(slots=True)
class _Env:
    version: int
    origin: int
    exists: bool
    base: FlagSet = field(default_factory=FlagSet)
    overrides: dict[str, _Entry] = field(default_factory=dict)

    def effective(self, key: str) -> _Entry:
        entry = self.overrides.get(key)
        if entry is not None:
            return entry
        return _Entry(self.version, self.base.flags.get(key), self.origin)

    def flag_keys(self) -> set[str]:
        return set(self.base.flags) | set(self.overrides)

    def live_flags(self) -> dict[str, _Entry]:
        entries = {key: self.effective(key) for key in sorted(self.flag_keys())}
        return {key: e for key, e in entries.items() if e.flag is not None}


@dataclass(slots=True)
class _Tenant:
    applied: int = 0
    envs: dict[str, _Env] = field(default_factory=dict)
    dirty: dict[str, int] = field(default_factory=dict)
    """record key -> position of its latest non-effective record."""


def _change_type(before: Flag | None, after: Flag | None) -> ChangeType | None:
    if before == after:
        return None
    if before is None:
        return ChangeType.WRITE
    return ChangeType.DELETE if after is None else ChangeType.UPDATE


class FlagStore:
    """Every tenant's environments and flag sets (see the module docstring)."""

    __slots__ = ("_tenants",)

    def __init__(self) -> None:
        self._tenants: dict[str, _Tenant] = {}

    # --- applying the log ---------------------------------------------------------

    def apply(self, tenant: str, offset: int, key: str, value: bytes | None) -> ApplyResult:
        t = self._tenants.setdefault(tenant, _Tenant())
        position = offset + 1
        if position <= t.applied:
            raise ValueError(f"tenant {tenant!r}: offset {offset} applied after position {t.applied}")
        try:
            env, flag = parse_record_key(key)
            change = None if value is None else decode(key, value)
        except MalformedChange as exc:
            t.applied = position
            t.dirty[key] = position
            return Rejected(offset, RejectReason.MALFORMED, str(exc))
        # (UnsupportedChange propagates: nothing has changed yet.)
        t.applied = position
        if change is None:
            if flag is None:
                return Rejected(offset, RejectReason.TOMBSTONE_ON_ENVIRONMENT, f"tombstone on {key!r}")
            return self._purge(t, offset, env, flag)
        if change.flag is None:
            return self._apply_env(t, offset, change)
        result = self._apply_flag(t, offset, change)
        # A refusal for a missing environment needs no restate: the latest
        # env-level record (or none) is the same on every replay.
        if not isinstance(result, Accepted) and not (
            isinstance(result, Rejected) and result.reason is RejectReason.UNKNOWN_ENVIRONMENT
        ):
            t.dirty[key] = position
        return result

    def skip(self, tenant: str, offset: int) -> None:
        """Advance the tenant's applied position past a record of its topic
        that is not a flag change (an ``@sdk-key/`` record), so positions here
        stay the topic's positions. Same order rule as ``apply``."""
        t = self._tenants.setdefault(tenant, _Tenant())
        position = offset + 1
        if position <= t.applied:
            raise ValueError(f"tenant {tenant!r}: offset {offset} applied after position {t.applied}")
        t.applied = position

    def forget_tenant(self, tenant: str) -> None:
        """Drop everything about ``tenant`` (the tenant was deleted); a later
        ``apply`` starts it afresh from any offset."""
        self._tenants.pop(tenant, None)

    def _purge(self, t: _Tenant, offset: int, env_name: str, flag: str) -> ApplyResult:
        t.dirty.pop(f"{env_name}/{flag}", None)
        env = t.envs.get(env_name)
        if env is None:
            return Accepted(offset, 0)
        before = env.effective(flag)
        env.overrides.pop(flag, None)
        after = env.effective(flag)
        kind = _change_type(before.flag, after.flag)
        return Accepted(offset, after.version, () if kind is None else (FlagChanged(env_name, flag, kind),))

    def _apply_env(self, t: _Tenant, offset: int, change: Change) -> ApplyResult:
        position = offset + 1
        old = t.envs.get(change.env)
        before = {} if old is None or not old.exists else old.live_flags()
        if change.kind is Kind.ENV_DELETE:
            new = _Env(position, position, exists=False)
        else:
            base = change.definition if isinstance(change.definition, FlagSet) else FlagSet()
            new = _Env(position, position, exists=True, base=base)
        t.envs[change.env] = new
        prefix = change.env + "/"
        for key in [k for k, at in t.dirty.items() if k.startswith(prefix) and at < position]:
            del t.dirty[key]
        after = new.live_flags() if new.exists else {}
        changes = []
        for key in sorted(set(before) | set(after)):
            b, a = before.get(key), after.get(key)
            kind = _change_type(b.flag if b else None, a.flag if a else None)
            if kind is not None:
                changes.append(FlagChanged(change.env, key, kind))
        return Accepted(offset, position, tuple(changes))

    def _apply_flag(self, t: _Tenant, offset: int, change: Change) -> ApplyResult:
        position = offset + 1
        assert change.flag is not None
        key = change.flag
        env = t.envs.get(change.env)
        if env is None or not env.exists:
            return Rejected(offset, RejectReason.UNKNOWN_ENVIRONMENT, f"no environment {change.env!r}")
        current = env.effective(key)
        if change.kind is Kind.RESTATE:
            return self._restate(t, env, offset, change, current)
        expected = change.expected
        if expected >= position:
            return Rejected(
                offset,
                RejectReason.INVALID_EXPECTED_VERSION,
                f"expected version {expected} is not below this record's position {position}",
            )
        if expected < current.version:
            return Conflict(
                offset,
                expected,
                current.version,
                f"{change.env}/{key} is at version {current.version}, not {expected}: read it again",
            )
        if expected == current.version:
            if change.kind is Kind.CREATE and current.flag is not None:
                return Rejected(offset, RejectReason.FLAG_EXISTS, f"flag {key!r} exists in {change.env!r}")
            if change.kind is not Kind.CREATE and current.flag is None:
                return Rejected(offset, RejectReason.UNKNOWN_FLAG, f"no flag {key!r} in {change.env!r}")
        new = None if change.kind is Kind.DELETE else change.definition
        assert new is None or isinstance(new, Flag)
        env.overrides[key] = _Entry(position, new, position)
        kind = _change_type(current.flag, new)
        return Accepted(offset, position, () if kind is None else (FlagChanged(change.env, key, kind),))

    def _restate(self, t: _Tenant, env: _Env, offset: int, change: Change, current: _Entry) -> ApplyResult:
        position = offset + 1
        assert change.flag is not None and not isinstance(change.definition, FlagSet)
        if current.origin > change.as_of or change.as_of >= position or change.version < env.version:
            return Conflict(
                offset,
                change.version,
                current.version,
                f"stale restate of {change.env}/{change.flag} (as of {change.as_of})",
            )
        key = change.flag
        if change.version == env.version and change.definition == env.base.flags.get(key):
            env.overrides.pop(key, None)
        else:
            env.overrides[key] = _Entry(change.version, change.definition, position)
        record_key = f"{change.env}/{key}"
        if t.dirty.get(record_key, position) <= change.as_of:
            del t.dirty[record_key]
        kind = _change_type(current.flag, change.definition)
        return Accepted(offset, change.version, () if kind is None else (FlagChanged(change.env, key, kind),))

    # --- helping writers ----------------------------------------------------------

    def check_change(self, tenant: str, change: Change) -> Conflict | Rejected | None:
        """What a writer checks against this view before appending ``change``
        (offset -1 in results: nothing was applied): exact expected versions
        (no gap), preconditions, and ``$ref`` targets against the
        environment's evaluators. None: append it."""
        t = self._tenants.get(tenant, _Tenant())
        env = t.envs.get(change.env)
        if change.flag is None:
            current = 0 if env is None else env.version
            if change.expected != current:
                return Conflict(-1, change.expected, current, f"environment {change.env!r} changed")
            exists = env is not None and env.exists
            if change.kind is Kind.ENV_CREATE and exists:
                return Rejected(-1, RejectReason.FLAG_EXISTS, f"environment {change.env!r} exists")
            if change.kind is Kind.ENV_DELETE and not exists:
                return Rejected(-1, RejectReason.UNKNOWN_ENVIRONMENT, f"no environment {change.env!r}")
            return None
        if env is None or not env.exists:
            return Rejected(-1, RejectReason.UNKNOWN_ENVIRONMENT, f"no environment {change.env!r}")
        entry = env.effective(change.flag)
        if change.kind is not Kind.RESTATE and change.expected != entry.version:
            return Conflict(-1, change.expected, entry.version, f"{change.key} is at version {entry.version}")
        if isinstance(change.definition, Flag):
            try:
                validate_flag(change.flag, change.definition.to_json(), env.base.evaluators)
            except InvalidDefinition as exc:
                return Rejected(-1, RejectReason.INVALID_DEFINITION, str(exc))
        result = self._apply_flag(_Tenant(t.applied, {change.env: _copy_env(env)}), t.applied, change)
        return None if isinstance(result, Accepted) else result

    def needs_restate(self, tenant: str) -> tuple[tuple[str, str, int], ...]:
        """``(env, flag, position)`` of keys whose latest record did not take
        effect: append ``restate(...)`` for each before compaction reaches them."""
        t = self._tenants.get(tenant, _Tenant())
        out = []
        for key, at in sorted(t.dirty.items()):
            env, _, flag = key.partition("/")
            e = t.envs.get(env)
            # In a missing environment the latest env-level record decides
            # everything on every replay: nothing to restate.
            if flag and e is not None and e.exists:
                out.append((env, flag, at))
        return tuple(out)

    def restate(self, tenant: str, env: str, flag: str, who: str, when: int) -> Change | None:
        """The restate record for ``env/flag`` as of this view, or None when
        the environment does not exist here (its env-level record covers it)."""
        t = self._tenants.get(tenant, _Tenant())
        e = t.envs.get(env)
        if e is None or not e.exists:
            return None
        entry = e.effective(flag)
        return Change(
            Kind.RESTATE, env, flag, who, when, definition=entry.flag, version=entry.version, as_of=t.applied
        )

    # --- queries ------------------------------------------------------------------

    def applied(self, tenant: str) -> int:
        """Position (offset + 1) of the tenant's last applied record."""
        t = self._tenants.get(tenant)
        return 0 if t is None else t.applied

    def environments(self, tenant: str) -> tuple[str, ...]:
        t = self._tenants.get(tenant, _Tenant())
        return tuple(name for name in sorted(t.envs) if t.envs[name].exists)

    def has_environment(self, tenant: str, env: str) -> bool:
        return self._env(tenant, env) is not None

    def _env(self, tenant: str, env: str) -> _Env | None:
        t = self._tenants.get(tenant)
        e = None if t is None else t.envs.get(env)
        return e if e is not None and e.exists else None

    def set_version(self, tenant: str, env: str) -> int:
        """The version env-level writes expect (0: never existed)."""
        t = self._tenants.get(tenant)
        e = None if t is None else t.envs.get(env)
        return 0 if e is None else e.version

    def env_version(self, tenant: str, env: str) -> int:
        """Changes whenever anything in the environment changes (ETags)."""
        e = self._env(tenant, env)
        if e is None:
            return self.set_version(tenant, env)
        return max([e.version, *(entry.version for entry in e.overrides.values())])

    def flag_version(self, tenant: str, env: str, flag: str) -> int:
        """The version a write of ``env/flag`` expects (also for a create)."""
        t = self._tenants.get(tenant)
        e = None if t is None else t.envs.get(env)
        return 0 if e is None else e.effective(flag).version

    def flag(self, tenant: str, env: str, flag: str) -> FlagView | None:
        e = self._env(tenant, env)
        entry = None if e is None else e.effective(flag)
        if entry is None or entry.flag is None:
            return None
        return FlagView(flag, entry.version, entry.flag)

    def flag_set(self, tenant: str, env: str) -> FlagSet | None:
        """The environment's flags.json content (keys sorted), or None."""
        e = self._env(tenant, env)
        if e is None:
            return None
        flags = {key: entry.flag for key, entry in e.live_flags().items() if entry.flag is not None}
        return FlagSet(flags, e.base.evaluators, e.base.metadata)

    def list_flags(self, tenant: str, env: str, page_size: int = 0, page_token: str = "") -> Page:
        """The environment's flags by key, keyset-paginated. A token names the
        environment it belongs to and is refused (``ValueError``) elsewhere."""
        if page_size < 0:
            raise ValueError("page_size must not be negative")
        size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        after = _read_token(env, page_token) if page_token else None
        e = self._env(tenant, env)
        rows = (
            [] if e is None else [FlagView(k, x.version, x.flag) for k, x in e.live_flags().items() if x.flag]
        )
        if after is not None:
            rows = [row for row in rows if row.key > after]
        page = tuple(rows[:size])
        token = _write_token(env, page[-1].key) if len(rows) > size else ""
        return Page(page, token)

    # --- comparing and checking ---------------------------------------------------

    def view(self) -> Any:
        """Everything a reader can observe, canonical: equal views, equal stores."""
        out = []
        for name in sorted(self._tenants):
            envs: list[Any] = []
            t = self._tenants[name]
            for env_name in sorted(t.envs):
                e = t.envs[env_name]
                if not e.exists:
                    envs.append((env_name, e.version, False))
                    continue
                flags = tuple((k, x.version, x.flag) for k, x in e.live_flags().items())
                versions = tuple((k, e.effective(k).version) for k in sorted(e.flag_keys()))
                sets = (
                    json.dumps(e.base.evaluators, sort_keys=True),
                    json.dumps(e.base.metadata, sort_keys=True),
                )
                envs.append((env_name, e.version, True, sets, flags, versions))
            if envs:
                out.append((name, tuple(envs)))
        return tuple(out)

    def check_invariants(self) -> None:
        for name, t in self._tenants.items():
            for env_name, e in t.envs.items():
                where = f"{name}/{env_name}"
                if check_environment_name(env_name):
                    raise InconsistentStore(f"{where}: environment name")
                if not 0 < e.version <= t.applied or not 0 < e.origin <= t.applied:
                    raise InconsistentStore(f"{where}: set version {e.version} of {t.applied}")
                if not e.exists and (e.base != FlagSet() or e.overrides):
                    raise InconsistentStore(f"{where}: a deleted environment has flags")
                for key in e.flag_keys():
                    entry = e.effective(key)
                    if check_flag_key(key) or entry.version < e.version or entry.origin > t.applied:
                        raise InconsistentStore(f"{where}/{key}: key, version {entry.version} or origin")
            for key, at in t.dirty.items():
                if at > t.applied:
                    raise InconsistentStore(f"{name}: dirty {key} at {at} past {t.applied}")


def _copy_env(env: _Env) -> _Env:
    return _Env(env.version, env.origin, env.exists, env.base, dict(env.overrides))


def _write_token(env: str, last_key: str) -> str:
    raw = json.dumps([1, env, last_key], separators=(",", ":")).encode("utf-8")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _read_token(env: str, token: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        version, token_env, last_key = json.loads(raw)
    except (binascii.Error, ValueError, TypeError):
        raise ValueError(f"page token {token[:40]!r} is not one this server issued") from None
    if version != 1 or token_env != env or not isinstance(last_key, str):
        raise ValueError("the page token belongs to another listing; list again without a token")
    return last_key
