"""Attribution: exposures and tracking events -> per-variant aggregates (pure, incremental).

One ``Attribution`` per experiment. The analyzer feeds it the records of the
tenant's ``__exposures`` and ``__tracking`` topics (formats in ``parse_exposure``
and ``parse_tracking``), each topic in offset order, the two topics in *any*
interleaving (they are read independently); ``totals()`` answers from state in
O(variants x metrics).

Rules:

1. The window: an exposure counts iff its offset is in ``[start.exposures,
   stop.exposures)`` (no upper bound while running), a tracking event iff its
   offset is in ``[start.tracking, stop.tracking)``; the environment must be
   the experiment's, the flag (exposures) the experiment's, the event name
   (tracking) one of its metrics'.
2. A user (targeting key) belongs to the variant of its *first* exposure in the
   window, first in log order (the exposure topic has one partition: one
   order, the same on every server). Later exposures to other variants change
   nothing.
3. A tracking event counts for a user iff its ``ts`` is at or after the
   user's first exposure's ``ts`` (``>=``: an evaluation and the event it led
   to often share a millisecond). Conversion metric: the user converted (0/1).
   Value metric: the user's total is the sum of the counted events' values
   (events without a value add nothing); per variant the aggregates are
   ``count`` (users), ``sum`` and ``sum of squares`` of the users' totals
   (users without events count with 0), updated incrementally:
   ``sum_sq += v * (2 * total + v)``.
4. Pending events: a tracking event of a user not (yet) exposed is kept, since
   its exposure may be read later with an earlier ``ts``; when the user's first
   exposure arrives, its pending events are counted by rule 3 and dropped.
   Bounds (memory, never correctness of what is kept): at most
   ``max_pending_per_user`` value events per user (conversions keep only the
   latest ``ts`` per metric: that decides rule 3) — past it the event with the
   smallest ``ts`` goes (the least likely to be after an exposure); and at most
   ``max_pending_events`` in all — past it the user whose pending events were
   first kept goes (users never exposed: tracking from outside the experiment,
   the usual case). Every event dropped is counted in ``pending_dropped``; while
   it is 0 the totals are exactly those of rules 1-3, whatever the interleaving.
   Defaults: 32 per user, 200,000 in all (~100 bytes each: ~20 MB at worst per
   experiment).
5. Totals are exact integers for users and conversions; value sums are exact
   up to floating-point rounding order.
"""

from __future__ import annotations

import json
from array import array
from dataclasses import dataclass, field
from typing import Any

from flags.experiments.model import Experiment, MetricType, Offsets

__all__ = [
    "DEFAULT_MAX_PENDING_EVENTS",
    "DEFAULT_MAX_PENDING_PER_USER",
    "Attribution",
    "Exposure",
    "Totals",
    "TrackingEvent",
    "VariantTotals",
    "parse_exposure",
    "parse_tracking",
]

DEFAULT_MAX_PENDING_PER_USER = 32
DEFAULT_MAX_PENDING_EVENTS = 200_000


@dataclass(frozen=True, slots=True)
class Exposure:
    """One record of ``__exposures``: value ``{"format":1,"env","flag","variant",
    "reason","targetingKey","ts","version","source"}`` (canonical JSON)."""

    env: str
    flag: str
    variant: str
    targeting_key: str
    ts: int


@dataclass(frozen=True, slots=True)
class TrackingEvent:
    """One record of ``__tracking``: value ``{"format":1,"env","name",
    "targetingKey","value","attributes","ts"}`` (canonical JSON)."""

    env: str
    name: str
    targeting_key: str
    value: float | None
    ts: int


def _json_object(value: bytes | None) -> dict[str, Any] | None:
    if not value:
        return None
    try:
        doc = json.loads(value)
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) and doc.get("format") == 1 else None


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_exposure(value: bytes | None) -> Exposure | None:
    """The exposure in a record value; None for anything else (a newer format,
    a malformed record): such records are skipped and counted by the caller."""
    doc = _json_object(value)
    if doc is None:
        return None
    get = doc.get  # (a generator here costs ~10% of the apply rate)
    env, flag, variant, key, ts = get("env"), get("flag"), get("variant"), get("targetingKey"), get("ts")
    if not (
        isinstance(env, str)
        and isinstance(flag, str)
        and isinstance(variant, str)
        and isinstance(key, str)
        and key
        and _is_int(ts)
    ):
        return None
    return Exposure(env, flag, variant, key, ts)  # type: ignore[arg-type]  # checked above


def parse_tracking(value: bytes | None) -> TrackingEvent | None:
    """The tracking event in a record value; None for anything else."""
    doc = _json_object(value)
    if doc is None:
        return None
    get = doc.get
    env, name, key, amount, ts = get("env"), get("name"), get("targetingKey"), get("value"), get("ts")
    if not (isinstance(env, str) and isinstance(name, str) and isinstance(key, str) and key and _is_int(ts)):
        return None
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int | float)):
        return None
    return TrackingEvent(env, name, key, None if amount is None else float(amount), ts)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class VariantTotals:
    """One variant's aggregates for one metric."""

    users: int
    """Users whose first exposure was this variant."""
    conversions: int = 0
    """Conversion metrics: users who converted."""
    total: float = 0.0
    """Value metrics: the sum of the users' totals."""
    total_squares: float = 0.0
    """Value metrics: the sum of the squares of the users' totals."""


@dataclass(frozen=True, slots=True)
class Totals:
    """What the statistics need, per metric (in the experiment's order) and variant."""

    users: dict[str, int]
    metrics: tuple[dict[str, VariantTotals], ...]
    exposures: int
    """Exposure records counted (in the window, of this flag)."""
    tracking: int
    """Tracking records counted toward a metric (in the window, of a metric's event)."""
    pending_users: int
    pending_events: int
    pending_dropped: int


@dataclass(slots=True)
class _Pending:
    """Tracking events of a user not exposed yet (rule 4)."""

    conversions: dict[int, int] = field(default_factory=dict)
    """metric index -> the latest ts seen."""
    values: list[tuple[int, int, float]] = field(default_factory=list)
    """(ts, metric index, value) of value metrics."""

    def size(self) -> int:
        return len(self.conversions) + len(self.values)


class Attribution:
    """Rules 1-5 of the module docstring for one experiment."""

    def __init__(
        self,
        experiment: Experiment,
        *,
        max_pending_per_user: int = DEFAULT_MAX_PENDING_PER_USER,
        max_pending_events: int = DEFAULT_MAX_PENDING_EVENTS,
    ) -> None:
        if experiment.start_offsets is None:
            raise ValueError(f"experiment {experiment.name} has not started")
        if max_pending_per_user < 1 or max_pending_events < 1:
            raise ValueError("pending bounds are at least 1")
        self.env = experiment.env
        self.flag = experiment.flag
        self.start: Offsets = experiment.start_offsets
        self.stop: Offsets | None = experiment.stop_offsets
        self.metric_types = tuple(m.type for m in experiment.metrics)
        self._event_metrics: dict[str, tuple[int, ...]] = {}
        for index, metric in enumerate(experiment.metrics):
            self._event_metrics[metric.event] = (*self._event_metrics.get(metric.event, ()), index)
        self._max_per_user = max_pending_per_user
        self._max_pending = max_pending_events
        # Users, by number: variant number, first exposure ts, and per metric
        # the converted flag or the user's total (machine arrays: ~100 bytes a user
        # with its dict entry, instead of an object each).
        self._users: dict[str, int] = {}
        self._variant_of = array("H")
        self._first_ts = array("q")
        self._converted = [bytearray() if t is MetricType.CONVERSION else None for t in self.metric_types]
        self._user_totals = [array("d") if t is MetricType.VALUE else None for t in self.metric_types]
        # Variants, by number, and their aggregates.
        self._variants: dict[str, int] = {}
        self._variant_users: list[int] = []
        self._conversions: list[list[int]] = [[] for _ in self.metric_types]
        self._sums: list[list[float]] = [[] for _ in self.metric_types]
        self._squares: list[list[float]] = [[] for _ in self.metric_types]
        self._pending: dict[str, _Pending] = {}
        self._pending_events = 0
        self.pending_dropped = 0
        self.exposures = 0
        self.tracking = 0
        self.next_exposure = self.start.exposures
        """Position after the last exposure offset fed (the analyzer resumes here);
        once stopped, never past the stop (records past it are not fed)."""
        self.next_tracking = self.start.tracking

    # --- the window --------------------------------------------------------------------

    def stop_at(self, stop: Offsets) -> bool:
        """The experiment stopped at ``stop``. False when records at or past it
        were already counted: the caller must start again from a new
        ``Attribution`` (counted records cannot be taken back)."""
        self.stop = stop
        return self.next_exposure <= stop.exposures and self.next_tracking <= stop.tracking

    def complete(self) -> bool:
        """Stopped, and every record of the window has been fed."""
        return (
            self.stop is not None
            and self.next_exposure >= self.stop.exposures
            and self.next_tracking >= self.stop.tracking
        )

    # --- feeding -----------------------------------------------------------------------

    def add_exposure(self, offset: int, exposure: Exposure | None) -> None:
        """The ``__exposures`` record at ``offset`` (None: not an exposure)."""
        if offset < self.next_exposure:
            return  # fed already (a re-read after a seek)
        if self.stop is not None and offset >= self.stop.exposures:
            # Past the window: not "read". How far past the stop a reader got
            # depends on its batches; the position stays at the stop, so every
            # server answers the same ``exposures_read_to``.
            self.next_exposure = max(self.next_exposure, self.stop.exposures)
            return
        self.next_exposure = offset + 1
        if exposure is None or exposure.env != self.env or exposure.flag != self.flag:
            return
        self.exposures += 1
        key = exposure.targeting_key
        if key in self._users:
            return  # rule 2: the first exposure decides
        variant = self._variants.get(exposure.variant)
        if variant is None:
            variant = self._add_variant(exposure.variant)
        user = len(self._variant_of)
        self._users[key] = user
        self._variant_of.append(variant)
        self._first_ts.append(exposure.ts)
        self._variant_users[variant] += 1
        for converted in self._converted:
            if converted is not None:
                converted.append(0)
        for totals in self._user_totals:
            if totals is not None:
                totals.append(0.0)
        pending = self._pending.pop(key, None)
        if pending is not None:
            self._pending_events -= pending.size()
            for metric, ts in pending.conversions.items():
                self._count(user, metric, ts, None)
            for ts, metric, amount in pending.values:
                self._count(user, metric, ts, amount)

    def _add_variant(self, name: str) -> int:
        if len(self._variants) >= 0xFFFF:
            raise ValueError("more than 65,535 variants")
        number = self._variants[name] = len(self._variant_users)
        self._variant_users.append(0)
        for metric in range(len(self.metric_types)):
            self._conversions[metric].append(0)
            self._sums[metric].append(0.0)
            self._squares[metric].append(0.0)
        return number

    def add_tracking(self, offset: int, event: TrackingEvent | None) -> None:
        """The ``__tracking`` record at ``offset`` (None: not a tracking event)."""
        if offset < self.next_tracking:
            return
        if self.stop is not None and offset >= self.stop.tracking:
            self.next_tracking = max(self.next_tracking, self.stop.tracking)  # as in add_exposure
            return
        self.next_tracking = offset + 1
        if event is None or event.env != self.env:
            return
        metrics = self._event_metrics.get(event.name)
        if metrics is None:
            return
        self.tracking += 1
        user = self._users.get(event.targeting_key)
        if user is not None:
            for metric in metrics:
                self._count(user, metric, event.ts, event.value)
            return
        for metric in metrics:
            self._keep_pending(event, metric)

    def _count(self, user: int, metric: int, ts: int, amount: float | None) -> None:
        """Rule 3 for one event of an exposed user."""
        if ts < self._first_ts[user]:
            return
        variant = self._variant_of[user]
        converted = self._converted[metric]
        if converted is not None:
            if not converted[user]:
                converted[user] = 1
                self._conversions[metric][variant] += 1
            return
        totals = self._user_totals[metric]
        if totals is None or amount is None:
            return
        before = totals[user]
        totals[user] = before + amount
        self._sums[metric][variant] += amount
        self._squares[metric][variant] += amount * (2.0 * before + amount)

    def _keep_pending(self, event: TrackingEvent, metric: int) -> None:
        """Rule 4."""
        pending = self._pending.get(event.targeting_key)
        if pending is None:
            pending = self._pending[event.targeting_key] = _Pending()
        if self.metric_types[metric] is MetricType.CONVERSION:
            latest = pending.conversions.get(metric)
            if latest is None:
                self._pending_events += 1
            if latest is None or event.ts > latest:
                pending.conversions[metric] = event.ts
        elif event.value is not None:
            values = pending.values
            values.append((event.ts, metric, event.value))
            self._pending_events += 1
            if len(values) > self._max_per_user:
                values.remove(min(values))
                self._pending_events -= 1
                self.pending_dropped += 1
        while self._pending_events > self._max_pending:
            oldest = next(iter(self._pending))
            dropped = self._pending.pop(oldest).size()
            self._pending_events -= dropped
            self.pending_dropped += dropped
        if not pending.size() and self._pending.get(event.targeting_key) is pending:
            del self._pending[event.targeting_key]

    # --- reading -----------------------------------------------------------------------

    def variants(self) -> tuple[str, ...]:
        """Variants seen in exposures, in the order first seen."""
        return tuple(self._variants)

    def variant_of(self, targeting_key: str) -> str | None:
        user = self._users.get(targeting_key)
        if user is None:
            return None
        return next(name for name, n in self._variants.items() if n == self._variant_of[user])

    def totals(self) -> Totals:
        """The aggregates now: O(variants x metrics)."""
        names = list(self._variants)
        metrics = []
        for metric in range(len(self.metric_types)):
            metrics.append(
                {
                    name: VariantTotals(
                        users=self._variant_users[n],
                        conversions=self._conversions[metric][n],
                        total=self._sums[metric][n],
                        total_squares=self._squares[metric][n],
                    )
                    for n, name in enumerate(names)
                }
            )
        return Totals(
            users={name: self._variant_users[n] for n, name in enumerate(names)},
            metrics=tuple(metrics),
            exposures=self.exposures,
            tracking=self.tracking,
            pending_users=len(self._pending),
            pending_events=self._pending_events,
            pending_dropped=self.pending_dropped,
        )
