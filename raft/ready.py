"""``Ready``: everything the core asks its driver to do, in one batch.

The driver's loop, in this order (see raft/storage.py for why):

1. write ``snapshot``, ``entries`` and ``hard_state``; if ``must_sync``,
   sync them (send ``messages`` meanwhile or before: they promise nothing);
2. send ``messages_after_persist``;
3. apply ``committed_entries`` (and install ``snapshot`` into the state
   machine) and serve ``read_states`` once applied up to their index;
4. call ``advance(ready)``.

No ``step``/``tick``/``propose`` may happen between ``ready()`` and
``advance()``: the core raises ``UsageError``. Queue inputs meanwhile; they
batch naturally into the next Ready.
"""

from __future__ import annotations

from dataclasses import dataclass

from raft.types import Entry, HardState, Message, ReadState, Snapshot, SoftState


@dataclass(frozen=True, slots=True)
class Ready:
    hard_state: HardState | None = None
    soft_state: SoftState | None = None
    entries: tuple[Entry, ...] = ()
    snapshot: Snapshot | None = None
    must_sync: bool = False
    messages: tuple[Message, ...] = ()
    messages_after_persist: tuple[Message, ...] = ()
    committed_entries: tuple[Entry, ...] = ()
    read_states: tuple[ReadState, ...] = ()
