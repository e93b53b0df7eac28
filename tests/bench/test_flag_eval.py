"""The flags step of the benchmark: the identity check that guards its
figures, its keys, and the ratio targets judged against flagd-core's figures
of the same run."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagResolutionDetails

from bench import flag_eval, report
from bench.flag_eval import FlagEvalParams, ResultsDiffer
from flags.evaluator import FlagdEvaluator

META: dict[str, Any] = {"commit": "0" * 40, "dirty": False, "machine": {}, "profile": "test", "wall_s": 1}


class _WrongForOneUser(FlagdEvaluator):
    """Our evaluator, but the fractional split answers wrongly for one targeting key."""

    def resolve_string_value(
        self, flag_key: str, default_value: str, ctx: EvaluationContext | None = None, **kw: Any
    ) -> FlagResolutionDetails[str]:
        details = super().resolve_string_value(flag_key, default_value, ctx, **kw)
        if ctx is not None and ctx.targeting_key == "user-000042":
            other = "blue" if details.variant != "blue" else "red"
            return FlagResolutionDetails(other, variant=other, reason=details.reason)
        return details


def _loaded(evaluator: Any) -> Any:
    # A copy: flagd-core changes the configuration it is given.
    evaluator.set_flags(copy.deepcopy(flag_eval.FLAG_SET))
    return evaluator


def test_identity_check_passes_for_our_evaluator_and_names_a_difference() -> None:
    contexts = flag_eval.build_contexts(100)
    reference = _loaded(FlagdCore())
    assert flag_eval.check_identical(_loaded(FlagdEvaluator()), reference, contexts) == 300
    with pytest.raises(ResultsDiffer, match=r"fractional.*user-000042"):
        flag_eval.check_identical(_loaded(_WrongForOneUser()), reference, contexts)


def test_contexts_are_distinct_and_exercise_both_branches_of_the_rule() -> None:
    contexts = flag_eval.build_contexts(200)
    assert len({c.targeting_key for c in contexts}) == 200
    ours = _loaded(FlagdEvaluator())
    answers = {ours.resolve_boolean_value("targeting", False, c).value for c in contexts}
    splits = {ours.resolve_string_value("fractional", "none", c).value for c in contexts}
    assert answers == {True, False} and splits == {"red", "green", "blue"}


def test_measure_reports_every_key_and_the_reference_separately() -> None:
    result = flag_eval.measure(FlagEvalParams(contexts=20, rounds=2, passes=1))
    assert result["flags_identical"] is True
    for case in ("static", "targeting", "fractional"):
        assert result[f"flag_eval_{case}_us"] > 0
        assert result["reference"][f"flagd_core_{case}_us"] > 0
        assert len(result["details"]["rounds_us"][case]["ours_us"]) == 2


def test_ratio_target_is_judged_against_the_reference_of_the_same_run() -> None:
    document = report.assemble(
        {"flag_eval_static_us": 1.0, "flag_eval_targeting_us": 2.0},
        {"flagd_core_static_us": 3.3, "flagd_core_targeting_us": 5.0},
        {},
        {},
        meta=META,
    )
    targets = document["targets"]
    assert targets["flag_eval_static_us"]["met"] is True  # 1.0 <= 3.3 / 3
    assert targets["flag_eval_targeting_us"]["met"] is False  # 2.0 > 5.0 / 3
    assert "≤ 1.67" in targets["flag_eval_targeting_us"]["target"]
    # Neither side measured: not met, listed.
    assert targets["flag_eval_fractional_us"]["met"] is None
    assert {"flag_eval_targeting_us", "flag_eval_fractional_us"} <= set(document["missed"])
    assert "flag_eval_static_us" not in document["missed"]
    assert document["reference"]["flagd_core_targeting_us"] == 5.0
    # Ours measured but the reference not: cannot be judged, so not met.
    alone = report.assemble({"flag_eval_static_us": 0.1}, {}, {}, {}, meta=META)
    assert alone["targets"]["flag_eval_static_us"]["met"] is None
    assert "**not measured**" in report.markdown(alone)
