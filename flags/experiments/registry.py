"""``ExperimentRegistry``: every tenant's experiments as its ``__flags`` log says (pure).

``LiveFlags.apply`` routes each ``@experiment/<env>/<name>`` record here
(``apply(tenant, offset, key, value)``), the way it routes ``@sdk-key/``
records to the key index; the admin RPCs and the analyzer read it.

Which records change an experiment (the log decides, the same way on every
flag server, so concurrent writers need no lock):

=================== ==================== ==========================================
current             record               outcome
=================== ==================== ==========================================
none                any valid state      accepted (the first record seen may be a
                                         later state: compaction keeps only the
                                         latest record under a key)
any                 the same bytes       accepted (a restate: see below)
draft               running, same def.   accepted (started)
running             stopped, same def.,  accepted (stopped)
                    same start
anything else                            refused: nothing changes (``refusal``)
tombstone           —                    the experiment is removed
=================== ==================== ==========================================

"Same def." is ``Experiment.same_definition`` (env, name, flag, control,
metrics). Two servers creating or starting the same experiment at once both
write; the later record is refused here, everywhere. The writer whose record
lost appends the winner's record again (its bytes are kept in
``StoredExperiment.value``) so that the latest record under the key is the
accepted state and a replay of the compacted log agrees with this view; a
server dying between the two leaves the key "dirty" until the next write of
that experiment (``min_compaction_lag_ms`` of ``__flags`` is the audit
window, 90 days by default, so the refused record is not compacted alone
before then).

Invariants:

- Offsets strictly increase per tenant (``ValueError`` otherwise), checked
  before anything changes; a record of a newer format raises
  ``UnsupportedChange`` before anything changes (the follower stops the
  tenant); a malformed record is reported (logged and kept in ``problems``,
  at most ``MAX_PROBLEMS`` per tenant) and changes nothing.
- ``StoredExperiment.version`` is the position (offset + 1) of the latest
  accepted record under the key: a writer knows its record won iff the
  version after applying equals its offset + 1.
- ``generation(tenant)`` grows on every accepted record or removal of the
  tenant (the analyzer resynchronises when it changes).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass

from flags.experiments.model import (
    Experiment,
    MalformedExperimentRecord,
    State,
    decode_record,
    parse_record_key,
)

__all__ = ["MAX_PROBLEMS", "ExperimentRegistry", "StoredExperiment"]

MAX_PROBLEMS = 100

_log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class StoredExperiment:
    experiment: Experiment
    version: int
    """Position (offset + 1) of the latest accepted record under its key."""
    value: bytes
    """That record's value (what a restate writes again)."""


def refusal(
    current: Experiment | None, value: bytes | None, new: Experiment, current_value: bytes
) -> str | None:
    """Why ``new`` may not follow ``current`` (the table above), or None."""
    if current is None or value == current_value:
        return None
    if not new.same_definition(current):
        return (
            f"experiment {new.env}/{new.name} exists with another definition "
            f"(flag, control or metrics); it is {current.state}"
        )
    if current.state is State.DRAFT and new.state is State.RUNNING:
        return None
    if (
        current.state is State.RUNNING
        and new.state is State.STOPPED
        and (new.start_ms, new.start_offsets) == (current.start_ms, current.start_offsets)
    ):
        return None
    return f"experiment {new.env}/{new.name} is {current.state}; it cannot become {new.state} that way"


class ExperimentRegistry:
    """Every tenant's experiments; see the module docstring. Single-threaded."""

    def __init__(self) -> None:
        self._experiments: dict[str, dict[tuple[str, str], StoredExperiment]] = {}
        self._applied: dict[str, int] = {}
        self._generation: dict[str, int] = {}
        self._problems: dict[str, deque[tuple[int, str]]] = {}

    # --- the log ---------------------------------------------------------------------

    def apply(self, tenant: str, offset: int, key: str, value: bytes | None) -> str | None:
        """Apply the tenant's ``@experiment/`` record at ``offset``. None when
        accepted (or a tombstone), else why it was refused or malformed."""
        applied = self._applied.get(tenant, 0)
        if offset < applied:
            raise ValueError(f"tenant {tenant!r}: experiment record at {offset} after position {applied}")
        try:
            env, name = parse_record_key(key)
            new = None if value is None else decode_record(key, value)
        except MalformedExperimentRecord as exc:
            self._applied[tenant] = offset + 1
            return self._problem(tenant, offset, str(exc))
        # (UnsupportedChange propagates: nothing has changed yet.)
        self._applied[tenant] = offset + 1
        experiments = self._experiments.setdefault(tenant, {})
        if new is None or value is None:
            if experiments.pop((env, name), None) is not None:
                self._bump(tenant)
            return None
        current = experiments.get((env, name))
        why = refusal(
            None if current is None else current.experiment,
            value,
            new,
            b"" if current is None else current.value,
        )
        if why is not None:
            _log.info("tenant %s, __flags offset %d: refused: %s", tenant, offset, why)
            return why
        experiments[(env, name)] = StoredExperiment(new, offset + 1, value)
        self._bump(tenant)
        return None

    def forget_tenant(self, tenant: str) -> None:
        """The tenant (or its ``__flags`` topic) is gone: drop its experiments."""
        self._experiments.pop(tenant, None)
        self._applied.pop(tenant, None)
        self._problems.pop(tenant, None)
        self._bump(tenant)

    def _bump(self, tenant: str) -> None:
        self._generation[tenant] = self._generation.get(tenant, 0) + 1

    def _problem(self, tenant: str, offset: int, message: str) -> str:
        _log.warning("tenant %s, __flags offset %d: %s", tenant, offset, message)
        problems = self._problems.get(tenant)
        if problems is None:
            problems = self._problems[tenant] = deque(maxlen=MAX_PROBLEMS)
        problems.append((offset, message))
        return message

    # --- reading ---------------------------------------------------------------------

    def get(self, tenant: str, env: str, name: str) -> StoredExperiment | None:
        return self._experiments.get(tenant, {}).get((env, name))

    def list(self, tenant: str, env: str | None = None) -> tuple[StoredExperiment, ...]:
        """The tenant's experiments (of ``env`` when given), by environment then name."""
        found = self._experiments.get(tenant, {})
        return tuple(found[k] for k in sorted(found) if env is None or k[0] == env)

    def analysed(self, tenant: str) -> tuple[Experiment, ...]:
        """The tenant's started experiments (running or stopped): what the analyzer reads for."""
        return tuple(s.experiment for s in self.list(tenant) if s.experiment.state is not State.DRAFT)

    def tenants(self) -> tuple[str, ...]:
        """Tenants with at least one experiment."""
        return tuple(sorted(t for t, found in self._experiments.items() if found))

    def generation(self, tenant: str) -> int:
        return self._generation.get(tenant, 0)

    def applied(self, tenant: str) -> int:
        """Position after the tenant's last experiment record."""
        return self._applied.get(tenant, 0)

    def problems(self, tenant: str) -> tuple[tuple[int, str], ...]:
        return tuple(self._problems.get(tenant, ()))
