"""The flag-change record: one event on a tenant's flag-change topic.

Topic: each tenant has one compacted topic of flag changes (the tenant is
implied by the topic; nothing in a record names it). Record key (UTF-8):

================== =============================================================
key                records under it
================== =============================================================
``<env>``          environment-level: ``env-create``, ``import``, ``env-delete``
``<env>/<flag>``   one flag: ``create``, ``update``, ``enable``, ``disable``,
                   ``rollback``, ``delete``, ``restate``
================== =============================================================

Environment names never contain ``/`` and flag keys never do either, so the
two key spaces cannot collide and a key says which it is.

Record value: canonical JSON, UTF-8 — one object, keys sorted, no
whitespace, no NaN/Infinity, integers without exponent. JSON rather than the
binary ``wire`` dialect because (a) the payload *is* a flagd JSON document,
which would otherwise be JSON inside binary, and (b) consumers in other
languages read this topic (the documented subscription format); canonical
form keeps the dialect's property that one change has exactly one encoding
(``decode`` refuses anything that does not re-encode to the same bytes).

============== ======= ==========================================================
field          type    meaning
============== ======= ==========================================================
``format``     int     record format version, ``1``; a newer one is refused
                       (``UnsupportedChange``), never skipped
``kind``       str     one of ``KINDS`` (below)
``env``        str     the environment (must match the record key)
``flag``       str     the flag key (flag kinds only; must match the key)
``who``        str     the API key *id* or name that made the change (never the
                       key itself), 1-128 characters
``when``       int     milliseconds since the Unix epoch (the writer's clock;
                       informational, never used to decide anything)
``expected``   int     the version the writer read (0: never existed); every
                       kind except ``restate``
``definition`` object  flag kinds except ``delete``: the complete new flag (flagd
                       flag object); ``import``: the complete flag set
                       (flags.json); ``restate``: the flag, or null for absent
``version``    int     ``restate`` only: the version being restated
``as_of``      int     ``restate`` only: the writer had applied every record
                       below this version (offset + 1)
``rollback_to``int     ``rollback`` only: the version whose definition this
                       restores (audit; the definition is what counts)
============== ======= ==========================================================

Versions are log positions: the version of a state is ``offset + 1`` of the
record that produced it (0 means "never"), so they need no counter, are
strictly increasing per key, and are the same on every view. A record does
not carry its own resulting version — it is ``offset + 1`` once appended.

How these records are applied, and why compaction never loses state, is in
``flags/store.py``.

Invariants:

- ``decode(key, encode(c)) == c`` and ``encode(decode(key, b)) == b`` for any
  bytes ``decode`` accepts.
- ``decode`` raises only ``MalformedChange`` (bytes this format never
  produces, or a definition that fails validation) or ``UnsupportedChange``
  (a newer ``format``): a bad record is reported, never silently skipped.
- Definitions inside decoded changes passed ``validate_flag`` /
  ``validate_flag_set``: a change cannot carry an invalid definition.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from flags.canonical_json import ChangeError, UnsupportedChange, canonical, load_record
from flags.model import (
    Flag,
    FlagSet,
    InvalidDefinition,
    check_environment_name,
    check_flag_key,
    validate_flag,
    validate_flag_set,
)

__all__ = [
    "FORMAT_VERSION",
    "Change",
    "ChangeError",
    "Kind",
    "MalformedChange",
    "UnsupportedChange",
    "decode",
    "encode",
    "parse_record_key",
    "record_key",
]

FORMAT_VERSION = 1
MAX_WHO_LENGTH = 128
MAX_INT = (1 << 63) - 1


class Kind(enum.StrEnum):
    CREATE = "create"
    UPDATE = "update"
    ENABLE = "enable"
    DISABLE = "disable"
    ROLLBACK = "rollback"
    DELETE = "delete"
    RESTATE = "restate"
    ENV_CREATE = "env-create"
    IMPORT = "import"
    ENV_DELETE = "env-delete"

    @property
    def is_environment_level(self) -> bool:
        return self in (Kind.ENV_CREATE, Kind.IMPORT, Kind.ENV_DELETE)


_FLAG_DEFINITION_KINDS = frozenset({Kind.CREATE, Kind.UPDATE, Kind.ENABLE, Kind.DISABLE, Kind.ROLLBACK})


class MalformedChange(ChangeError):
    """Bytes this format never produces."""


@dataclass(frozen=True, slots=True)
class Change:
    kind: Kind
    env: str
    flag: str | None
    who: str
    when: int
    expected: int = 0
    definition: Flag | FlagSet | None = None
    version: int = 0
    as_of: int = 0
    rollback_to: int = 0

    @property
    def key(self) -> str:
        return record_key(self.env, self.flag)


def record_key(env: str, flag: str | None = None) -> str:
    return env if flag is None else f"{env}/{flag}"


def parse_record_key(key: str) -> tuple[str, str | None]:
    """``(env, flag or None)``; raises ``MalformedChange``."""
    env, slash, flag = key.partition("/")
    if problem := check_environment_name(env):
        raise MalformedChange(f"record key {key!r}: {problem}")
    if not slash:
        return env, None
    if problem := check_flag_key(flag):
        raise MalformedChange(f"record key {key!r}: {problem}")
    return env, flag


def _check(change: Change) -> None:
    """Raise ``MalformedChange`` if ``change`` breaks a rule of the table."""
    if problem := check_environment_name(change.env):
        raise MalformedChange(problem)
    if change.kind.is_environment_level != (change.flag is None):
        raise MalformedChange(
            f"a {change.kind} change {'has no' if change.flag is None else 'names no'} flag"
        )
    if change.flag is not None and (problem := check_flag_key(change.flag)):
        raise MalformedChange(problem)
    if not isinstance(change.who, str) or not 0 < len(change.who) <= MAX_WHO_LENGTH:
        raise MalformedChange(f"who is 1-{MAX_WHO_LENGTH} characters")
    for name in ("when", "expected", "version", "as_of", "rollback_to"):
        value = getattr(change, name)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
            raise MalformedChange(f"{name} must be an integer in 0..2^63-1, not {value!r}")
    kind = change.kind
    if kind is not Kind.RESTATE and (change.version or change.as_of):
        raise MalformedChange("version and as_of belong to restate changes only")
    if kind is not Kind.ROLLBACK and change.rollback_to:
        raise MalformedChange("rollback_to belongs to rollback changes only")
    if kind is Kind.RESTATE and (change.expected or change.version > change.as_of):
        raise MalformedChange("a restate has no expected version, and restates a version below as_of")
    if kind in _FLAG_DEFINITION_KINDS and not isinstance(change.definition, Flag):
        raise MalformedChange(f"a {kind} change carries the complete new flag")
    if kind is Kind.RESTATE and not isinstance(change.definition, Flag | None):
        raise MalformedChange("a restate carries a flag or null")
    if kind is Kind.IMPORT and not isinstance(change.definition, FlagSet):
        raise MalformedChange("an import carries the complete flag set")
    if kind in (Kind.DELETE, Kind.ENV_CREATE, Kind.ENV_DELETE) and change.definition is not None:
        raise MalformedChange(f"a {kind} change carries no definition")
    if kind is Kind.ENABLE and isinstance(change.definition, Flag) and not change.definition.enabled:
        raise MalformedChange("an enable change carries an ENABLED flag")
    if kind is Kind.DISABLE and isinstance(change.definition, Flag) and change.definition.enabled:
        raise MalformedChange("a disable change carries a DISABLED flag")


def _fields(change: Change) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "format": FORMAT_VERSION,
        "kind": change.kind.value,
        "env": change.env,
        "who": change.who,
        "when": change.when,
    }
    if change.flag is not None:
        doc["flag"] = change.flag
    if change.kind is Kind.RESTATE:
        doc["version"] = change.version
        doc["as_of"] = change.as_of
    else:
        doc["expected"] = change.expected
    if change.kind is Kind.ROLLBACK:
        doc["rollback_to"] = change.rollback_to
    if change.kind in _FLAG_DEFINITION_KINDS or change.kind in (Kind.IMPORT, Kind.RESTATE):
        definition = change.definition
        doc["definition"] = None if definition is None else definition.to_json()
    return doc


def encode(change: Change) -> bytes:
    """The record value. Raises ``MalformedChange`` for a change the table
    does not allow (a writer bug: it is never written)."""
    _check(change)
    return canonical(_fields(change))


def decode(key: str, value: bytes) -> Change:
    """The change in a record with ``key`` and ``value`` (not a tombstone)."""
    env, flag = parse_record_key(key)
    doc = load_record(key, value, MalformedChange, FORMAT_VERSION)
    try:
        kind = Kind(str(doc.get("kind")))
    except ValueError:
        raise MalformedChange(f"record {key!r}: unknown kind {doc.get('kind')!r}") from None
    if doc.get("env") != env or doc.get("flag") != flag:
        raise MalformedChange(f"record {key!r} names env {doc.get('env')!r} flag {doc.get('flag')!r}")
    definition: Flag | FlagSet | None = None
    raw = doc.get("definition")
    try:
        if raw is not None and kind is Kind.IMPORT:
            definition = validate_flag_set(raw)
        elif raw is not None and flag is not None:
            definition = validate_flag(flag, raw)
    except InvalidDefinition as exc:
        raise MalformedChange(f"record {key!r}: invalid definition: {exc}") from None
    try:
        change = Change(
            kind,
            env,
            flag,
            doc.get("who"),  # type: ignore[arg-type]  # checked by _check
            doc.get("when"),  # type: ignore[arg-type]
            doc.get("expected", 0),
            definition,
            doc.get("version", 0),
            doc.get("as_of", 0),
            doc.get("rollback_to", 0),
        )
        again = encode(change)
    except (TypeError, ValueError) as exc:
        raise MalformedChange(f"record {key!r}: {exc}") from None
    if again != value:
        raise MalformedChange(f"record {key!r} is not in canonical form (or has unknown or missing fields)")
    return change
