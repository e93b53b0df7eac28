"""Reading flag history back from the log: what each change did, and diffs (pure).

History is the log itself: ``LiveFlags.history_offsets`` names the offsets of
an environment's (or one flag's) accepted records and ``FlagWriter.read_records``
reads them. ``replay`` runs those records, oldest first, through a private
``FlagStore`` and returns, for each change, the state of what it changed
before and after it:

- a flag record: that flag's definition (None: absent);
- an environment-level record (env-create, import, env-delete): the whole
  flag set as flagd writes it (None: no environment), or, in a one-flag
  history, that flag's definition.

Why a replay gives the same states as the serving store: the records of
``<env>`` and ``<env>/<flag>`` alone decide that flag (other keys never touch
it), and a replay of accepted records re-accepts each of them (a flag's own
earlier records and its environment's are all there, so each expected version
matches again; where compaction removed some, the store's gap rule accepts,
as it did when the log was first read). ``restate`` records are replayed but
not listed: on a complete log they change nothing.

``json_diff`` gives the changes as RFC 6902 operations (add, remove, replace;
objects compared member by member, anything else replaced whole);
``text_diff`` a unified diff of the pretty-printed JSON. Both are empty when
nothing changed.

Invariants: nothing here does I/O; applying ``json_diff(a, b)`` to ``a``
gives ``b`` (tests check it); a page token names the history it belongs to
and is refused elsewhere.
"""

from __future__ import annotations

import base64
import binascii
import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from flags.changes import Change, ChangeError, Kind, decode
from flags.model import flagd_json
from flags.store import Accepted, Conflict, FlagStore

__all__ = [
    "HistoryItem",
    "InvalidHistoryToken",
    "apply_json_diff",
    "json_diff",
    "page",
    "read_token",
    "replay",
    "state_at",
    "text_diff",
    "write_token",
]

_TENANT = "history"
"""The private store holds one tenant's records; its name is irrelevant."""

Json = Any


@dataclass(frozen=True, slots=True)
class HistoryItem:
    """One change as history shows it."""

    offset: int
    kind: str
    flag: str
    """"" for environment-level changes."""
    who: str
    when_ms: int
    definition_json: str
    """The complete definition the change wrote, canonical JSON; "" for none."""
    expected: int
    rollback_to: int
    outcome: str
    """"accepted", "conflict" or "rejected" when it was replayed."""
    before: Json
    after: Json

    @property
    def version(self) -> int:
        return self.offset + 1


def _canonical(value: Json) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _state(store: FlagStore, env: str, flag: str | None) -> Json:
    if flag is not None:
        view = store.flag(_TENANT, env, flag)
        return None if view is None else view.flag.to_json()
    flag_set = store.flag_set(_TENANT, env)
    return None if flag_set is None else json.loads(flagd_json(flag_set))


def _definition_json(change: Change) -> str:
    return "" if change.definition is None else _canonical(change.definition.to_json())


def replay(
    records: Iterable[tuple[int, str, bytes | None]], env: str, flag: str | None = None
) -> list[HistoryItem]:
    """The changes among ``records`` (offset, record key, value; ascending
    offsets; the records of ``<env>`` and of its flags, or of ``<env>/<flag>``
    when ``flag`` is given), oldest first."""
    store = FlagStore()
    items: list[HistoryItem] = []
    for offset, key, value in records:
        record_env, _, record_flag = key.partition("/")
        if record_env != env or (flag is not None and record_flag not in ("", flag)):
            continue
        # What this record is about: its own flag, or (env-level) the filter's.
        subject = record_flag or flag
        before = _state(store, env, subject)
        result = store.apply(_TENANT, offset, key, value)
        after = _state(store, env, subject)
        if value is None:
            continue  # a purge: never written by the flag server
        try:
            change = decode(key, value)
        except ChangeError:
            continue  # refused by the store too; nothing to show
        if change.kind is Kind.RESTATE:
            continue
        outcome = (
            "accepted"
            if isinstance(result, Accepted)
            else "conflict"
            if isinstance(result, Conflict)
            else "rejected"
        )
        items.append(
            HistoryItem(
                offset=offset,
                kind=change.kind.value,
                flag=change.flag or "",
                who=change.who,
                when_ms=change.when,
                definition_json=_definition_json(change),
                expected=change.expected,
                rollback_to=change.rollback_to,
                outcome=outcome,
                before=before,
                after=after,
            )
        )
    return items


def state_at(records: Iterable[tuple[int, str, bytes | None]], env: str, flag: str, version: int) -> Json:
    """The flag's definition (flagd JSON) as of ``version`` (after the record
    at offset ``version - 1``), or None when it did not exist then."""
    store = FlagStore()
    for offset, key, value in records:
        if offset >= version:
            break
        record_env, _, record_flag = key.partition("/")
        if record_env == env and record_flag in ("", flag):
            store.apply(_TENANT, offset, key, value)
    return _state(store, env, flag)


# --- diffs ---------------------------------------------------------------------------


def _pointer(path: tuple[str, ...]) -> str:
    return "".join("/" + part.replace("~", "~0").replace("/", "~1") for part in path)


def json_diff(before: Json, after: Json) -> list[dict[str, Json]]:
    """RFC 6902 operations turning ``before`` into ``after``. A document that
    is absent on one side (None: no flag, no environment) is added or removed
    whole at the root path ""."""
    ops: list[dict[str, Json]] = []

    def walk(a: Json, b: Json, path: tuple[str, ...]) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) | set(b)):
                if key not in b:
                    ops.append({"op": "remove", "path": _pointer((*path, key))})
                elif key not in a:
                    ops.append({"op": "add", "path": _pointer((*path, key)), "value": b[key]})
                else:
                    walk(a[key], b[key], (*path, key))
        elif a != b or type(a) is not type(b):
            ops.append({"op": "replace", "path": _pointer(path), "value": b})

    if before is None and after is None:
        return ops
    if before is None:
        return [{"op": "add", "path": "", "value": after}]
    if after is None:
        return [{"op": "remove", "path": ""}]
    walk(before, after, ())
    return ops


def apply_json_diff(document: Json, ops: list[dict[str, Json]]) -> Json:
    """``document`` with ``json_diff``'s operations applied (tests, clients)."""
    doc = json.loads(json.dumps(document))
    for op in ops:
        parts = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        if not parts:
            doc = None if op["op"] == "remove" else op["value"]
            continue
        parent = doc
        for part in parts[:-1]:
            parent = parent[part]
        if op["op"] == "remove":
            del parent[parts[-1]]
        else:
            parent[parts[-1]] = op["value"]
    return doc


def _pretty(value: Json) -> list[str]:
    if value is None:
        return []
    return json.dumps(value, sort_keys=True, indent=2, ensure_ascii=False).splitlines(keepends=True)


def text_diff(before: Json, after: Json, from_label: str, to_label: str) -> str:
    """A unified diff of the pretty-printed JSON; "" when nothing changed."""
    if before == after:
        return ""
    lines = difflib.unified_diff(_pretty(before), _pretty(after), from_label, to_label)
    return "".join(line if line.endswith("\n") else line + "\n" for line in lines)


# --- pages ---------------------------------------------------------------------------


class InvalidHistoryToken(ValueError):
    pass


def write_token(env: str, flag: str | None, below_offset: int) -> str:
    text = f"h1\0{env}\0{flag or ''}\0{below_offset}"
    return base64.urlsafe_b64encode(text.encode()).decode("ascii").rstrip("=")


def read_token(env: str, flag: str | None, token: str) -> int:
    """The offset a page token continues below; ``InvalidHistoryToken`` if it
    is not one of this history's tokens."""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        version, token_env, token_flag, offset = text.split("\0")
        below = int(offset)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InvalidHistoryToken("not a page token of a history listing") from None
    if version != "h1" or token_env != env or token_flag != (flag or "") or below < 0:
        raise InvalidHistoryToken("this page token belongs to another history listing")
    return below


def page(items: list[HistoryItem], size: int, env: str, flag: str | None) -> tuple[list[HistoryItem], str]:
    """The newest ``size`` of ``items`` (oldest-first input), newest first, and
    the token of the page after it ("" when there is none)."""
    newest_first = items[::-1]
    chosen = newest_first[:size]
    token = write_token(env, flag, chosen[-1].offset) if len(newest_first) > size else ""
    return chosen, token
