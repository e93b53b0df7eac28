"""The flag evaluator against the reference, in one process: µs per evaluation.

Three flags, each evaluated over the same pre-built contexts by
``flags.evaluator.FlagdEvaluator`` (ours) and by ``openfeature-flagd-core``'s
``FlagdCore`` (the reference the in-process flagd provider uses):

- ``static``: a boolean flag without targeting (the default variant);
- ``targeting``: a boolean flag whose rule is ``ends_with`` on an email and
  ``>=`` on a number;
- ``fractional``: a 3-way ``fractional`` split (weights 50/30/20) on the
  targeting key, bucketed with flagd's current algorithm (``v3``, ours'
  default and the reference's).

Invariants: before anything is timed, every context of every case is
resolved by both evaluators and the answers (value, variant, reason) must be
identical, or ``measure`` raises ``ResultsDiffer`` (the step fails; no
figure is reported for code that answers differently). Timing interleaves the
two evaluators (ours, then the reference, per case, ``rounds`` times) so that
other work on the machine hits both alike, and reports the **best** round of
each (the least disturbed one: the code's own cost). Each evaluator gets its
own copy of the contexts, so neither sees what the other might have cached
or changed in them. Figures are wall time per evaluation, loop included (the
same loop for both).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails

from flags.evaluator import FlagdEvaluator

FLAG_SET: dict[str, Any] = {
    "metadata": {"flagSetId": "bench"},
    "flags": {
        "static": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"},
        "targeting": {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
            "targeting": {
                "if": [
                    {
                        "and": [
                            {"ends_with": [{"var": "email"}, "@example.com"]},
                            {">=": [{"var": "age"}, 18]},
                        ]
                    },
                    "on",
                    "off",
                ]
            },
        },
        "fractional": {
            "state": "ENABLED",
            "variants": {"red": "red", "green": "green", "blue": "blue"},
            "defaultVariant": "red",
            "targeting": {"fractional": [["red", 50], ["green", 30], ["blue", 20]]},
        },
    },
}

# Case name -> (flag key, resolve method, caller's default).
CASES: dict[str, tuple[str, str, Any]] = {
    "static": ("static", "resolve_boolean_value", False),
    "targeting": ("targeting", "resolve_boolean_value", False),
    "fractional": ("fractional", "resolve_string_value", "none"),
}

_DOMAINS = ("example.com", "example.org", "corp.example.com", "mail.example")


@dataclass(frozen=True)
class FlagEvalParams:
    contexts: int = 1000
    """Distinct evaluation contexts, built before any timing."""
    rounds: int = 7
    """Interleaved rounds (ours, reference) per case; the best of each is reported."""
    passes: int = 20
    """Passes over the contexts in one timed round (a round long enough for the clock)."""


class ResultsDiffer(AssertionError):
    """Ours and the reference answered a context differently."""


def build_contexts(count: int) -> list[EvaluationContext]:
    """``count`` distinct contexts: targeting keys, emails over several domains
    (about a quarter end in ``@example.com``), ages 0-79 (both sides of 18)."""
    return [
        EvaluationContext(
            f"user-{i:06d}",
            {"email": f"user{i}@{_DOMAINS[i % len(_DOMAINS)]}", "age": (i * 7) % 80, "plan": "free"},
        )
        for i in range(count)
    ]


def _answer(details: FlagResolutionDetails[Any]) -> tuple[Any, ...]:
    return (details.value, type(details.value).__name__, details.variant, str(details.reason))


def check_identical(ours: Any, reference: Any, contexts: Sequence[EvaluationContext]) -> int:
    """Every case over every context: the same value, variant and reason from
    both, or ``ResultsDiffer`` naming the first difference. The number of
    evaluations compared."""
    compared = 0
    for case, (key, method, default) in CASES.items():
        ours_resolve = getattr(ours, method)
        reference_resolve = getattr(reference, method)
        for ctx in contexts:
            # Each evaluator gets its own copy: a mutation by one cannot hide a difference.
            mine = _answer(ours_resolve(key, default, copy.deepcopy(ctx)))
            theirs = _answer(reference_resolve(key, default, copy.deepcopy(ctx)))
            if mine != theirs:
                raise ResultsDiffer(
                    f"{case}: ours {mine} != flagd-core {theirs} for "
                    f"targeting key {ctx.targeting_key!r}, attributes {ctx.attributes!r}"
                )
            compared += 1
    return compared


def _time_round(
    resolve: Callable[..., Any], key: str, default: Any, contexts: Sequence[EvaluationContext], passes: int
) -> float:
    """µs per evaluation over ``passes`` passes of ``contexts``."""
    started = time.perf_counter()
    for _ in range(passes):
        for ctx in contexts:
            resolve(key, default, ctx)
    elapsed = time.perf_counter() - started
    return elapsed / (passes * len(contexts)) * 1e6


def measure(params: FlagEvalParams) -> dict[str, Any]:
    """The step's result: ``flag_eval_*_us`` figures, the reference's under
    ``reference``, ``flags_identical``, and every round in ``details``."""
    ours, reference = FlagdEvaluator(), FlagdCore()
    ours.set_flags(copy.deepcopy(FLAG_SET))
    reference.set_flags(copy.deepcopy(FLAG_SET))
    contexts = build_contexts(params.contexts)
    compared = check_identical(ours, reference, contexts)
    ours_contexts, reference_contexts = copy.deepcopy(contexts), copy.deepcopy(contexts)

    rounds: dict[str, dict[str, list[float]]] = {}
    for case, (key, method, default) in CASES.items():
        ours_us: list[float] = []
        reference_us: list[float] = []
        # Warm-up pass for each (first-call costs, caches of the interpreter).
        _time_round(getattr(ours, method), key, default, ours_contexts, 1)
        _time_round(getattr(reference, method), key, default, reference_contexts, 1)
        for _ in range(params.rounds):
            ours_us.append(_time_round(getattr(ours, method), key, default, ours_contexts, params.passes))
            reference_us.append(
                _time_round(getattr(reference, method), key, default, reference_contexts, params.passes)
            )
        rounds[case] = {"ours_us": ours_us, "flagd_core_us": reference_us}

    figures: dict[str, Any] = {
        f"flag_eval_{case}_us": round(min(r["ours_us"]), 3) for case, r in rounds.items()
    }
    refs = {f"flagd_core_{case}_us": round(min(r["flagd_core_us"]), 3) for case, r in rounds.items()}
    return {
        **figures,
        "flags_identical": True,
        "reference": refs,
        "details": {
            "statistic": "best of the interleaved rounds",
            "contexts": params.contexts,
            "rounds": params.rounds,
            "passes_per_round": params.passes,
            "evaluations_compared": compared,
            "speedup": {
                case: round(min(r["flagd_core_us"]) / min(r["ours_us"]), 2) for case, r in rounds.items()
            },
            "rounds_us": {
                case: {side: [round(v, 3) for v in values] for side, values in r.items()}
                for case, r in rounds.items()
            },
        },
    }
