"""The experiment record: canonical round trip, strict decoding, state rules,
``--metric`` parsing."""

from __future__ import annotations

import dataclasses
import json

import pytest

from flags.changes import UnsupportedChange
from flags.experiments.model import (
    InvalidExperiment,
    MalformedExperimentRecord,
    Metric,
    MetricType,
    Offsets,
    State,
    decode_record,
    encode_record,
    parse_metric,
    parse_record_key,
    record_key,
)
from tests.flags.experiment_fixtures import ENV, experiment

KEY = record_key(ENV, "checkout")


@pytest.mark.parametrize("state", list(State))
def test_round_trip_in_every_state(state: State) -> None:
    e = experiment(state=state, start=Offsets(3, 4), stop=Offsets(10, 12))
    value = encode_record(e)
    assert decode_record(KEY, value) == e
    assert encode_record(decode_record(KEY, value)) == value


def test_the_documented_fields() -> None:
    e = experiment(
        state=State.STOPPED,
        start=Offsets(3, 4),
        stop=Offsets(10, 12),
        metrics=(Metric("purchase", MetricType.CONVERSION), Metric("revenue", MetricType.VALUE)),
    )
    value = encode_record(e)
    assert value == json.dumps(json.loads(value), sort_keys=True, separators=(",", ":")).encode()
    assert json.loads(value) == {
        "format": 1,
        "kind": "experiment",
        "env": ENV,
        "name": "checkout",
        "flag": "new-checkout",
        "control": "off",
        "metrics": [{"event": "purchase", "type": "conversion"}, {"event": "revenue", "type": "value"}],
        "state": "stopped",
        "start_ms": 1_700_000_000_000,
        "stop_ms": 1_700_000_100_000,
        "start_offsets": {"exposures": 3, "tracking": 4},
        "stop_offsets": {"exposures": 10, "tracking": 12},
        "who": "0123456789abcdef",
        "when": 1_700_000_000_000,
    }
    assert KEY == "@experiment/production/checkout"


def _edited(**changes: object) -> bytes:
    doc = json.loads(encode_record(experiment(state=State.RUNNING)))
    doc.update(changes)
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "value",
    [
        b"not json",
        b"[]",
        _edited(extra=1),
        _edited(kind="sdk-key-create"),
        _edited(env="staging"),
        _edited(name="other"),
        _edited(state="paused"),
        _edited(state="draft"),  # a draft has no start
        _edited(stop_ms=5),  # running has no stop
        _edited(metrics=[]),
        _edited(metrics=[{"event": "a", "type": "conversion"}] * 2),
        _edited(metrics=[{"event": "a", "type": "ratio"}]),
        _edited(control=""),
        _edited(start_offsets={"exposures": -1, "tracking": 0}),
        _edited(start_offsets={"exposures": 1, "tracking": 0, "x": 1}),
        _edited(when=True),
        _edited(format=0),
        encode_record(experiment(state=State.RUNNING)).replace(b",", b", ", 1),  # not canonical
        encode_record(experiment(state=State.RUNNING)).replace(b'"when"', b'"when":1,"when"'),
    ],
)
def test_malformed_records_are_refused(value: bytes) -> None:
    with pytest.raises(MalformedExperimentRecord):
        decode_record(KEY, value)


def test_a_newer_format_is_unsupported_not_malformed() -> None:
    with pytest.raises(UnsupportedChange):
        decode_record(KEY, _edited(format=2))


@pytest.mark.parametrize(
    "key", ["@experiment/production", "@experiment/Prod/x", "@experiment/production/Bad_Name", "production/x"]
)
def test_bad_record_keys(key: str) -> None:
    with pytest.raises(MalformedExperimentRecord):
        parse_record_key(key)


def test_a_stop_before_the_start_is_invalid() -> None:
    e = experiment(state=State.STOPPED, start=Offsets(10, 10), stop=Offsets(9, 10))
    with pytest.raises(InvalidExperiment):
        encode_record(e)
    with pytest.raises(InvalidExperiment):
        encode_record(dataclasses.replace(experiment(state=State.STOPPED), stop_ms=1))


@pytest.mark.parametrize(
    ("text", "metric"),
    [
        ("purchase", Metric("purchase", MetricType.CONVERSION)),
        ("purchase:conversion", Metric("purchase", MetricType.CONVERSION)),
        ("revenue:value", Metric("revenue", MetricType.VALUE)),
        ("a:b", Metric("a:b", MetricType.CONVERSION)),
        ("a:b:value", Metric("a:b", MetricType.VALUE)),
    ],
)
def test_parse_metric(text: str, metric: Metric) -> None:
    assert parse_metric(text) == metric


@pytest.mark.parametrize("text", ["", ":value", "x" * 129])
def test_parse_metric_refuses(text: str) -> None:
    with pytest.raises(InvalidExperiment):
        parse_metric(text)
