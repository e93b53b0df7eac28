"""Attribution (flags/experiments/attribution.py): first exposure decides the
variant, conversions only at or after it, any interleaving of the two topics
gives the same totals, the window, and the pending bounds."""

from __future__ import annotations

import random
from collections.abc import Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flags.experiments.attribution import (
    Attribution,
    Exposure,
    TrackingEvent,
    VariantTotals,
    parse_exposure,
    parse_tracking,
)
from flags.experiments.model import Metric, MetricType, Offsets, State
from tests.flags.experiment_fixtures import ENV, experiment, exposure_value, tracking_value

CONVERSION = Metric("purchase", MetricType.CONVERSION)
VALUE = Metric("purchase", MetricType.VALUE)
RUNNING = experiment(state=State.RUNNING, metrics=(CONVERSION, VALUE))


def exposure(user: str, variant: str, ts: int, flag: str = "new-checkout", env: str = ENV) -> Exposure:
    return Exposure(env, flag, variant, user, ts)


def event(
    user: str, ts: int, value: float | None = None, name: str = "purchase", env: str = ENV
) -> TrackingEvent:
    return TrackingEvent(env, name, user, value, ts)


def feed(
    attribution: Attribution,
    exposures: Sequence[Exposure | None],
    events: Sequence[TrackingEvent | None],
    order: Sequence[int] | None = None,
) -> None:
    """Feed both topics (offsets from 0) in the interleaving ``order`` (0:
    next exposure, 1: next event; default all exposures first)."""
    if order is None:
        order = [0] * len(exposures) + [1] * len(events)
    e = t = 0
    for which in order:
        if which == 0:
            attribution.add_exposure(e, exposures[e])
            e += 1
        else:
            attribution.add_tracking(t, events[t])
            t += 1


def test_records_in_the_documented_formats_parse() -> None:
    assert parse_exposure(exposure_value("u1", "on", 5)) == exposure("u1", "on", 5)
    assert parse_tracking(tracking_value("u1", "purchase", 6, 2.5)) == event("u1", 6, 2.5)
    assert parse_tracking(tracking_value("u1", "purchase", 6)) == event("u1", 6, None)
    for bad in (
        b"",
        b"{",
        b"[]",
        exposure_value("", "on", 1),
        exposure_value("u", "on", 1).replace(b'"format":1', b'"format":2'),
    ):
        assert parse_exposure(bad) is None
    assert parse_tracking(tracking_value("u", "x", 1).replace(b'"value":null', b'"value":"1"')) is None


def test_first_exposure_decides_and_a_switch_keeps_the_first() -> None:
    a = Attribution(RUNNING)
    feed(
        a,
        [exposure("u1", "on", 10), exposure("u1", "off", 5), exposure("u2", "off", 10)],
        [event("u1", 20, 3.0)],
    )
    totals = a.totals()
    assert totals.users == {"on": 1, "off": 1}
    assert a.variant_of("u1") == "on"
    assert totals.metrics[0]["on"] == VariantTotals(users=1, conversions=1)
    assert totals.metrics[0]["off"] == VariantTotals(users=1, conversions=0)
    assert totals.metrics[1]["on"] == VariantTotals(users=1, total=3.0, total_squares=9.0)
    assert totals.exposures == 3


@pytest.mark.parametrize("tracking_first", [False, True])
def test_a_conversion_before_the_exposure_does_not_count(tracking_first: bool) -> None:
    a = Attribution(RUNNING)
    order = [1, 1, 0, 0] if tracking_first else [0, 0, 1, 1]
    feed(
        a,
        [exposure("u1", "on", 100), exposure("u2", "on", 100)],
        [event("u1", 99, 5.0), event("u2", 100, 5.0)],  # u2 at the same ms: counts
        order,
    )
    totals = a.totals()
    assert totals.metrics[0]["on"].conversions == 1
    assert totals.metrics[1]["on"].total == 5.0
    assert totals.pending_users == 0 and totals.pending_events == 0


def test_value_totals_are_per_user() -> None:
    a = Attribution(RUNNING)
    feed(
        a,
        [exposure("u1", "on", 0), exposure("u2", "on", 0), exposure("u3", "on", 0)],
        [event("u1", 1, 2.0), event("u1", 2, 3.0), event("u2", 1, 4.0), event("u3", 1)],
    )
    on = a.totals().metrics[1]["on"]
    # users' totals 5, 4, 0
    assert (on.users, on.total, on.total_squares) == (3, 9.0, 41.0)
    assert a.totals().metrics[0]["on"].conversions == 3  # a valueless event is still a conversion


def test_other_environments_flags_and_events_are_ignored() -> None:
    a = Attribution(RUNNING)
    feed(
        a,
        [
            exposure("u1", "on", 0, flag="other"),
            exposure("u2", "on", 0, env="staging"),
            exposure("u3", "on", 0),
        ],
        [event("u3", 1, name="signup"), event("u3", 1, env="staging"), None],
    )
    totals = a.totals()
    assert totals.users == {"on": 1} and totals.exposures == 1 and totals.tracking == 0
    assert totals.metrics[0]["on"].conversions == 0


def test_the_window() -> None:
    e = experiment(state=State.RUNNING, start=Offsets(2, 1), metrics=(CONVERSION,))
    a = Attribution(e)
    exposures = [exposure(f"u{i}", "on", 10) for i in range(6)]
    events = [event(f"u{i}", 20) for i in range(6)]
    feed(a, exposures[:4], events[:3])
    # exposures 0 and 1 and event 0 are before the start
    assert a.totals().users == {"on": 2}
    assert a.totals().metrics[0]["on"].conversions == 1  # u2 (event 2); u1 not exposed in window
    assert a.stop_at(Offsets(5, 4))
    assert not a.complete()
    for offset in range(4, 6):
        a.add_exposure(offset, exposures[offset])
    for offset in range(3, 6):
        a.add_tracking(offset, events[offset])
    assert a.complete()
    totals = a.totals()
    assert totals.users == {"on": 3}  # u2, u3, u4 (u5 is at the stop offset)
    assert totals.metrics[0]["on"].conversions == 2  # u2 (event 2), u3 (event 3); event 4 is past the stop


def test_a_stop_behind_what_was_fed_asks_for_a_recount() -> None:
    a = Attribution(RUNNING)
    feed(a, [exposure("u1", "on", 0)] * 3, [])
    assert not a.stop_at(Offsets(2, 0))
    assert Attribution(RUNNING).stop_at(Offsets(2, 0))


def test_records_fed_twice_count_once() -> None:
    a = Attribution(RUNNING)
    a.add_exposure(0, exposure("u1", "on", 0))
    a.add_tracking(0, event("u1", 1, 1.0))
    a.add_exposure(0, exposure("u1", "on", 0))
    a.add_tracking(0, event("u1", 1, 1.0))
    assert a.totals().metrics[1]["on"].total == 1.0 and a.totals().exposures == 1


def test_pending_per_user_bound_drops_the_earliest() -> None:
    a = Attribution(RUNNING, max_pending_per_user=3)
    feed(a, [exposure("u1", "on", 10)], [event("u1", ts, 1.0) for ts in (50, 5, 40, 30)], [1, 1, 1, 1, 0])
    totals = a.totals()
    assert totals.pending_dropped == 1  # ts 5, which would not have counted anyway
    assert totals.metrics[1]["on"].total == 3.0


def test_pending_total_bound_drops_the_oldest_user() -> None:
    a = Attribution(RUNNING, max_pending_events=4)
    events = [event(f"u{i}", 10, 1.0) for i in range(3)]  # 2 pending events each (both metrics)
    feed(a, [exposure("u0", "on", 0), exposure("u1", "on", 0)], events, [1, 1, 1, 0, 0])
    totals = a.totals()
    assert totals.pending_dropped == 2
    assert totals.metrics[0]["on"].conversions == 1  # u0's events were dropped: only u1 converts
    assert totals.pending_users == 1 and totals.pending_events == 2  # u2, never exposed


def reference(
    exposures: Sequence[Exposure], events: Sequence[TrackingEvent]
) -> tuple[dict[str, int], dict[str, int], dict[str, tuple[float, float]]]:
    """Rules 2 and 3 computed directly from the whole record lists."""
    first: dict[str, tuple[str, int]] = {}
    for x in exposures:
        first.setdefault(x.targeting_key, (x.variant, x.ts))
    users: dict[str, int] = {}
    conversions: dict[str, int] = {}
    values: dict[str, tuple[float, float]] = {}
    for user, (variant, ts) in first.items():
        users[variant] = users.get(variant, 0) + 1
        counted = [e for e in events if e.targeting_key == user and e.ts >= ts]
        conversions[variant] = conversions.get(variant, 0) + (1 if counted else 0)
        total = sum(e.value for e in counted if e.value is not None)
        s, q = values.get(variant, (0.0, 0.0))
        values[variant] = (s + total, q + total * total)
    return users, conversions, values


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 7), st.sampled_from(["on", "off", "blue"]), st.integers(0, 50)), max_size=30
    ),
    st.lists(
        st.tuples(st.integers(0, 7), st.integers(0, 60), st.one_of(st.none(), st.integers(-3, 10))),
        max_size=30,
    ),
    st.randoms(use_true_random=False),
)
def test_any_interleaving_gives_the_reference_totals(
    raw_exposures: list[tuple[int, str, int]],
    raw_events: list[tuple[int, int, int | None]],
    rng: random.Random,
) -> None:
    exposures = [exposure(f"u{u}", v, ts) for u, v, ts in raw_exposures]
    events = [event(f"u{u}", ts, None if v is None else float(v)) for u, ts, v in raw_events]
    order = [0] * len(exposures) + [1] * len(events)
    rng.shuffle(order)
    a = Attribution(RUNNING)
    feed(a, exposures, events, order)
    users, conversions, values = reference(exposures, events)
    totals = a.totals()
    assert totals.users == users
    assert {v: t.conversions for v, t in totals.metrics[0].items()} == conversions
    assert set(totals.metrics[1]) == set(values)
    for variant, (total, squares) in values.items():
        got = totals.metrics[1][variant]
        assert (got.total, got.total_squares) == pytest.approx((total, squares))
    assert totals.pending_dropped == 0
