"""The registry: the log decides experiment states (table in flags/experiments/registry.py)."""

from __future__ import annotations

import dataclasses

import pytest

from flags.changes import UnsupportedChange
from flags.experiments.model import Metric, MetricType, Offsets, State, encode_record, record_key
from flags.experiments.registry import ExperimentRegistry
from tests.flags.experiment_fixtures import ENV, experiment

T = "acme"
KEY = record_key(ENV, "checkout")
DRAFT = experiment()
RUNNING = experiment(state=State.RUNNING, start=Offsets(5, 6))
STOPPED = experiment(state=State.STOPPED, start=Offsets(5, 6), stop=Offsets(50, 60))


def test_draft_running_stopped() -> None:
    registry = ExperimentRegistry()
    assert registry.apply(T, 0, KEY, encode_record(DRAFT)) is None
    assert registry.analysed(T) == ()
    generation = registry.generation(T)
    assert registry.apply(T, 3, KEY, encode_record(RUNNING)) is None
    assert registry.generation(T) > generation
    assert registry.analysed(T) == (RUNNING,)
    assert registry.apply(T, 4, KEY, encode_record(STOPPED)) is None
    stored = registry.get(T, ENV, "checkout")
    assert stored is not None and stored.experiment == STOPPED and stored.version == 5
    assert stored.value == encode_record(STOPPED)
    assert registry.list(T, ENV) == (stored,) and registry.list(T, "staging") == ()
    assert registry.tenants() == (T,)


def test_the_first_record_seen_may_be_any_state() -> None:
    # Compaction keeps only the latest record under a key.
    registry = ExperimentRegistry()
    assert registry.apply(T, 9, KEY, encode_record(STOPPED)) is None
    assert registry.analysed(T) == (STOPPED,)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (DRAFT, dataclasses.replace(DRAFT, control="on")),  # a second create
        (DRAFT, dataclasses.replace(DRAFT, flag="other")),
        (RUNNING, dataclasses.replace(RUNNING, start_offsets=Offsets(7, 7))),  # a second start
        (RUNNING, DRAFT),
        (STOPPED, RUNNING),
        (DRAFT, STOPPED),
        (RUNNING, dataclasses.replace(STOPPED, start_ms=1)),
        (RUNNING, dataclasses.replace(STOPPED, metrics=(Metric("x", MetricType.VALUE),))),
    ],
)
def test_refused_transitions_change_nothing(first: object, second: object) -> None:
    registry = ExperimentRegistry()
    assert registry.apply(T, 0, KEY, encode_record(first)) is None  # type: ignore[arg-type]
    generation = registry.generation(T)
    why = registry.apply(T, 1, KEY, encode_record(second))  # type: ignore[arg-type]
    assert why
    stored = registry.get(T, ENV, "checkout")
    assert stored is not None and stored.experiment == first and stored.version == 1
    assert registry.generation(T) == generation


def test_a_restate_of_the_same_bytes_is_accepted() -> None:
    registry = ExperimentRegistry()
    registry.apply(T, 0, KEY, encode_record(RUNNING))
    assert registry.apply(T, 1, KEY, encode_record(dataclasses.replace(RUNNING, control="x")))
    assert registry.apply(T, 2, KEY, encode_record(RUNNING)) is None
    stored = registry.get(T, ENV, "checkout")
    assert stored is not None and stored.version == 3


def test_malformed_records_are_reported_and_change_nothing() -> None:
    registry = ExperimentRegistry()
    registry.apply(T, 0, KEY, encode_record(DRAFT))
    assert registry.apply(T, 1, KEY, b"{}")
    assert registry.apply(T, 2, "@experiment/BAD", b"{}")
    assert [offset for offset, _ in registry.problems(T)] == [1, 2]
    assert registry.applied(T) == 3
    stored = registry.get(T, ENV, "checkout")
    assert stored is not None and stored.experiment == DRAFT


def test_newer_format_raises_before_anything_changes() -> None:
    registry = ExperimentRegistry()
    registry.apply(T, 0, KEY, encode_record(DRAFT))
    newer = encode_record(RUNNING).replace(b'"format":1', b'"format":2')
    with pytest.raises(UnsupportedChange):
        registry.apply(T, 1, KEY, newer)
    assert registry.applied(T) == 1
    stored = registry.get(T, ENV, "checkout")
    assert stored is not None and stored.experiment == DRAFT


def test_offsets_must_increase() -> None:
    registry = ExperimentRegistry()
    registry.apply(T, 4, KEY, encode_record(DRAFT))
    with pytest.raises(ValueError, match=r"position"):
        registry.apply(T, 4, KEY, encode_record(RUNNING))


def test_tombstones_and_forgotten_tenants_remove() -> None:
    registry = ExperimentRegistry()
    registry.apply(T, 0, KEY, encode_record(RUNNING))
    registry.apply("other", 0, KEY, encode_record(RUNNING))
    assert registry.apply(T, 1, KEY, None) is None
    assert registry.get(T, ENV, "checkout") is None
    generation = registry.generation("other")
    registry.forget_tenant("other")
    assert registry.list("other") == () and registry.generation("other") > generation
