"""The results document (flags/experiments/results.py): configured weights from
the flag's first ``fractional``, variant order, exact fields, SRM, and its
latency from state for 1,000,000 exposures."""

from __future__ import annotations

import time

import pytest

from flags.experiments.attribution import Attribution, Exposure, TrackingEvent
from flags.experiments.model import Metric, MetricType, State
from flags.experiments.results import configured_weights, results_document
from flags.model import Flag, validate_flag
from tests.flags.experiment_fixtures import ENV, RESULT_ROW_FIELDS, experiment

METRICS = (Metric("purchase", MetricType.CONVERSION), Metric("revenue", MetricType.VALUE))
RUNNING = experiment(state=State.RUNNING, metrics=METRICS)


def flag(targeting: object, variants: tuple[str, ...] = ("off", "on", "blue")) -> Flag:
    return validate_flag(
        "new-checkout",
        {
            "state": "ENABLED",
            "variants": {v: v for v in variants},
            "defaultVariant": "off",
            "targeting": targeting,
        },
    )


@pytest.mark.parametrize(
    ("targeting", "weights"),
    [
        ({}, {"off": 1.0, "on": 1.0, "blue": 1.0}),
        ({"fractional": [["off", 90], ["on", 10]]}, {"off": 90.0, "on": 10.0, "blue": 0.0}),
        ({"fractional": [{"var": "email"}, ["on", 1], ["off"]]}, {"off": 1.0, "on": 1.0, "blue": 0.0}),
        (
            {"if": [{"==": [{"var": "tier"}, "gold"]}, "blue", {"fractional": [["off", 25], ["on", 75]]}]},
            {"off": 25.0, "on": 75.0, "blue": 0.0},
        ),
        ({"fractional": [["off", {"var": "w"}], ["on", 1]]}, {"off": 1.0, "on": 1.0, "blue": 1.0}),
        (  # the first fractional decides, even when its weights are computed
            {
                "if": [
                    {"var": "beta"},
                    {"fractional": [["off", {"var": "w"}], ["on", 1]]},
                    {"fractional": [["off", 90], ["on", 10]]},
                ]
            },
            {"off": 1.0, "on": 1.0, "blue": 1.0},
        ),
    ],
)
def test_configured_weights(targeting: object, weights: dict[str, float]) -> None:
    assert configured_weights(flag(targeting)) == weights


def test_weights_without_the_flag_are_equal_over_what_was_seen() -> None:
    assert configured_weights(None, ("a", "b")) == {"a": 1.0, "b": 1.0}


def feed(attribution: Attribution, users: dict[str, int], converted: dict[str, int]) -> None:
    offset = 0
    for variant, count in users.items():
        for i in range(count):
            attribution.add_exposure(offset, Exposure(ENV, "new-checkout", variant, f"{variant}-{i}", 0))
            if i < converted.get(variant, 0):
                attribution.add_tracking(offset, TrackingEvent(ENV, "purchase", f"{variant}-{i}", None, 1))
            offset += 1


def test_the_document_has_the_documented_shape_and_order() -> None:
    a = Attribution(RUNNING)
    feed(a, {"on": 500, "off": 500}, {"on": 60, "off": 50})
    document = results_document(RUNNING, a, flag({"fractional": [["off", 50], ["on", 50]]}))
    assert document["users"] == 1000 and document["srm_warning"] is False
    assert document["srm_p_value"] == pytest.approx(1.0)
    for metric in document["metrics"]:
        # control first, then the flag's variants (blue: no users, still a row)
        assert [row["variant"] for row in metric["variants"]] == ["off", "on", "blue"]
        assert all(set(row) >= RESULT_ROW_FIELDS for row in metric["variants"])
        assert metric["srm_p_value"] == document["srm_p_value"]
    purchase, revenue = document["metrics"]
    off, on, blue = purchase["variants"]
    assert (off["users"], off["conversions"], off["rate"], off["lift"]) == (500, 50, 0.1, None)
    assert (on["conversions"], on["rate"], on["lift"]) == (60, 0.12, pytest.approx(0.2))
    assert blue["users"] == 0 and blue["p_value"] is None
    assert revenue["variants"][0]["mean"] == 0.0 and revenue["variants"][0]["conversions"] is None


def test_a_sample_ratio_mismatch_warns() -> None:
    a = Attribution(RUNNING)
    feed(a, {"off": 900, "on": 100}, {})
    document = results_document(RUNNING, a, flag({"fractional": [["off", 50], ["on", 50]]}))
    assert document["srm_warning"] is True and document["srm_p_value"] < 1e-6
    # The same traffic on a 90/10 flag is what was configured.
    document = results_document(RUNNING, a, flag({"fractional": [["off", 90], ["on", 10]]}))
    assert document["srm_warning"] is False


def test_results_for_a_million_exposures_answer_from_state_fast() -> None:
    """1,000,000 exposures (500,000 users, each seen twice) with 100,000 conversions:
    the results document is built from the aggregates, not the users."""
    e = experiment(state=State.RUNNING, metrics=(Metric("purchase", MetricType.CONVERSION),))
    a = Attribution(e)
    variants = ("off", "on")
    offset = 0
    for repeat in range(2):
        for user in range(500_000):
            a.add_exposure(offset, Exposure(ENV, "new-checkout", variants[user % 2], f"u{user}", repeat))
            offset += 1
    for user in range(0, 500_000, 5):
        a.add_tracking(user, TrackingEvent(ENV, "purchase", f"u{user}", None, 5))
    assert a.totals().exposures == 1_000_000
    started = time.perf_counter()
    document = results_document(e, a, flag({"fractional": [["off", 50], ["on", 50]]}, ("off", "on")))
    elapsed = time.perf_counter() - started
    assert document["users"] == 500_000
    assert [row["conversions"] for row in document["metrics"][0]["variants"]] == [50_000, 50_000]
    assert elapsed < 0.1, f"results took {elapsed * 1000:.1f} ms"
