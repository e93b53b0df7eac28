"""The hand-written special functions against scipy (flags/experiments/stats_special.py).

scipy is a dev dependency only: the flag server computes with stdlib ``math``,
and every function here is checked against scipy's independent implementation
(``scipy.special``/``scipy.stats``; cephes and Boost underneath) over grids
that cover the regimes of each algorithm (series vs continued fraction, the
symmetric branch, large parameters) and with hypothesis.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import integrate, special, stats  # type: ignore[import-untyped]

from flags.experiments import stats_special as special_functions
from flags.experiments.stats_special import (
    beta_probability_greater,
    chi_square_sf,
    normal_cdf,
    normal_quantile,
    normal_two_sided_p,
    regularized_incomplete_beta,
    regularized_upper_gamma,
    student_t_cdf,
    student_t_critical,
    student_t_two_sided_p,
)


def close(actual: float, expected: float, *, absolute: float = 1e-12, relative: float = 1e-10) -> bool:
    return abs(actual - expected) <= max(absolute, relative * abs(expected))


# --- normal ---------------------------------------------------------------------


@pytest.mark.parametrize("z", [-40.0, -8.5, -1.959963984540054, -0.3, 0.0, 0.7, 2.5, 9.0])
def test_normal_cdf_and_two_sided_p_match_scipy(z: float) -> None:
    assert close(normal_cdf(z), float(stats.norm.cdf(z)), absolute=1e-300, relative=1e-13)
    assert close(normal_two_sided_p(z), float(2 * stats.norm.sf(abs(z))), absolute=1e-300, relative=1e-13)


@pytest.mark.parametrize("q", [1e-300, 1e-20, 1e-6, 0.001, 0.025, 0.2, 0.5, 0.8, 0.975, 0.999, 1 - 1e-12])
def test_normal_quantile_matches_scipy(q: float) -> None:
    assert close(normal_quantile(q), float(stats.norm.ppf(q)), absolute=1e-13, relative=1e-13)


@pytest.mark.parametrize("q", [0.0, 1.0, -0.1, math.nan])
def test_normal_quantile_refuses_outside_the_open_unit_interval(q: float) -> None:
    with pytest.raises(ValueError, match="normal_quantile needs"):
        normal_quantile(q)


# --- incomplete beta --------------------------------------------------------------

BETA_GRID = [
    (a, b, x)
    for a in (0.05, 0.5, 1.0, 2.5, 10.0, 123.4, 5e4)
    for b in (0.05, 0.5, 1.0, 3.0, 77.0, 2e5)
    for x in (1e-9, 0.01, 0.3, 0.5, 0.77, 0.999, 1 - 1e-9)
]


@pytest.mark.parametrize(("a", "b", "x"), BETA_GRID)
def test_incomplete_beta_matches_scipy_betainc(a: float, b: float, x: float) -> None:
    expected = float(special.betainc(a, b, x))
    assert close(regularized_incomplete_beta(a, b, x), expected, absolute=1e-13, relative=1e-10)


@settings(max_examples=300, deadline=None)
@given(
    a=st.floats(min_value=1e-3, max_value=1e6),
    b=st.floats(min_value=1e-3, max_value=1e6),
    # No subnormal x: scipy's betainc loses digits there (x^a / (a B(a, b)) agrees with ours).
    x=st.floats(min_value=0.0, max_value=1.0, allow_subnormal=False),
)
def test_incomplete_beta_matches_scipy_anywhere(a: float, b: float, x: float) -> None:
    expected = float(special.betainc(a, b, x))
    actual = regularized_incomplete_beta(a, b, x)
    assert 0.0 <= actual <= 1.0
    assert close(actual, expected, absolute=1e-10, relative=1e-8)


def test_log_beta_stays_accurate_for_large_parameters() -> None:
    # Where lgamma(a) + lgamma(b) - lgamma(a+b) loses ~1e-9 to cancellation. (With both
    # parameters large, a ln x + b ln(1-x) itself carries ~1e-11: the 1e-10 budget.)
    for a, b in [(1e5, 0.5), (9.99, 1e6), (5e4, 4.5e5), (1e8, 2.0), (12.0, 0.5), (3.0, 4.0)]:
        at_mean = regularized_incomplete_beta(a, b, a / (a + b))
        assert close(at_mean, float(special.betainc(a, b, a / (a + b))), absolute=1e-13, relative=1e-10)


@pytest.mark.parametrize(
    ("a", "b", "x"), [(0.0, 1.0, 0.5), (1.0, -1.0, 0.5), (1.0, 1.0, 1.5), (math.inf, 1.0, 0.5)]
)
def test_incomplete_beta_refuses_outside_its_domain(a: float, b: float, x: float) -> None:
    with pytest.raises(ValueError, match="incomplete beta needs"):
        regularized_incomplete_beta(a, b, x)


# --- Student t ----------------------------------------------------------------------

T_GRID = [
    (t, df)
    for df in (1.0, 1.5, 2.0, 3.3, 7.0, 29.9, 150.0, 4_321.5, 29_999.0, 30_000.0, 2e5, 3e6, 1e12)
    for t in (-12.0, -2.0, -0.01, 0.0, 1.2e-7, 0.4, 1.7, 1.96, 2.6, 5.0, 30.0)
]


@pytest.mark.parametrize(("t", "df"), T_GRID)
def test_student_t_matches_scipy(t: float, df: float) -> None:
    assert close(
        student_t_two_sided_p(t, df), float(2 * stats.t.sf(abs(t), df)), absolute=1e-13, relative=1e-9
    )
    assert close(student_t_cdf(t, df), float(stats.t.cdf(t, df)), absolute=1e-13, relative=1e-9)


@pytest.mark.parametrize("df", [1.0, 2.0, 2.7, 5.0, 13.0, 99.5, 1_000.0, 50_000.0, 1e7, math.inf])
@pytest.mark.parametrize("alpha", [0.001, 0.05, 0.1, 0.5])
def test_student_t_critical_matches_scipy_ppf(alpha: float, df: float) -> None:
    expected = (
        float(stats.t.ppf(1 - alpha / 2, df)) if math.isfinite(df) else float(stats.norm.ppf(1 - alpha / 2))
    )
    assert close(student_t_critical(alpha, df), expected, absolute=1e-11, relative=1e-11)


@settings(max_examples=300, deadline=None)
@given(t=st.floats(min_value=-60.0, max_value=60.0), df=st.floats(min_value=0.5, max_value=1e9))
def test_student_t_matches_scipy_anywhere(t: float, df: float) -> None:
    assert close(
        student_t_two_sided_p(t, df), float(2 * stats.t.sf(abs(t), df)), absolute=1e-12, relative=1e-8
    )


@pytest.mark.parametrize("df", [0.0, -1.0, math.nan])
def test_student_t_refuses_bad_degrees_of_freedom(df: float) -> None:
    with pytest.raises(ValueError, match="degrees of freedom"):
        student_t_two_sided_p(1.0, df)


# --- incomplete gamma and chi-square -----------------------------------------------


@pytest.mark.parametrize("a", [0.01, 0.5, 1.0, 1.5, 4.0, 25.0, 300.0])
@pytest.mark.parametrize("x", [0.0, 1e-8, 0.3, 1.0, 3.9, 24.0, 26.0, 250.0, 400.0])
def test_upper_incomplete_gamma_matches_scipy_gammaincc(a: float, x: float) -> None:
    assert close(
        regularized_upper_gamma(a, x), float(special.gammaincc(a, x)), absolute=1e-300, relative=1e-12
    )


@pytest.mark.parametrize("df", [1, 2, 3, 4, 9, 30])
@pytest.mark.parametrize("statistic", [0.0, 0.001, 0.455, 3.841458820694124, 6.63, 10.83, 40.0, 500.0])
def test_chi_square_survival_matches_scipy(statistic: float, df: int) -> None:
    assert close(
        chi_square_sf(statistic, df), float(stats.chi2.sf(statistic, df)), absolute=1e-300, relative=1e-12
    )


def test_chi_square_survival_at_the_float_limit_is_zero() -> None:
    # The Lentz recurrences would go subnormal here and never converge.
    assert chi_square_sf(9e307, 1) == 0.0
    assert regularized_upper_gamma(0.5, 1e308) == 0.0


@settings(max_examples=300, deadline=None)
@given(statistic=st.floats(min_value=0.0, max_value=2_000.0), df=st.integers(min_value=1, max_value=200))
def test_chi_square_survival_matches_scipy_anywhere(statistic: float, df: int) -> None:
    assert close(
        chi_square_sf(statistic, df), float(stats.chi2.sf(statistic, df)), absolute=1e-14, relative=1e-10
    )


# --- P(Beta_B > Beta_A) ---------------------------------------------------------------


def integrated_probability_greater(alpha_b: int, beta_b: int, alpha_a: int, beta_a: int) -> float:
    """P(X_B > X_A) by numeric integration of f_A(x) P(X_B > x), independent of the closed form."""

    def integrand(x: float) -> float:
        return float(stats.beta.pdf(x, alpha_a, beta_a) * stats.beta.sf(x, alpha_b, beta_b))

    # Integrate over where X_A has its mass (+-40 sd), with its mode as a breakpoint.
    mean = alpha_a / (alpha_a + beta_a)
    sd = math.sqrt(alpha_a * beta_a / ((alpha_a + beta_a) ** 2 * (alpha_a + beta_a + 1)))
    low, high = max(0.0, mean - 40 * sd), min(1.0, mean + 40 * sd)
    value, _ = integrate.quad(integrand, low, high, points=[mean], limit=1_000, epsabs=1e-14, epsrel=1e-12)
    return float(value)


@pytest.mark.parametrize(
    ("alpha_b", "beta_b", "alpha_a", "beta_a"),
    [
        (1, 1, 1, 1),
        (2, 1, 1, 2),
        (14, 88, 11, 91),
        (1, 51, 3, 2),
        (1101, 8901, 1001, 9001),  # 10% vs 11% with 10,000 users each
        (201, 1, 180, 22),  # near 100% conversions: the beta_b form
        (5, 3000, 9, 2500),  # few conversions: the alpha forms
        (700, 60, 650, 40),  # the beta_a form
    ],
)
def test_beta_probability_greater_matches_numeric_integration(
    alpha_b: int, beta_b: int, alpha_a: int, beta_a: int
) -> None:
    expected = integrated_probability_greater(alpha_b, beta_b, alpha_a, beta_a)
    assert close(beta_probability_greater(alpha_b, beta_b, alpha_a, beta_a), expected, absolute=1e-10)


@settings(max_examples=150, deadline=None)
@given(
    alpha_b=st.integers(1, 400),
    beta_b=st.integers(1, 400),
    alpha_a=st.integers(1, 400),
    beta_a=st.integers(1, 400),
)
def test_beta_probability_greater_is_a_probability_and_complementary(
    alpha_b: int, beta_b: int, alpha_a: int, beta_a: int
) -> None:
    forward = beta_probability_greater(alpha_b, beta_b, alpha_a, beta_a)
    backward = beta_probability_greater(alpha_a, beta_a, alpha_b, beta_b)
    assert 0.0 <= forward <= 1.0
    assert forward + backward == pytest.approx(1.0, abs=1e-12)
    # X > Y  <=>  1 - X < 1 - Y, and 1 - X ~ Beta(beta, alpha): the four forms agree.
    assert beta_probability_greater(beta_a, alpha_a, beta_b, alpha_b) == pytest.approx(forward, abs=1e-12)


def test_beta_probability_greater_with_many_conversions_is_fast_and_right() -> None:
    # 500,000 users per arm at 10%: ~50,000 terms.
    expected = integrated_probability_greater(50_401, 449_601, 50_001, 450_001)
    assert close(beta_probability_greater(50_401, 449_601, 50_001, 450_001), expected, absolute=1e-9)


def test_beta_probability_greater_falls_back_to_the_normal_beyond_the_exact_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(special_functions, "MAX_EXACT_BETA_TERMS", 1_000)
    expected = integrated_probability_greater(1_101, 8_901, 1_001, 9_001)
    assert close(beta_probability_greater(1_101, 8_901, 1_001, 9_001), expected, absolute=2e-3)


def test_beta_probability_greater_refuses_parameters_below_one() -> None:
    with pytest.raises(ValueError):
        beta_probability_greater(0, 1, 1, 1)
