"""Builders shared by the experiment tests: definitions, exposure and
tracking record values in the documented formats (docs/plan of issue 17),
and the fields every results row carries."""

from __future__ import annotations

from flags.experiments.model import Experiment, Metric, MetricType, Offsets, State
from tests.flags.events_support import canonical, exposure_record

ENV = "production"
WHO = "0123456789abcdef"
RESULT_ROW_FIELDS = {
    "variant",
    "users",
    "conversions",
    "rate",
    "mean",
    "lift",
    "lift_ci_low",
    "lift_ci_high",
    "p_value",
    "chance_to_beat_control",
}
"""What every variant row of an experiment's results carries (``VariantResult.to_json``)."""


def experiment(
    name: str = "checkout",
    *,
    state: State = State.DRAFT,
    start: Offsets | None = None,
    stop: Offsets | None = None,
    metrics: tuple[Metric, ...] = (Metric("purchase", MetricType.CONVERSION),),
    flag: str = "new-checkout",
    control: str = "off",
    env: str = ENV,
) -> Experiment:
    started = state is not State.DRAFT
    stopped = state is State.STOPPED
    return Experiment(
        env=env,
        name=name,
        flag=flag,
        control=control,
        metrics=metrics,
        state=state,
        who=WHO,
        when=1_700_000_000_000,
        start_ms=1_700_000_000_000 if started else None,
        stop_ms=1_700_000_100_000 if stopped else None,
        start_offsets=(start or Offsets(0, 0)) if started else None,
        stop_offsets=(stop or Offsets(100, 100)) if stopped else None,
    )


def exposure_value(
    user: str, variant: str, ts: int, *, flag: str = "new-checkout", env: str = ENV, source: str = "rpc"
) -> bytes:
    return exposure_record(env, flag, variant, "SPLIT", user, 7, source, ts)


def tracking_value(user: str, name: str, ts: int, value: float | None = None, *, env: str = ENV) -> bytes:
    return canonical(
        {
            "format": 1,
            "env": env,
            "name": name,
            "targetingKey": user,
            "value": value,
            "attributes": {},
            "ts": ts,
        }
    )
