"""What an audited admin call made, told to its audit event by the handler.

The audit stage (stage.py) builds its event from the caller, the request and
the outcome, never from the response: the response of a call that issues an
API key holds the key's clear text. The one result the trail needs — which
key a ``CreateTenant``, ``CreateApiKey`` or ``RotateApiKey`` created — the
handler tells it here instead, by id only: ``note_created_key(key_id)``.

The stage opens a ``CallNotes`` for each call it records (``taking_notes``,
a ``ContextVar``: grpc.aio runs each call in its own task, and the door runs
its stages and the handler in that task); a handler noting outside such a
call (a leader running a change another node forwarded, whose audit is the
forwarding node's; a test calling a servicer directly) notes nothing.

Invariants:

- Only key ids are taken (``check_key_id``: 16 lowercase hex digits), so
  no secret can reach an event through here. Anything else is a bug: it is
  logged and dropped, never raised — the call has already created its key,
  and failing it would lose the clear text its caller is waiting for.
- Notes never leak from one call to another: each call the stage records
  starts with empty notes, and the previous value is restored after it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from contextvars import ContextVar
from dataclasses import dataclass

from cluster.controller.api_keys import check_key_id

__all__ = ["CallNotes", "note_created_key", "taking_notes"]


@dataclass(slots=True)
class CallNotes:
    created_key_id: str = ""


_log = logging.getLogger(__name__)
_NOTES: ContextVar[CallNotes | None] = ContextVar("raftlog_audit_call_notes", default=None)


@contextlib.contextmanager
def taking_notes() -> Iterator[CallNotes]:
    """Fresh notes for the call running in this task, until the block ends."""
    notes = CallNotes()
    token = _NOTES.set(notes)
    try:
        yield notes
    finally:
        _NOTES.reset(token)


def note_created_key(key_id: str) -> None:
    """The call being audited issued the API key ``key_id`` (its id, never
    its clear text). A later note replaces an earlier one: one key per call."""
    notes = _NOTES.get()
    if notes is None:
        return
    if check_key_id(key_id) is not None:
        _log.error("note_created_key was given something that is not a key id: not recorded")
        return
    notes.created_key_id = key_id
