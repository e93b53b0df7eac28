"""An experiment's results as JSON (pure): attribution totals -> flags/experiments/stats.py -> rows.

``results_document`` is what ``GetExperimentResults`` answers and
``raftlog experiment results --json`` prints::

    {"experiment", "environment", "flag", "control", "state", "start_ms", "stop_ms",
     "users", "srm_p_value", "srm_warning", "weights": {variant: weight},
     "metrics": [{"event", "type", "srm_p_value",
                  "variants": [{"variant", "users", "conversions", "rate", "mean",
                                "lift", "lift_ci_low", "lift_ci_high", "p_value",
                                "chance_to_beat_control", "absolute_lift", ...}]}],
     "analysis": {"exposures_read_to", "tracking_read_to", "complete", "exposures",
                  "tracking", "pending_users", "pending_dropped"}}

Rows: the control first, then the flag's other variants in its definition's
order, then variants seen in exposures the flag no longer has; every row has
every field (``VariantResult.to_json``), ``null`` where it does not apply
(conversions and rate for value metrics, mean for conversion metrics,
comparisons for the control). ``srm_p_value`` is the experiment's (users by
first exposure against the configured weights); each metric repeats it, so a
reader may take it from either place.

Configured weights (the SRM check's expectation): the first ``fractional``
operation in the flag's targeting (``[variant, weight]`` entries; a missing
weight is 1; a leading bucketing expression is skipped); every other variant
of the flag weighs 0. A flag without one, or whose fractions are computed at
evaluation time: equal weights over the flag's variants.

Invariant: every float in the document is finite (``stats`` guarantees it
for rows and p-values); the document is a function of the experiment, the
totals and the flag definition only.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flags.experiments.attribution import Attribution, Totals
from flags.experiments.model import Experiment, MetricType
from flags.experiments.stats import (
    ConversionCounts,
    ValueSummary,
    analyse_conversions,
    analyse_values,
    sample_ratio_mismatch,
)
from flags.model import Flag

__all__ = ["configured_weights", "results_document"]


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    """Every JSON object in ``node``, depth first, in document order."""
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def _fractions(arguments: Any) -> dict[str, float] | None:
    """Constant ``[variant, weight]`` entries of one ``fractional``; None if any is computed."""
    if not isinstance(arguments, list) or not arguments:
        return None
    entries = arguments if isinstance(arguments[0], list) else arguments[1:]
    weights: dict[str, float] = {}
    for entry in entries:
        if not isinstance(entry, list) or not 1 <= len(entry) <= 2 or not isinstance(entry[0], str):
            return None
        weight = entry[1] if len(entry) == 2 else 1
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            return None
        weights[entry[0]] = weights.get(entry[0], 0.0) + float(weight)
    return weights or None


def configured_weights(flag: Flag | None, seen: tuple[str, ...] = ()) -> dict[str, float]:
    """The variants' configured weights (module docstring); ``seen`` are used
    when the flag no longer exists."""
    if flag is None:
        return dict.fromkeys(seen, 1.0)
    for node in _walk(flag.targeting):
        if "fractional" in node:
            weights = _fractions(node["fractional"])
            if weights is not None:
                return {**dict.fromkeys(flag.variants, 0.0), **weights}
            break
    return dict.fromkeys(flag.variants, 1.0)


def _variant_order(experiment: Experiment, flag: Flag | None, seen: tuple[str, ...]) -> list[str]:
    order = [experiment.control]
    for name in (*(flag.variants if flag is not None else ()), *seen):
        if name not in order:
            order.append(name)
    return order


def _analysis(attribution: Attribution, totals: Totals) -> dict[str, Any]:
    return {
        "exposures_read_to": attribution.next_exposure,
        "tracking_read_to": attribution.next_tracking,
        "complete": attribution.complete(),
        "exposures": totals.exposures,
        "tracking": totals.tracking,
        "pending_users": totals.pending_users,
        "pending_dropped": totals.pending_dropped,
    }


def results_document(experiment: Experiment, attribution: Attribution, flag: Flag | None) -> dict[str, Any]:
    """The results JSON object (module docstring) from ``attribution``'s totals now."""
    totals = attribution.totals()
    seen = attribution.variants()
    order = _variant_order(experiment, flag, seen)
    users = {name: totals.users.get(name, 0) for name in order}
    weights = configured_weights(flag, seen)
    srm = sample_ratio_mismatch(users, weights)
    metrics = []
    for index, metric in enumerate(experiment.metrics):
        by_variant = totals.metrics[index]
        if metric.type is MetricType.CONVERSION:
            rows = analyse_conversions(
                {
                    name: ConversionCounts(
                        users[name], by_variant[name].conversions if name in by_variant else 0
                    )
                    for name in order
                },
                experiment.control,
            )
        else:
            rows = analyse_values(
                {
                    name: (
                        ValueSummary(
                            users[name], by_variant[name].total, max(0.0, by_variant[name].total_squares)
                        )
                        if name in by_variant
                        else ValueSummary()
                    )
                    for name in order
                },
                experiment.control,
            )
        metrics.append(
            {
                "event": metric.event,
                "type": metric.type.value,
                "srm_p_value": srm.p_value,
                "variants": [row.to_json() for row in rows],
            }
        )
    return {
        "experiment": experiment.name,
        "environment": experiment.env,
        "flag": experiment.flag,
        "control": experiment.control,
        "state": experiment.state.value,
        "start_ms": experiment.start_ms,
        "stop_ms": experiment.stop_ms,
        "users": sum(users.values()),
        "srm_p_value": srm.p_value,
        "srm_warning": srm.warn,
        "weights": weights,
        "metrics": metrics,
        "analysis": _analysis(attribution, totals),
    }
