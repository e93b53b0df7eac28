"""Experiment results (flags/experiments/stats.py) against reference values computed independently with scipy.

References, per result:

- Wilson intervals: ``scipy.stats.binomtest(...).proportion_ci(method="wilson")``,
  combined into Newcombe's hybrid interval here;
- relative lift and its interval: ``scipy.stats.contingency.relative_risk`` (Katz);
- two-proportion z-test: ``scipy.stats.chi2_contingency(correction=False)`` on the
  2x2 table (its chi-square is the pooled z squared);
- chance to beat control (conversions): numeric integration of the Beta posteriors;
- Welch: ``scipy.stats.ttest_ind(equal_var=False)`` on the raw values (p-value, df,
  ``confidence_interval``); the relative interval by the delta method with ``scipy.stats.t``;
- SRM: ``scipy.stats.chisquare`` with the expected counts from the weights.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, stats  # type: ignore[import-untyped]

from flags.experiments.stats import (
    SRM_WARN_P_VALUE,
    ConversionCounts,
    SampleRatioCheck,
    ValueSummary,
    VariantResult,
    analyse_conversions,
    analyse_values,
    sample_ratio_mismatch,
)
from tests.flags.experiment_fixtures import RESULT_ROW_FIELDS

COMPARISON_FIELDS = (
    "lift",
    "lift_ci_low",
    "lift_ci_high",
    "absolute_lift",
    "absolute_lift_ci_low",
    "absolute_lift_ci_high",
    "p_value",
    "chance_to_beat_control",
    "sequential_p_value",
    "sequential_ci_low",
    "sequential_ci_high",
)


def row(results: tuple[VariantResult, ...], variant: str) -> VariantResult:
    (found,) = [result for result in results if result.variant == variant]
    return found


def as_json(results: tuple[VariantResult, ...]) -> str:
    # allow_nan=False: the JSON the CLI prints must never carry NaN or Infinity.
    return json.dumps([result.to_json() for result in results], allow_nan=False)


def reference_newcombe(c_a: int, n_a: int, c_b: int, n_b: int) -> tuple[float, float]:
    wilson_a = stats.binomtest(c_a, n_a).proportion_ci(0.95, method="wilson")
    wilson_b = stats.binomtest(c_b, n_b).proportion_ci(0.95, method="wilson")
    p_a, p_b = c_a / n_a, c_b / n_b
    difference = p_b - p_a
    low = difference - math.hypot(p_b - wilson_b.low, wilson_a.high - p_a)
    high = difference + math.hypot(wilson_b.high - p_b, p_a - wilson_a.low)
    return low, high


def reference_chance_to_beat(c_a: int, n_a: int, c_b: int, n_b: int) -> float:
    a_a, b_a, a_b, b_b = 1 + c_a, 1 + n_a - c_a, 1 + c_b, 1 + n_b - c_b

    def integrand(x: float) -> float:
        return float(stats.beta.pdf(x, a_a, b_a) * stats.beta.sf(x, a_b, b_b))

    mode = (a_a - 1) / (a_a + b_a - 2) if a_a + b_a > 2 else 0.5
    value, _ = integrate.quad(integrand, 0.0, 1.0, points=[mode], limit=1_000, epsabs=1e-13)
    return float(value)


# --- conversion metrics ----------------------------------------------------------


CONVERSION_CASES = [
    (10_000, 1_000, 10_000, 1_200),  # the issue's 10% vs 12%
    (10_000, 1_000, 10_000, 1_000),  # no difference
    (500, 37, 800, 41),  # unequal arms, treatment worse
    (60, 3, 45, 9),  # small
    (2_000, 1_990, 2_100, 2_099),  # near 100%
]


@pytest.mark.parametrize(("n_a", "c_a", "n_b", "c_b"), CONVERSION_CASES)
def test_conversion_results_match_independent_references(n_a: int, c_a: int, n_b: int, c_b: int) -> None:
    results = analyse_conversions(
        {"control": ConversionCounts(n_a, c_a), "treatment": ConversionCounts(n_b, c_b)}, "control"
    )
    treatment = row(results, "treatment")
    assert (treatment.users, treatment.conversions) == (n_b, c_b)
    assert treatment.rate == pytest.approx(c_b / n_b, rel=1e-15)

    assert treatment.absolute_lift == pytest.approx(c_b / n_b - c_a / n_a, abs=1e-15)
    newcombe_low, newcombe_high = reference_newcombe(c_a, n_a, c_b, n_b)
    assert treatment.absolute_lift_ci_low == pytest.approx(newcombe_low, abs=1e-12)
    assert treatment.absolute_lift_ci_high == pytest.approx(newcombe_high, abs=1e-12)

    katz = stats.contingency.relative_risk(c_b, n_b, c_a, n_a)
    katz_interval = katz.confidence_interval(0.95)
    assert treatment.lift == pytest.approx(katz.relative_risk - 1, abs=1e-14)
    assert treatment.lift_ci_low == pytest.approx(katz_interval.low - 1, abs=1e-12)
    assert treatment.lift_ci_high == pytest.approx(katz_interval.high - 1, abs=1e-12)

    table = np.array([[c_a, n_a - c_a], [c_b, n_b - c_b]])
    chi_square = stats.chi2_contingency(table, correction=False)
    assert treatment.p_value == pytest.approx(float(chi_square.pvalue), rel=1e-9, abs=1e-15)

    assert treatment.chance_to_beat_control == pytest.approx(
        reference_chance_to_beat(c_a, n_a, c_b, n_b), abs=1e-9
    )


def test_the_pooled_z_test_is_the_textbook_formula() -> None:
    # An explicit second reference for the z-test: pooled standard error, normal tails.
    results = analyse_conversions({"a": ConversionCounts(4_000, 400), "b": ConversionCounts(3_000, 345)}, "a")
    pooled = 745 / 7_000
    z = (345 / 3_000 - 400 / 4_000) / math.sqrt(pooled * (1 - pooled) * (1 / 4_000 + 1 / 3_000))
    assert row(results, "b").p_value == pytest.approx(float(2 * stats.norm.sf(abs(z))), rel=1e-12)


def test_the_control_row_has_no_comparison_and_rows_keep_the_mapping_order() -> None:
    results = analyse_conversions(
        {"b": ConversionCounts(100, 10), "control": ConversionCounts(100, 12), "a": ConversionCounts(100, 9)},
        "control",
    )
    assert [result.variant for result in results] == ["b", "control", "a"]
    control = row(results, "control")
    assert (control.users, control.conversions, control.rate) == (100, 12, 0.12)
    assert all(getattr(control, name) is None for name in COMPARISON_FIELDS)
    assert all(
        getattr(row(results, name), name_) is not None for name in ("a", "b") for name_ in COMPARISON_FIELDS
    )


def test_the_json_rows_carry_the_issue_fields() -> None:
    results = analyse_conversions({"off": ConversionCounts(100, 10), "on": ConversionCounts(100, 14)}, "off")
    for result in results:
        assert set(result.to_json()) >= RESULT_ROW_FIELDS
    assert row(results, "on").to_json()["mean"] is None
    values = analyse_values({"off": ValueSummary.of([1.0, 2.0]), "on": ValueSummary.of([2.0, 4.0])}, "off")
    on = row(values, "on").to_json()
    assert on["mean"] == 3.0
    assert on["conversions"] is None and on["rate"] is None


def test_issue_acceptance_ten_versus_twelve_percent_with_20000_users_is_significant() -> None:
    generator = np.random.default_rng(17)
    control = int(generator.binomial(10_000, 0.10))
    treatment = int(generator.binomial(10_000, 0.12))
    results = analyse_conversions(
        {"control": ConversionCounts(10_000, control), "treatment": ConversionCounts(10_000, treatment)},
        "control",
    )
    result = row(results, "treatment")
    assert result.p_value is not None and result.p_value < 0.05
    assert result.lift_ci_low is not None and result.lift_ci_low > 0
    assert result.chance_to_beat_control is not None and result.chance_to_beat_control > 0.95


# --- conversion edge cases -----------------------------------------------------


def test_zero_conversions_everywhere() -> None:
    results = analyse_conversions({"a": ConversionCounts(400, 0), "b": ConversionCounts(300, 0)}, "a")
    b = row(results, "b")
    assert b.rate == 0.0
    assert b.lift is None and b.lift_ci_low is None and b.lift_ci_high is None  # no ratio against 0%
    assert b.absolute_lift == 0.0
    newcombe_low, newcombe_high = reference_newcombe(0, 400, 0, 300)
    assert (b.absolute_lift_ci_low, b.absolute_lift_ci_high) == pytest.approx(
        (newcombe_low, newcombe_high), abs=1e-12
    )
    assert b.p_value == 1.0
    assert b.chance_to_beat_control == pytest.approx(reference_chance_to_beat(0, 400, 0, 300), abs=1e-10)
    assert b.sequential_p_value == 1.0 and b.sequential_ci_low is None
    as_json(results)


def test_zero_conversions_in_the_treatment_only() -> None:
    b = row(analyse_conversions({"a": ConversionCounts(400, 20), "b": ConversionCounts(400, 0)}, "a"), "b")
    assert b.lift == -1.0
    assert b.lift_ci_low is None and b.lift_ci_high is None
    assert b.p_value == pytest.approx(
        float(stats.chi2_contingency(np.array([[20, 380], [0, 400]]), correction=False).pvalue), rel=1e-9
    )
    assert b.chance_to_beat_control == pytest.approx(reference_chance_to_beat(20, 400, 0, 400), abs=1e-10)


def test_every_user_converts_in_both_arms() -> None:
    results = analyse_conversions({"a": ConversionCounts(50, 50), "b": ConversionCounts(70, 70)}, "a")
    b = row(results, "b")
    assert b.rate == 1.0
    assert b.lift == 0.0 and b.lift_ci_low == 0.0 and b.lift_ci_high == 0.0
    assert b.p_value == 1.0
    newcombe_low, newcombe_high = reference_newcombe(50, 50, 70, 70)
    assert (b.absolute_lift_ci_low, b.absolute_lift_ci_high) == pytest.approx(
        (newcombe_low, newcombe_high), abs=1e-12
    )
    as_json(results)


@pytest.mark.parametrize("empty", ["control", "treatment"])
def test_an_arm_with_no_users_has_no_comparison(empty: str) -> None:
    counts = {"control": ConversionCounts(100, 10), "treatment": ConversionCounts(100, 15)}
    counts[empty] = ConversionCounts(0, 0)
    results = analyse_conversions(counts, "control")
    assert row(results, empty).rate is None
    assert all(getattr(row(results, "treatment"), name) is None for name in COMPARISON_FIELDS)
    as_json(results)


def test_a_control_nobody_saw_yet_is_reported_first_with_zero_users() -> None:
    results = analyse_conversions({"treatment": ConversionCounts(10, 1)}, "control")
    assert [(result.variant, result.users) for result in results] == [("control", 0), ("treatment", 10)]
    assert row(results, "treatment").p_value is None


def test_a_single_user_per_arm() -> None:
    results = analyse_conversions({"a": ConversionCounts(1, 0), "b": ConversionCounts(1, 1)}, "a")
    b = row(results, "b")
    assert b.rate == 1.0 and b.absolute_lift == 1.0
    assert b.p_value == pytest.approx(
        float(stats.chi2_contingency(np.array([[0, 1], [1, 0]]), correction=False).pvalue)
    )
    assert b.chance_to_beat_control == pytest.approx(reference_chance_to_beat(0, 1, 1, 1), abs=1e-12)
    assert -1.0 <= (b.absolute_lift_ci_low or 0) <= 1.0
    as_json(results)


def test_counts_are_validated() -> None:
    with pytest.raises(ValueError):
        ConversionCounts(users=3, conversions=4)
    with pytest.raises(ValueError):
        ConversionCounts(users=-1, conversions=0)


# --- value metrics -----------------------------------------------------------------


def welch_reference(control: np.ndarray, treatment: np.ndarray) -> Any:
    return stats.ttest_ind(treatment, control, equal_var=False)


@pytest.mark.parametrize(
    ("n_a", "n_b", "mean_a", "mean_b", "sd_a", "sd_b", "seed"),
    [
        (2_000, 2_000, 10.0, 10.4, 5.0, 5.0, 1),
        (50, 300, 3.0, 3.0, 1.0, 4.0, 2),
        (12, 9, -2.0, 1.5, 0.5, 3.0, 3),  # negative control mean: lift relative to |m_A|
        (40_000, 45_000, 1.0, 1.01, 2.0, 2.0, 4),  # large df: the expansion branch of the t
    ],
)
def test_value_results_match_welch_from_scipy(
    n_a: int, n_b: int, mean_a: float, mean_b: float, sd_a: float, sd_b: float, seed: int
) -> None:
    generator = np.random.default_rng(seed)
    control = generator.normal(mean_a, sd_a, n_a)
    treatment = generator.normal(mean_b, sd_b, n_b)
    results = analyse_values(
        {"control": ValueSummary.of(control.tolist()), "treatment": ValueSummary.of(treatment.tolist())},
        "control",
    )
    result = row(results, "treatment")
    welch = welch_reference(control, treatment)
    interval = welch.confidence_interval(0.95)
    m_a, m_b = float(control.mean()), float(treatment.mean())
    assert result.users == n_b
    assert result.mean == pytest.approx(m_b, rel=1e-12, abs=1e-12)
    assert result.absolute_lift == pytest.approx(m_b - m_a, rel=1e-9, abs=1e-12)
    assert result.p_value == pytest.approx(float(welch.pvalue), rel=1e-8, abs=1e-13)
    assert result.absolute_lift_ci_low == pytest.approx(float(interval.low), rel=1e-8, abs=1e-10)
    assert result.absolute_lift_ci_high == pytest.approx(float(interval.high), rel=1e-8, abs=1e-10)

    # Relative lift: the delta method on the ratio, at Welch's df.
    v_a = float(control.var(ddof=1)) / n_a
    v_b = float(treatment.var(ddof=1)) / n_b
    relative = (m_b - m_a) / abs(m_a)
    relative_se = math.sqrt(v_b + (m_b / m_a) ** 2 * v_a) / abs(m_a)
    t_critical = float(stats.t.ppf(0.975, float(welch.df)))
    assert result.lift == pytest.approx(relative, rel=1e-9)
    assert result.lift_ci_low == pytest.approx(relative - t_critical * relative_se, rel=1e-8, abs=1e-10)
    assert result.lift_ci_high == pytest.approx(relative + t_critical * relative_se, rel=1e-8, abs=1e-10)

    assert result.chance_to_beat_control == pytest.approx(
        float(stats.norm.cdf((m_b - m_a) / math.sqrt(v_a + v_b))), abs=1e-12
    )


def test_value_summaries_update_incrementally_and_merge() -> None:
    values = [0.5, 3.0, -1.25, 8.0, 2.0]
    summary = ValueSummary.of(values)
    assert summary == ValueSummary.of(values[:2]).merge(ValueSummary.of(values[2:]))
    assert summary.count == 5 and summary.mean == pytest.approx(float(np.mean(values)))
    assert summary.variance == pytest.approx(float(np.var(values, ddof=1)), rel=1e-12)
    assert ValueSummary().mean is None and ValueSummary.of([1.0]).variance is None


def test_a_single_user_per_arm_gives_point_estimates_only() -> None:
    b = row(analyse_values({"a": ValueSummary.of([2.0]), "b": ValueSummary.of([3.0])}, "a"), "b")
    assert (b.mean, b.absolute_lift, b.lift) == (3.0, 1.0, 0.5)
    assert b.p_value is None and b.absolute_lift_ci_low is None and b.chance_to_beat_control is None
    assert b.sequential_p_value is None


def test_zero_variance_in_both_arms() -> None:
    same = row(analyse_values({"a": ValueSummary.of([4.0] * 10), "b": ValueSummary.of([4.0] * 20)}, "a"), "b")
    assert (same.p_value, same.chance_to_beat_control, same.absolute_lift) == (1.0, 0.5, 0.0)
    assert (same.absolute_lift_ci_low, same.absolute_lift_ci_high) == (0.0, 0.0)
    assert same.sequential_p_value == 1.0
    higher = row(
        analyse_values({"a": ValueSummary.of([4.0] * 10), "b": ValueSummary.of([5.0] * 20)}, "a"), "b"
    )
    assert (higher.p_value, higher.chance_to_beat_control) == (0.0, 1.0)
    assert (higher.lift, higher.lift_ci_low, higher.lift_ci_high) == (0.25, 0.25, 0.25)
    lower = row(
        analyse_values({"a": ValueSummary.of([4.0] * 10), "b": ValueSummary.of([3.0] * 20)}, "a"), "b"
    )
    assert (lower.p_value, lower.chance_to_beat_control) == (0.0, 0.0)


@pytest.mark.filterwarnings("ignore:Precision loss occurred in moment calculation")
def test_zero_variance_in_one_arm_is_welch_with_the_other_arms_df() -> None:
    control = np.array([4.0] * 30)
    treatment = np.random.default_rng(5).normal(4.5, 1.0, 25)
    b = row(
        analyse_values(
            {"a": ValueSummary.of(control.tolist()), "b": ValueSummary.of(treatment.tolist())}, "a"
        ),
        "b",
    )
    welch = welch_reference(control, treatment)
    assert float(welch.df) == pytest.approx(24.0)
    assert b.p_value == pytest.approx(float(welch.pvalue), rel=1e-9)


def test_a_control_mean_of_zero_has_no_relative_lift() -> None:
    b = row(
        analyse_values(
            {"a": ValueSummary.of([0.0, 0.0, 1.0, -1.0]), "b": ValueSummary.of([1.0, 2.0, 0.5])}, "a"
        ),
        "b",
    )
    assert b.lift is None and b.lift_ci_low is None and b.lift_ci_high is None
    assert b.absolute_lift is not None and b.p_value is not None


def test_values_are_validated() -> None:
    with pytest.raises(ValueError):
        ValueSummary().add(math.nan)
    with pytest.raises(ValueError):
        ValueSummary.of([1e200, 1e200])  # the sum of squares overflows
    with pytest.raises(ValueError):
        ValueSummary(count=0, total=1.0, total_squares=1.0)


# --- sample ratio mismatch ---------------------------------------------------------


@pytest.mark.parametrize(
    ("users", "weights"),
    [
        ({"a": 5_020, "b": 4_980}, {"a": 50.0, "b": 50.0}),
        ({"a": 9_000, "b": 1_000}, {"a": 50.0, "b": 50.0}),  # the issue's 90/10 on a 50/50 flag
        ({"a": 1_010, "b": 2_050, "c": 6_940}, {"a": 1.0, "b": 2.0, "c": 7.0}),  # unequal weights
        ({"a": 30, "b": 41, "c": 29, "d": 0}, {"a": 0.25, "b": 0.25, "c": 0.25, "d": 0.25}),
    ],
)
def test_srm_matches_scipy_chisquare(users: dict[str, int], weights: dict[str, float]) -> None:
    check = sample_ratio_mismatch(users, weights)
    total = sum(users.values())
    total_weight = sum(weights.values())
    observed = [users.get(variant, 0) for variant in weights]
    expected = [total * weight / total_weight for weight in weights.values()]
    reference = stats.chisquare(observed, expected)
    assert check.statistic == pytest.approx(float(reference.statistic), rel=1e-12)
    assert check.p_value == pytest.approx(float(reference.pvalue), rel=1e-10, abs=1e-300)
    assert check.degrees_of_freedom == len(weights) - 1
    assert check.warn == (float(reference.pvalue) < SRM_WARN_P_VALUE)


def test_srm_flags_ninety_ten_traffic_on_a_fifty_fifty_flag() -> None:
    assert sample_ratio_mismatch({"on": 900, "off": 100}, {"on": 1.0, "off": 1.0}).warn


def test_srm_warns_just_below_the_threshold_and_not_above() -> None:
    # 50/50 with n = 10,000: chi-square = (2d)^2 / 10,000 for a split of 5,000 +- d.
    below = sample_ratio_mismatch({"a": 5_170, "b": 4_830}, {"a": 1.0, "b": 1.0})
    above = sample_ratio_mismatch({"a": 5_160, "b": 4_840}, {"a": 1.0, "b": 1.0})
    assert below.p_value is not None and below.p_value < SRM_WARN_P_VALUE and below.warn
    assert above.p_value is not None and above.p_value > SRM_WARN_P_VALUE and not above.warn


@pytest.mark.parametrize("weights", [{"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 1.0, "c": 0.0}])
def test_users_in_a_variant_without_weight_are_a_mismatch(weights: dict[str, float]) -> None:
    check = sample_ratio_mismatch({"a": 500, "b": 500, "c": 1}, weights)
    assert check == SampleRatioCheck(
        p_value=0.0,
        warn=True,
        statistic=None,
        degrees_of_freedom=1,
        expected_users=(("a", 500.5), ("b", 500.5)),
        unexpected_variants=("c",),
    )


def test_weighted_variants_nobody_saw_count_as_zero_and_unseen_weightless_ones_are_ignored() -> None:
    check = sample_ratio_mismatch({"a": 100}, {"a": 1.0, "b": 1.0, "c": 0.0})
    assert check.unexpected_variants == ()
    assert check.statistic == pytest.approx(float(stats.chisquare([100, 0], [50, 50]).statistic))
    assert check.warn


def test_srm_with_a_weight_too_small_to_expect_anyone() -> None:
    # 11 * 1e-300 / 1e300 underflows to 0 expected users: a user there is a certain mismatch.
    check = sample_ratio_mismatch({"a": 10, "b": 1}, {"a": 1e300, "b": 1e-300})
    assert (check.p_value, check.warn, check.unexpected_variants) == (0.0, True, ("b",))
    # Tiny but representable: the chi-square overflows instead; still a certain mismatch, no NaN.
    huge = sample_ratio_mismatch({"a": 10, "b": 1}, {"a": 1.0, "b": 1e-310})
    assert (huge.p_value, huge.warn, huge.statistic) == (0.0, True, None)


def test_srm_with_no_users_or_a_single_weighted_variant() -> None:
    assert sample_ratio_mismatch({}, {"a": 1.0, "b": 1.0}) == SampleRatioCheck(
        None, False, None, 1, (("a", 0.0), ("b", 0.0)), ()
    )
    single = sample_ratio_mismatch({"a": 10}, {"a": 3.0})
    assert (single.p_value, single.warn) == (1.0, False)


def test_srm_refuses_negative_weights_and_counts() -> None:
    with pytest.raises(ValueError):
        sample_ratio_mismatch({"a": 1}, {"a": -1.0})
    with pytest.raises(ValueError):
        sample_ratio_mismatch({"a": -1}, {"a": 1.0})


# --- properties ------------------------------------------------------------------------


@st.composite
def conversion_counts(draw: st.DrawFn) -> ConversionCounts:
    users = draw(st.integers(min_value=0, max_value=200_000))
    return ConversionCounts(users, draw(st.integers(min_value=0, max_value=users)))


def check_row_invariants(result: VariantResult) -> None:
    for point, low, high in (
        (result.lift, result.lift_ci_low, result.lift_ci_high),
        (result.absolute_lift, result.absolute_lift_ci_low, result.absolute_lift_ci_high),
        (result.absolute_lift, result.sequential_ci_low, result.sequential_ci_high),
    ):
        if low is not None and high is not None:
            assert point is not None
            # Intervals contain their estimate (up to rounding).
            assert low - 1e-9 <= point <= high + 1e-9


@settings(max_examples=200, deadline=None)
@given(control=conversion_counts(), treatment=conversion_counts())
def test_conversion_results_are_always_defined_json(
    control: ConversionCounts, treatment: ConversionCounts
) -> None:
    results = analyse_conversions({"control": control, "treatment": treatment}, "control")
    as_json(results)
    result = row(results, "treatment")
    check_row_invariants(result)
    if control.users and treatment.users:
        assert result.p_value is not None and result.chance_to_beat_control is not None
        low, high = result.absolute_lift_ci_low, result.absolute_lift_ci_high
        assert low is not None and high is not None and -1.0 <= low <= high <= 1.0
        assert result.sequential_p_value is not None


@settings(max_examples=200, deadline=None)
@given(
    control=st.lists(st.floats(min_value=-1e6, max_value=1e6), max_size=40),
    treatment=st.lists(st.floats(min_value=-1e6, max_value=1e6), max_size=40),
)
def test_value_results_are_always_defined_json(control: list[float], treatment: list[float]) -> None:
    results = analyse_values(
        {"control": ValueSummary.of(control), "treatment": ValueSummary.of(treatment)}, "control"
    )
    as_json(results)
    check_row_invariants(row(results, "treatment"))


@settings(max_examples=200, deadline=None)
@given(
    users=st.dictionaries(st.sampled_from("abcdef"), st.integers(0, 10**7), max_size=6),
    weights=st.dictionaries(st.sampled_from("abcdef"), st.floats(min_value=0.0, max_value=1e6), max_size=6),
)
def test_srm_is_always_defined(users: dict[str, int], weights: dict[str, float]) -> None:
    check = sample_ratio_mismatch(users, weights)
    assert check.p_value is None or 0.0 <= check.p_value <= 1.0
    assert check.warn == (check.p_value is not None and check.p_value < SRM_WARN_P_VALUE)
    json.dumps([check.p_value, check.statistic], allow_nan=False)


def test_results_refuse_non_finite_floats() -> None:
    with pytest.raises(ValueError):
        VariantResult(variant="a", users=1, mean=math.inf)
    with pytest.raises(ValueError):
        VariantResult(variant="a", users=1, lift=0.1, lift_ci_low=0.2, lift_ci_high=0.1)
    with pytest.raises(ValueError):
        VariantResult(variant="a", users=1, lift=0.1, lift_ci_low=0.0, lift_ci_high=None)
    with pytest.raises(ValueError):
        VariantResult(variant="a", users=1, p_value=1.5)


@pytest.mark.parametrize("scale", [1e-120, 1e-30, 1e30, 1e100])
def test_value_results_do_not_depend_on_the_unit(scale: float) -> None:
    # Values in other units (cents, micro-units): the same p-values and relative results,
    # absolute results scaled. Products like se^4 underflow at 1e-120 if written naively.
    generator = np.random.default_rng(7)
    control = generator.exponential(3.0, 200)
    treatment = generator.exponential(3.4, 180)

    def analyse(factor: float) -> VariantResult:
        summaries = {
            "control": ValueSummary.of((control * factor).tolist()),
            "treatment": ValueSummary.of((treatment * factor).tolist()),
        }
        return row(analyse_values(summaries, "control"), "treatment")

    base, scaled = analyse(1.0), analyse(scale)
    for name in (
        "lift",
        "lift_ci_low",
        "lift_ci_high",
        "p_value",
        "chance_to_beat_control",
        "sequential_p_value",
    ):
        assert getattr(scaled, name) == pytest.approx(getattr(base, name), rel=1e-9), name
    for name in (
        "mean",
        "absolute_lift",
        "absolute_lift_ci_low",
        "absolute_lift_ci_high",
        "sequential_ci_low",
    ):
        assert getattr(scaled, name) == pytest.approx(getattr(base, name) * scale, rel=1e-9), name
