"""Experiment definitions and their record in a tenant's ``__flags`` topic (pure).

An experiment names an environment, a flag of it, the control variant, one or
more metrics and, once started and stopped, the window it analyses. It lives
in the tenant's ``__flags`` topic (so it has history and audit like flags)
under the record key ``@experiment/<env>/<name>`` (environment names are
``[a-z0-9-]``: ``@`` never collides with ``<env>``, ``<env>/<flag>`` or
``@sdk-key/<id>``). Every record carries the *complete current definition*,
so the latest record under the key is enough (compaction keeps only it).

Record value: canonical JSON, UTF-8, the dialect of flags/changes.py (keys
sorted, no whitespace, no NaN/Infinity, non-ASCII as itself); ``decode``
refuses anything that does not re-encode to the same bytes (unknown,
missing or duplicated fields included).

================= =========== ====================================================
field             type        meaning
================= =========== ====================================================
``format``        int         ``1``; a newer one raises ``UnsupportedChange``
``kind``          str         ``"experiment"``
``env``           str         the environment (must match the record key)
``name``          str         the experiment (must match the record key):
                              ``[a-z0-9]`` and inner ``-``, at most 63
``flag``          str         the flag whose variants are compared
``control``       str         the control variant (1-128 characters)
``metrics``       list        1-20 ``{"event": E, "type": "conversion"|"value"}``,
                              no (event, type) twice; E is 1-128 printable
                              characters (an OpenFeature tracking event name)
``state``         str         ``"draft"``, ``"running"`` or ``"stopped"``
``start_ms``      int|null    when it was started (the writer's clock); null in draft
``stop_ms``       int|null    when it was stopped; null unless stopped
``start_offsets`` obj|null    ``{"exposures": o, "tracking": o}``: the end
                              offsets of ``__exposures``/``__tracking`` when
                              it started: analysis reads from there; null in draft
``stop_offsets``  obj|null    the end offsets when it stopped: analysis reads
                              up to there (exclusive); null unless stopped
``who``           str         the API key id that wrote this record (1-128)
``when``          int         ms since the Unix epoch (informational)
================= =========== ====================================================

A tombstone (null value) under an experiment key removes the experiment
(nothing writes one today; a compacted topic gives tombstones that meaning).

Invariants:

- ``decode_record(key, encode_record(e)) == e`` and
  ``encode_record(decode_record(key, b)) == b`` for any bytes ``decode_record``
  accepts.
- ``decode_record`` raises only ``MalformedExperimentRecord`` (bytes this
  format never produces) or ``UnsupportedChange`` (a newer ``format``).
- An ``Experiment`` that passed ``check`` is consistent with its state:
  draft has no start/stop; running has start only; stopped has both, and the
  stop offsets and time are not before the start's.
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

from flags.canonical_json import canonical, load_record
from flags.model import check_environment_name, check_flag_key

__all__ = [
    "FORMAT_VERSION",
    "MAX_METRICS",
    "RECORD_KEY_PREFIX",
    "Experiment",
    "InvalidExperiment",
    "MalformedExperimentRecord",
    "Metric",
    "MetricType",
    "Offsets",
    "State",
    "check",
    "check_event_name",
    "check_experiment_name",
    "decode_record",
    "encode_record",
    "is_experiment_record",
    "parse_metric",
    "parse_record_key",
    "record_key",
]

FORMAT_VERSION = 1
KIND = "experiment"
RECORD_KEY_PREFIX = "@experiment/"
MAX_NAME_LENGTH = 63
MAX_TEXT_LENGTH = 128
MAX_METRICS = 20
MAX_INT = (1 << 63) - 1

_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]*[a-z0-9])?")
_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f-\x9f]")


class InvalidExperiment(ValueError):
    """A definition that breaks a rule of the table (the message says which)."""


class MalformedExperimentRecord(InvalidExperiment):
    """Bytes (or a record key) this format never produces."""


class State(enum.StrEnum):
    DRAFT = "draft"
    RUNNING = "running"
    STOPPED = "stopped"


class MetricType(enum.StrEnum):
    CONVERSION = "conversion"
    """Did the user send the event after its first exposure (0/1 per user)."""
    VALUE = "value"
    """The sum of the event's values per user after its first exposure (mean over users)."""


@dataclass(frozen=True, slots=True)
class Metric:
    event: str
    type: MetricType

    def to_json(self) -> dict[str, str]:
        return {"event": self.event, "type": self.type.value}


@dataclass(frozen=True, slots=True)
class Offsets:
    """Positions in the tenant's ``__exposures`` and ``__tracking`` topics."""

    exposures: int
    tracking: int

    def to_json(self) -> dict[str, int]:
        return {"exposures": self.exposures, "tracking": self.tracking}


@dataclass(frozen=True, slots=True)
class Experiment:
    env: str
    name: str
    flag: str
    control: str
    metrics: tuple[Metric, ...]
    state: State
    who: str
    when: int
    start_ms: int | None = None
    stop_ms: int | None = None
    start_offsets: Offsets | None = None
    stop_offsets: Offsets | None = None

    @property
    def key(self) -> str:
        return record_key(self.env, self.name)

    def same_definition(self, other: Experiment) -> bool:
        """Same experiment: everything a start or stop never changes."""
        return (self.env, self.name, self.flag, self.control, self.metrics) == (
            other.env,
            other.name,
            other.flag,
            other.control,
            other.metrics,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "kind": KIND,
            "env": self.env,
            "name": self.name,
            "flag": self.flag,
            "control": self.control,
            "metrics": [m.to_json() for m in self.metrics],
            "state": self.state.value,
            "start_ms": self.start_ms,
            "stop_ms": self.stop_ms,
            "start_offsets": None if self.start_offsets is None else self.start_offsets.to_json(),
            "stop_offsets": None if self.stop_offsets is None else self.stop_offsets.to_json(),
            "who": self.who,
            "when": self.when,
        }


# --- names -------------------------------------------------------------------------


def check_experiment_name(name: object) -> str | None:
    if not isinstance(name, str) or not name:
        return "an experiment name is a non-empty string"
    if len(name) > MAX_NAME_LENGTH:
        return f"an experiment name has at most {MAX_NAME_LENGTH} characters"
    if not _NAME.fullmatch(name):
        return f"experiment name {name!r} may contain only a-z, 0-9 and inner -"
    return None


def _check_text(what: str, text: object) -> str | None:
    if not isinstance(text, str) or not 0 < len(text) <= MAX_TEXT_LENGTH:
        return f"{what} is 1-{MAX_TEXT_LENGTH} characters"
    if _CONTROL_CHARACTERS.search(text):
        return f"{what} {text!r} contains control characters"
    return None


def check_event_name(event: object) -> str | None:
    return _check_text("an event name", event)


def parse_metric(text: str) -> Metric:
    """``EVENT``, ``EVENT:conversion`` or ``EVENT:value`` (the CLI's
    ``--metric``); a bare event is a conversion metric. An event whose name
    contains ``:`` is written with its type (``a:b:conversion``)."""
    event, colon, suffix = text.rpartition(":")
    if colon and suffix in (MetricType.CONVERSION.value, MetricType.VALUE.value):
        metric = Metric(event, MetricType(suffix))
    else:
        metric = Metric(text, MetricType.CONVERSION)
    if problem := check_event_name(metric.event):
        raise InvalidExperiment(f"metric {text!r}: {problem}")
    return metric


def record_key(env: str, name: str) -> str:
    return f"{RECORD_KEY_PREFIX}{env}/{name}"


def is_experiment_record(key: str) -> bool:
    return key.startswith(RECORD_KEY_PREFIX)


def parse_record_key(key: str) -> tuple[str, str]:
    """``(env, name)``; raises ``MalformedExperimentRecord``."""
    if not key.startswith(RECORD_KEY_PREFIX):
        raise MalformedExperimentRecord(f"record key {key!r} is not an experiment's")
    env, slash, name = key[len(RECORD_KEY_PREFIX) :].partition("/")
    problem = check_environment_name(env) or (None if slash else "no experiment name")
    problem = problem or check_experiment_name(name)
    if problem:
        raise MalformedExperimentRecord(f"record key {key!r}: {problem}")
    return env, name


# --- checking ----------------------------------------------------------------------


def _check_int(what: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_INT:
        raise InvalidExperiment(f"{what} must be an integer in 0..2^63-1, not {value!r}")


def _check_offsets(what: str, offsets: object) -> None:
    if not isinstance(offsets, Offsets):
        raise InvalidExperiment(f"{what} must be offsets")
    _check_int(f"{what}.exposures", offsets.exposures)
    _check_int(f"{what}.tracking", offsets.tracking)


def check(experiment: Experiment) -> None:
    """Raise ``InvalidExperiment`` if ``experiment`` breaks a rule of the table."""
    e = experiment
    problem = (
        check_environment_name(e.env)
        or check_experiment_name(e.name)
        or check_flag_key(e.flag)
        or _check_text("the control variant", e.control)
        or _check_text("who", e.who)
    )
    if problem:
        raise InvalidExperiment(problem)
    _check_int("when", e.when)
    if not isinstance(e.metrics, tuple) or not 0 < len(e.metrics) <= MAX_METRICS:
        raise InvalidExperiment(f"an experiment has 1-{MAX_METRICS} metrics")
    seen: set[tuple[str, MetricType]] = set()
    for metric in e.metrics:
        if not isinstance(metric, Metric) or not isinstance(metric.type, MetricType):
            raise InvalidExperiment(f"metric {metric!r} is not a metric")
        if problem := check_event_name(metric.event):
            raise InvalidExperiment(problem)
        if (metric.event, metric.type) in seen:
            raise InvalidExperiment(f"metric {metric.event}:{metric.type} is named twice")
        seen.add((metric.event, metric.type))
    if not isinstance(e.state, State):
        raise InvalidExperiment(f"unknown state {e.state!r}")
    started = e.state is not State.DRAFT
    stopped = e.state is State.STOPPED
    for what, value, wanted in (
        ("start_ms", e.start_ms, started),
        ("start_offsets", e.start_offsets, started),
        ("stop_ms", e.stop_ms, stopped),
        ("stop_offsets", e.stop_offsets, stopped),
    ):
        if (value is not None) != wanted:
            raise InvalidExperiment(f"a {e.state} experiment {'has' if wanted else 'has no'} {what}")
    if started:
        _check_int("start_ms", e.start_ms)
        _check_offsets("start_offsets", e.start_offsets)
    if stopped:
        _check_int("stop_ms", e.stop_ms)
        _check_offsets("stop_offsets", e.stop_offsets)
        assert e.start_offsets is not None and e.stop_offsets is not None
        assert e.start_ms is not None and e.stop_ms is not None
        if (
            e.stop_offsets.exposures < e.start_offsets.exposures
            or e.stop_offsets.tracking < e.start_offsets.tracking
            or e.stop_ms < e.start_ms
        ):
            raise InvalidExperiment("an experiment stops at or after its start (offsets and time)")


# --- the record --------------------------------------------------------------------


def encode_record(experiment: Experiment) -> bytes:
    """The record value. Raises ``InvalidExperiment`` for a definition the
    table does not allow (a writer bug: it is never written)."""
    check(experiment)
    return canonical(experiment.to_json())


def _offsets(raw: object) -> Offsets | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise MalformedExperimentRecord(f"offsets {raw!r} are not an object")
    return Offsets(raw.get("exposures"), raw.get("tracking"))  # type: ignore[arg-type]  # checked by check()


def decode_record(key: str, value: bytes) -> Experiment:
    """The experiment in a record with ``key`` and ``value`` (not a tombstone)."""
    env, name = parse_record_key(key)
    doc = load_record(key, value, MalformedExperimentRecord, FORMAT_VERSION)
    if doc.get("kind") != KIND:
        raise MalformedExperimentRecord(f"record {key!r}: kind {doc.get('kind')!r} is not {KIND!r}")
    if doc.get("env") != env or doc.get("name") != name:
        raise MalformedExperimentRecord(
            f"record {key!r} names env {doc.get('env')!r} name {doc.get('name')!r}"
        )
    raw_metrics = doc.get("metrics")
    if not isinstance(raw_metrics, list) or not all(isinstance(m, dict) for m in raw_metrics):
        raise MalformedExperimentRecord(f"record {key!r}: metrics is a list of objects")
    try:
        metrics = tuple(Metric(m.get("event"), MetricType(m.get("type"))) for m in raw_metrics)
        experiment = Experiment(
            env=env,
            name=name,
            flag=doc.get("flag"),  # type: ignore[arg-type]  # checked by check()
            control=doc.get("control"),  # type: ignore[arg-type]
            metrics=metrics,
            state=State(str(doc.get("state"))),
            who=doc.get("who"),  # type: ignore[arg-type]
            when=doc.get("when"),  # type: ignore[arg-type]
            start_ms=doc.get("start_ms"),
            stop_ms=doc.get("stop_ms"),
            start_offsets=_offsets(doc.get("start_offsets")),
            stop_offsets=_offsets(doc.get("stop_offsets")),
        )
        again = encode_record(experiment)
    except MalformedExperimentRecord:
        raise
    except (TypeError, ValueError) as exc:
        raise MalformedExperimentRecord(f"record {key!r}: {exc}") from None
    if again != value:
        raise MalformedExperimentRecord(
            f"record {key!r} is not in canonical form (or has unknown or missing fields)"
        )
    return experiment
