"""Always-valid inference (flags/experiments/stats_sequential.py and the sequential fields of stats.py).

Two kinds of check:

- the formula: the mSPRT likelihood ratio and its confidence sequence computed
  independently here (the mixture integral by numeric quadrature, the interval
  ends by root finding), and the default mixing variance as the minimiser it claims to be;
- the point of it, by simulation (seeded): A/A experiments looked at every day.
  The fixed-horizon p-value, peeked daily, declares a winner in far more than
  5% of runs; the always-valid p-value in at most 5%. With a real effect the
  always-valid test still finds it, and its interval covers the true
  difference at every look in at least 95% of runs.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import integrate, optimize, stats  # type: ignore[import-untyped]

from flags.experiments.stats import ConversionCounts, ValueSummary, analyse_conversions, analyse_values
from flags.experiments.stats_sequential import (
    SequentialEstimate,
    SequentialSettings,
    fold,
    mixing_variance,
    mixture_sprt,
    optimal_variance_ratio,
)


def mixture_likelihood_ratio(difference: float, variance: float, tau_squared: float, theta0: float) -> float:
    """The mixture over theta ~ N(0, tau^2) of N(difference; theta, V), over N(difference; theta0, V)."""

    def integrand(theta: float) -> float:
        return float(
            stats.norm.pdf(difference, theta, math.sqrt(variance))
            * stats.norm.pdf(theta, 0, math.sqrt(tau_squared))
        )

    spread = 12 * math.sqrt(max(variance, tau_squared))
    mixture, _ = integrate.quad(
        integrand, -spread, spread, points=[0.0, difference], limit=500, epsabs=0, epsrel=1e-12
    )
    return float(mixture / stats.norm.pdf(difference, theta0, math.sqrt(variance)))


@pytest.mark.parametrize(
    ("difference", "variance", "tau_squared"),
    [(0.02, 1.8e-5, 1.5e-4), (-0.5, 0.04, 0.3), (0.001, 1e-4, 1e-3), (3.0, 1.0, 0.2)],
)
def test_the_p_value_is_one_over_the_mixture_likelihood_ratio(
    difference: float, variance: float, tau_squared: float
) -> None:
    ratio = mixture_likelihood_ratio(difference, variance, tau_squared, 0.0)
    estimate = mixture_sprt(difference, variance, tau_squared, 0.05)
    assert estimate.p_value == pytest.approx(min(1.0, 1.0 / ratio), rel=1e-9)


@pytest.mark.parametrize(
    ("difference", "variance", "tau_squared", "alpha"),
    [(0.02, 1.8e-5, 1.5e-4, 0.05), (-0.5, 0.04, 0.3, 0.05), (0.0, 2.0, 50.0, 0.1), (1.0, 0.5, 0.01, 0.01)],
)
def test_the_interval_ends_are_where_the_likelihood_ratio_reaches_one_over_alpha(
    difference: float, variance: float, tau_squared: float, alpha: float
) -> None:
    estimate = mixture_sprt(difference, variance, tau_squared, alpha)
    assert estimate.ci_low is not None and estimate.ci_high is not None

    def log_excess(theta0: float) -> float:
        # ln Lambda(theta0) - ln(1/alpha); the mixture of N(theta, V) over theta ~ N(theta0, tau^2)
        # is N(theta0, V + tau^2) (checked by quadrature above), in logs: far ends underflow otherwise.
        log_mixture = stats.norm.logpdf(difference, theta0, math.sqrt(variance + tau_squared))
        return float(log_mixture - stats.norm.logpdf(difference, theta0, math.sqrt(variance))) - math.log(
            1 / alpha
        )

    # Bracket with a generous multiple of the width under test; the root itself is found independently.
    far = 3 * (estimate.ci_high - difference)
    high = optimize.brentq(log_excess, difference, difference + far, xtol=1e-14, rtol=1e-12)
    low = optimize.brentq(log_excess, difference - far, difference, xtol=1e-14, rtol=1e-12)
    assert estimate.ci_low == pytest.approx(low, rel=1e-8, abs=1e-12)
    assert estimate.ci_high == pytest.approx(high, rel=1e-8, abs=1e-12)


# The half-width here is ~0.00961: points on both sides of it, close in.
@pytest.mark.parametrize("difference", [-0.05, -0.0097, -0.0095, 0.0, 0.004, 0.008, 0.0095, 0.0097, 0.03])
def test_the_p_value_is_below_alpha_exactly_when_the_interval_excludes_zero(difference: float) -> None:
    estimate = mixture_sprt(difference, 1e-5, 1e-4, 0.05)
    assert estimate.ci_low is not None and estimate.ci_high is not None
    assert (estimate.p_value < 0.05) == (not estimate.ci_low <= 0.0 <= estimate.ci_high)


@pytest.mark.parametrize("alpha", [0.01, 0.05, 0.1, 0.2])
def test_the_default_mixing_variance_makes_the_interval_narrowest_where_it_says(alpha: float) -> None:
    def squared_half_width_over_variance(ratio: float) -> float:
        return (1 + 1 / ratio) * (2 * math.log(1 / alpha) + math.log1p(ratio))

    best = optimize.minimize_scalar(
        squared_half_width_over_variance, bounds=(1e-3, 1e3), method="bounded", options={"xatol": 1e-10}
    )
    assert optimal_variance_ratio(alpha) == pytest.approx(float(best.x), rel=1e-6)
    # tau^2 = u* (s_A^2 + s_B^2) / tuning_users: u* times the variance of the difference at tuning_users per arm.
    settings = SequentialSettings(alpha=alpha, tuning_users=2_000)
    assert mixing_variance(settings, 0.18) == pytest.approx(
        optimal_variance_ratio(alpha) * 0.18 / 2_000, rel=1e-15
    )
    assert mixing_variance(SequentialSettings(mixing_variance=0.25), 0.18) == 0.25


def test_no_variance_means_no_evidence() -> None:
    assert mixture_sprt(0.3, 0.0, 1.0) == SequentialEstimate(p_value=1.0, ci_low=None, ci_high=None)


def test_huge_evidence_does_not_overflow() -> None:
    estimate = mixture_sprt(1.0, 1e-12, 1e-2)
    assert estimate.p_value == 0.0 and estimate.ci_low is not None and estimate.ci_low > 0.99


@pytest.mark.parametrize(
    "settings",
    [
        {"alpha": 0.0},
        {"alpha": 1.0},
        {"tuning_users": 0},
        {"mixing_variance": 0.0},
        {"mixing_variance": math.inf},
    ],
)
def test_settings_are_validated(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        SequentialSettings(**settings)  # type: ignore[arg-type]


def test_fold_keeps_the_smallest_p_value_and_the_intersection() -> None:
    first = SequentialEstimate(0.4, -0.1, 0.3)
    second = SequentialEstimate(0.6, -0.2, 0.2)
    assert fold(None, first) == first
    assert fold(first, second) == SequentialEstimate(0.4, -0.1, 0.2)
    assert fold(first, SequentialEstimate(1.0, None, None)) == SequentialEstimate(0.4, -0.1, 0.3)
    assert fold(SequentialEstimate(1.0, None, None), second) == SequentialEstimate(0.6, -0.2, 0.2)
    # Disjoint intervals (the model is off): the current one is kept, not an empty one.
    assert fold(first, SequentialEstimate(0.01, 0.5, 0.9)) == SequentialEstimate(0.01, 0.5, 0.9)


# --- simulations --------------------------------------------------------------------

RUNS = 300
DAYS = 20
USERS_PER_ARM_PER_DAY = 250
ALPHA = 0.05


def daily_conversion_looks(
    generator: np.random.Generator, control_rate: float, treatment_rate: float
) -> list[tuple[ConversionCounts, ConversionCounts]]:
    control = np.cumsum(generator.binomial(USERS_PER_ARM_PER_DAY, control_rate, DAYS))
    treatment = np.cumsum(generator.binomial(USERS_PER_ARM_PER_DAY, treatment_rate, DAYS))
    return [
        (
            ConversionCounts(USERS_PER_ARM_PER_DAY * (day + 1), int(control[day])),
            ConversionCounts(USERS_PER_ARM_PER_DAY * (day + 1), int(treatment[day])),
        )
        for day in range(DAYS)
    ]


def simulate_conversions(control_rate: float, treatment_rate: float, seed: int) -> tuple[float, float, float]:
    """Over RUNS experiments peeked daily: the share of runs where the fixed p-value, resp. the
    always-valid p-value, was below ALPHA at some look, and the share where the always-valid
    interval held the true difference at every look."""
    generator = np.random.default_rng(seed)
    fixed_rejections = sequential_rejections = covered = 0
    truth = treatment_rate - control_rate
    for _ in range(RUNS):
        fixed_hit = sequential_hit = False
        always_covered = True
        for control, treatment in daily_conversion_looks(generator, control_rate, treatment_rate):
            result = analyse_conversions({"control": control, "treatment": treatment}, "control")[1]
            assert result.p_value is not None and result.sequential_p_value is not None
            fixed_hit |= result.p_value < ALPHA
            sequential_hit |= result.sequential_p_value < ALPHA
            if result.sequential_ci_low is not None and result.sequential_ci_high is not None:
                always_covered &= result.sequential_ci_low <= truth <= result.sequential_ci_high
        fixed_rejections += fixed_hit
        sequential_rejections += sequential_hit
        covered += always_covered
    return fixed_rejections / RUNS, sequential_rejections / RUNS, covered / RUNS


def test_peeking_daily_at_an_aa_test_inflates_the_fixed_p_value_but_not_the_always_valid_one() -> None:
    fixed, sequential, covered = simulate_conversions(0.10, 0.10, seed=20_170)
    # 20 looks at a fixed-horizon test: roughly a quarter of A/A runs "find a winner".
    assert fixed > 0.12, fixed
    # The always-valid p-value keeps its promise (Ville's inequality: <= alpha).
    assert sequential <= ALPHA, sequential
    assert covered >= 1 - ALPHA, covered


def test_the_always_valid_test_still_finds_a_real_effect() -> None:
    # 10% vs 13%: at 5,000 users per arm the fixed-horizon test has ~99% power.
    fixed, sequential, covered = simulate_conversions(0.10, 0.13, seed=20_171)
    assert fixed > 0.95
    assert sequential > 0.8, sequential
    assert covered >= 1 - ALPHA, covered


def day_summary(values: np.ndarray) -> ValueSummary:
    return ValueSummary(len(values), float(values.sum()), float((values * values).sum()))


def test_peeking_at_a_value_metric_aa_test() -> None:
    generator = np.random.default_rng(20_172)
    fixed_rejections = sequential_rejections = 0
    for _ in range(RUNS):
        control, treatment = ValueSummary(), ValueSummary()
        fixed_hit = sequential_hit = False
        for _day in range(DAYS):
            # Skewed per-user values (like revenue): the normal approximation is on the mean.
            control = control.merge(day_summary(generator.exponential(5.0, USERS_PER_ARM_PER_DAY)))
            treatment = treatment.merge(day_summary(generator.exponential(5.0, USERS_PER_ARM_PER_DAY)))
            result = analyse_values({"control": control, "treatment": treatment}, "control")[1]
            assert result.p_value is not None and result.sequential_p_value is not None
            fixed_hit |= result.p_value < ALPHA
            sequential_hit |= result.sequential_p_value < ALPHA
        fixed_rejections += fixed_hit
        sequential_rejections += sequential_hit
    assert fixed_rejections / RUNS > 0.12
    assert sequential_rejections / RUNS <= ALPHA
