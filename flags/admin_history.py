"""The admin API's history calls: ``GetHistory`` and what ``Rollback`` writes.

Split out of flags/admin_service.py (which authenticates, checks readiness
and writes); the pure history logic (replay, diffs, page tokens) is
flags/history.py. Records are read back from the tenant's ``__flags`` topic
through ``FlagWriter.read_records`` at the offsets ``LiveFlags`` keeps.

Invariants: nothing here writes; a version that is not in the (compacted)
log, or at which the flag did not exist, is ``NOT_FOUND UNKNOWN_VERSION``;
a rollback target is validated against the environment as it is now
(``INVALID_DEFINITION`` when it no longer fits, e.g. a removed ``$evaluator``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence

import grpc

from flags.admin_errors import AdminError
from flags.admin_requests import bad_request, env_name, flag_key, page_size, unknown_env
from flags.changes import Change, Kind
from flags.history import (
    HistoryItem,
    InvalidHistoryToken,
    json_diff,
    page,
    read_token,
    replay,
    state_at,
    text_diff,
)
from flags.live import LiveFlags
from flags.model import Flag, FlagSet, InvalidDefinition, validate_flag
from flags.tenant_keys import Caller
from flags.writer import FlagWriter
from raftlog.flags.v1 import flags_pb2

__all__ = ["history_page", "rollback_change", "rollback_definition"]

Record = tuple[int, str, bytes | None]
"""(offset, record key, value) of a ``__flags`` record."""


async def _records(writer: FlagWriter, tenant: str, offsets: Sequence[int]) -> list[Record]:
    records = await writer.read_records(tenant, offsets)
    return [(r.offset, (r.key or b"").decode("utf-8", "replace"), r.value) for r in records]


def _entry(item: HistoryItem, subject: str) -> flags_pb2.HistoryEntry:
    return flags_pb2.HistoryEntry(
        offset=item.offset,
        version=item.version,
        kind=item.kind,
        flag=item.flag,
        who=item.who,
        when_ms=item.when_ms,
        definition_json=item.definition_json,
        expected_version=item.expected,
        rollback_to=item.rollback_to,
        diff_text=text_diff(item.before, item.after, f"{subject} before", f"{subject}@{item.version}"),
        diff_json=json.dumps(json_diff(item.before, item.after), sort_keys=True, separators=(",", ":")),
        outcome=item.outcome,
    )


async def history_page(
    live: LiveFlags, writer: FlagWriter, tenant: str, request: flags_pb2.GetHistoryRequest
) -> flags_pb2.GetHistoryResponse:
    """One page of an environment's (or one flag's) history, newest first."""
    env = env_name(request.environment)
    flag = flag_key(request.flag) if request.flag else None
    size = page_size(request.page_size)
    offsets = live.history_offsets(tenant, env, flag)
    if not offsets and not live.store.has_environment(tenant, env):
        raise unknown_env(env)
    if request.page_token:
        try:
            below = read_token(env, flag, request.page_token)
        except InvalidHistoryToken as error:
            raise bad_request("INVALID_PAGE_TOKEN", f"{error}; start from page 1") from None
        offsets = [offset for offset in offsets if offset < below]
    items = replay(await _records(writer, tenant, offsets), env, flag)
    chosen, token = page(items, size, env, flag)
    entries = []
    for item in chosen:
        named = item.flag or flag
        entries.append(_entry(item, f"{env}/{named}" if named else env))
    return flags_pb2.GetHistoryResponse(entries=entries, next_page_token=token)


def _unknown_version(message: str, to: int) -> AdminError:
    return AdminError(grpc.StatusCode.NOT_FOUND, "UNKNOWN_VERSION", message, {"to_version": str(to)})


async def rollback_definition(
    live: LiveFlags, writer: FlagWriter, tenant: str, env: str, key: str, to: int
) -> Flag:
    """``env/key`` as it was at version ``to`` (the offset of its record + 1),
    validated against the environment as it is now."""
    offsets = [o for o in live.history_offsets(tenant, env, key) if o < to]
    records = await _records(writer, tenant, offsets)
    if to == 0 or not records or records[-1][0] != to - 1:
        raise _unknown_version(
            f"version {to} is not in the history of {env}/{key} (or was compacted away); "
            "see the versions with GetHistory",
            to,
        )
    document = state_at(records, env, key, to)
    if document is None:
        raise _unknown_version(f"{env}/{key} did not exist at version {to}; to remove it, delete it", to)
    evaluators = (live.store.flag_set(tenant, env) or FlagSet()).evaluators
    try:
        return validate_flag(key, document, evaluators)
    except InvalidDefinition as error:
        raise bad_request(
            "INVALID_DEFINITION", f"version {to} no longer fits the environment: {error}"
        ) from None


def rollback_change(
    live: LiveFlags,
    caller: Caller,
    env: str,
    key: str,
    flag: Flag,
    to: int,
    expected_version: int | None,
) -> Callable[[int], Change]:
    """``now_ms -> Change`` bringing ``env/key`` back to ``flag`` (version
    ``to``): a rollback, or a create when the flag was deleted since. Reads the
    current version on each call unless ``expected_version`` is given (the
    admin service's retry of writes without one)."""
    store = live.store

    def make(now: int) -> Change:
        expected = (
            store.flag_version(caller.tenant, env, key) if expected_version is None else expected_version
        )
        if store.flag(caller.tenant, env, key) is None:  # deleted since: bring it back
            return Change(Kind.CREATE, env, key, caller.key_id, now, expected=expected, definition=flag)
        return Change(
            Kind.ROLLBACK, env, key, caller.key_id, now, expected=expected, definition=flag, rollback_to=to
        )

    return make
