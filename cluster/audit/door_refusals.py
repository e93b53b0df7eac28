"""Coalescing the door's refusals: at most one audit event per key, method
and reason a second, counting the calls it stands for.

A call the front door refuses for its key (a tenant key on an operator
method, a client key outside its role) costs the caller nothing but a
round trip, so a loop of them must not turn into one replicated append
each. The first refusal of a ``(key_id, method, reason)`` that has been
quiet for ``window_s`` is recorded at once (``count`` 1: a lone attempt
shows up in the trail without delay); the ones after it, until
``window_s`` after that event, are counted into one more event, released
when that second is over (``due``) with their ``count`` and the first
one's id, time, peer and tenant. Then the next window opens at the next
refusal, and so on: a steady flood gives one event a second.

Pure: time is passed in (the writer's monotonic clock), nothing here waits
or does I/O; the writer (writer.py) queues what ``add`` and ``due`` give.

Invariants:

- Every refusal passed to ``add`` is counted in exactly one event that
  ``add``, ``due`` or ``flush`` gives back (sum of ``count`` = calls).
- Two events of the same ``(key_id, method, reason)`` are given back at
  least ``window_s`` apart (``flush``, at shutdown, excepted).
- State is kept only for triples active within the last ``window_s``
  (``due`` forgets the others), so it is bounded by the valid keys that
  are calling, never by the number of calls.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from cluster.audit.events import AuditEvent

__all__ = ["WINDOW_S", "DoorRefusals"]

WINDOW_S: Final = 1.0

_Key = tuple[str, str, str]


@dataclass(slots=True)
class _Window:
    released_at: float
    """When the last event of this triple was given back."""
    first: AuditEvent | None = None
    """The first refusal counted since, if any."""
    count: int = 0


class DoorRefusals:
    """See the module docstring."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self._window_s = window_s
        self._windows: dict[_Key, _Window] = {}

    def __len__(self) -> int:
        """Refusals counted and not given back yet."""
        return sum(w.count for w in self._windows.values())

    def add(self, event: AuditEvent, now: float) -> AuditEvent | None:
        """The event to record now for this refusal, or None: it is counted
        into the event ``due`` gives back at the end of the window."""
        key = (event.key_id, event.method, event.reason)
        window = self._windows.get(key)
        if window is None or (window.first is None and now - window.released_at >= self._window_s):
            self._windows[key] = _Window(released_at=now)
            return replace(event, count=1)
        if window.first is None:
            window.first = event
        window.count += 1
        return None

    def due(self, now: float) -> list[AuditEvent]:
        """The events whose window is over by ``now``; forgets quiet triples."""
        released = []
        for key, window in list(self._windows.items()):
            if now - window.released_at < self._window_s:
                continue
            if window.first is None:
                del self._windows[key]
                continue
            released.append(replace(window.first, count=window.count))
            self._windows[key] = _Window(released_at=now)
        return released

    def next_due(self) -> float | None:
        """When ``due`` next has an event to give back (None: nothing counted)."""
        ends = [w.released_at + self._window_s for w in self._windows.values() if w.first is not None]
        return min(ends, default=None)

    def flush(self) -> list[AuditEvent]:
        """Every counted refusal's event now, whatever the window (shutdown)."""
        released = [replace(w.first, count=w.count) for w in self._windows.values() if w.first is not None]
        self._windows.clear()
        return released
