"""Special functions for the experiment statistics, written with stdlib ``math`` only (pure).

The flag server must not depend on numpy/scipy, so the handful of distribution
functions the analysis needs are written here; tests/flags/experiments check
each against scipy.

========================================== ===============================================
function                                   how
========================================== ===============================================
``normal_cdf(z)``                          ``erfc(-z/sqrt 2)/2`` (``math.erfc``: no
                                           cancellation in either tail)
``normal_two_sided_p(z)``                  ``erfc(|z|/sqrt 2)``
``normal_quantile(q)``                     Abramowitz & Stegun 26.2.23 as a start (error
                                           < 4.5e-4), then Halley steps on ``normal_cdf``
                                           to full double precision
``regularized_incomplete_beta(a, b, x)``   ``I_x(a, b)``: the continued fraction of DLMF
                                           8.17.22 evaluated with the modified Lentz
                                           method, on whichever of ``I_x(a, b)`` and
                                           ``1 - I_{1-x}(b, a)`` converges fast
                                           (``x < (a+1)/(a+b+2)``)
``student_t_two_sided_p(t, df)``           ``I_{df/(df+t^2)}(df/2, 1/2)`` (any real df > 0);
                                           from df = 3e4 Fisher's expansion in 1/df
                                           (two terms), where the fraction is
                                           ill-conditioned
``student_t_cdf(t, df)``                   from the two-sided p-value
``student_t_critical(alpha, df)``          ``t`` with two-sided p ``alpha``: safeguarded
                                           Newton (bisection when a step leaves the bracket)
``regularized_upper_gamma(a, x)``          ``Q(a, x)``: power series for ``P`` when
                                           ``x < a+1``, Legendre's continued fraction
                                           (DLMF 8.9.2, modified Lentz) otherwise
``chi_square_sf(x, df)``                   ``Q(df/2, x/2)``
``beta_probability_greater(...)``          ``P(X_B > X_A)`` for independent Beta variables
                                           with integer parameters: the exact finite sum
                                           (below)
========================================== ===============================================

Invariants: every function returns a finite float for finite arguments in its
domain (probabilities in [0, 1]); arguments outside the domain raise
``ValueError`` (never a NaN result). Accuracy: ~1e-13 relative for moderate
parameters, ~1e-9 when a Beta/Gamma parameter reaches 1e6 (``lgamma`` of a large
argument loses absolute digits in the normalising constant).
"""

from __future__ import annotations

import math

# The continued fractions stop when one step changes the value by less than this.
_EPSILON = 1e-16
# Lentz's method replaces an exact zero denominator by this (it never matters
# for the value, it only avoids a division by zero).
_TINY = 1e-300
# Enough for parameters up to ~1e8: the fractions converge in O(sqrt(max(a, b))) steps.
_MAX_ITERATIONS = 100_000
# Above this many terms the exact Beta sum is replaced by a normal approximation
# (every parameter is then > 1e6, where a Beta is normal to ~1e-3 skewness).
MAX_EXACT_BETA_TERMS = 1_000_000

# The running term of the Beta sum is rescaled by this factor when it exceeds it.
_RESCALE_ABOVE = 1e200
_LOG_RESCALE = math.log(_RESCALE_ABOVE)
# Below exp(-746) a double underflows to 0.
_LOG_SMALLEST = -746.0
# From this many degrees of freedom Student's t uses an expansion around the normal.
_LARGE_DF = 3e4

_SQRT2 = math.sqrt(2.0)
_SQRT_2PI = math.sqrt(2.0 * math.pi)


class ConvergenceError(ArithmeticError):
    """A continued fraction or root search did not converge (a bug or an absurd argument)."""


def normal_cdf(z: float) -> float:
    """P(Z <= z) for a standard normal Z."""
    return 0.5 * math.erfc(-z / _SQRT2)


def normal_two_sided_p(z: float) -> float:
    """P(|Z| >= |z|) for a standard normal Z."""
    return math.erfc(abs(z) / _SQRT2)


def normal_pdf(z: float) -> float:
    return math.exp(-0.5 * z * z) / _SQRT_2PI


def normal_quantile(q: float) -> float:
    """The z with ``normal_cdf(z) == q``, for 0 < q < 1."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"normal_quantile needs 0 < q < 1, got {q!r}")
    if q == 0.5:
        return 0.0
    # Solve in the lower tail (1 - q is exact for q >= 0.5) where normal_cdf keeps
    # full relative precision, then mirror.
    tail = min(q, 1.0 - q)
    # Abramowitz & Stegun 26.2.23: a rational approximation in t = sqrt(-2 ln tail).
    t = math.sqrt(-2.0 * math.log(tail))
    z = -(
        t
        - (2.515517 + t * (0.802853 + t * 0.010328)) / (1.0 + t * (1.432788 + t * (0.189269 + t * 0.001308)))
    )
    # Halley's method on normal_cdf(z) - tail converges cubically from there; the
    # error of the start (< 4.5e-4) is gone after two steps, more are free insurance.
    for _ in range(4):
        error = normal_cdf(z) - tail
        density = normal_pdf(z)
        if density == 0.0:
            break
        step = error / density
        z -= step / (1.0 + 0.5 * z * step)
    return z if q < 0.5 else -z


# Stirling's series for lgamma: lgamma(x) = (x - 1/2) ln x - x + ln(2 pi)/2 + correction(x),
# correction(x) = sum_k B_2k / (2k (2k-1) x^(2k-1)); eight terms are below 1e-16 from x = 10.
_STIRLING_COEFFICIENTS = (
    1.0 / 12.0,
    -1.0 / 360.0,
    1.0 / 1260.0,
    -1.0 / 1680.0,
    1.0 / 1188.0,
    -691.0 / 360360.0,
    1.0 / 156.0,
    -3617.0 / 122400.0,
)
_STIRLING_FROM = 10.0
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def _stirling_correction(x: float) -> float:
    inverse_square = 1.0 / (x * x)
    total = 0.0
    for coefficient in reversed(_STIRLING_COEFFICIENTS):
        total = total * inverse_square + coefficient
    return total / x


def _log_beta(a: float, b: float) -> float:
    """ln B(a, b), without the cancellation of lgamma(a) + lgamma(b) - lgamma(a+b) for large a or b.

    lgamma(1e6) is ~1.3e7, so the plain sum loses ~1e-9 of absolute accuracy;
    writing each large lgamma with Stirling's series lets the big terms cancel
    analytically ((x - 1/2) ln x differences become log1p of a small ratio).
    """
    small, large = (a, b) if a <= b else (b, a)
    total = small + large
    if large < _STIRLING_FROM:
        return math.lgamma(a) + math.lgamma(b) - math.lgamma(total)
    # lgamma(large) - lgamma(total) = -(large - 1/2) log1p(small/large) - small ln(total) + small
    #                                 + correction(large) - correction(total)
    large_part = (
        -(large - 0.5) * math.log1p(small / large) + _stirling_correction(large) - _stirling_correction(total)
    )
    if small < _STIRLING_FROM:
        return math.lgamma(small) - small * math.log(total) + small + large_part
    # lgamma(small) by Stirling too: (small - 1/2) ln small - small ln total = (small - 1/2) ln(small/total)
    # - ln(total)/2 keeps the big logarithms from cancelling.
    return (
        (small - 0.5) * math.log(small / total)
        - 0.5 * math.log(total)
        + _HALF_LOG_2PI
        + _stirling_correction(small)
        + large_part
    )


def _beta_continued_fraction(a: float, b: float, x: float, one_minus_x: float) -> float:
    """The continued fraction of I_x(a, b) (DLMF 8.17.22), modified Lentz; fast when x < (a+1)/(a+b+2)."""
    # Terms: d_{2m+1} = -(a+m)(a+b+m)x / ((a+2m)(a+2m+1)), d_{2m} = m(b-m)x / ((a+2m-1)(a+2m)).
    numerator_scale = 1.0
    # 1 - (a+b)x/(a+1), written without subtracting two numbers near 1: for a
    # large a and x near 1 (Student's t with a large df) the plain form keeps
    # only ~-log10(df) digits.
    denominator = (a * one_minus_x + 1.0 - b * x) / (a + 1.0)
    if abs(denominator) < _TINY:
        denominator = _TINY
    denominator = 1.0 / denominator
    value = denominator
    for m in range(1, _MAX_ITERATIONS):
        two_m = 2.0 * m
        for coefficient in (
            m * (b - m) * x / ((a + two_m - 1.0) * (a + two_m)),
            -(a + m) * (a + b + m) * x / ((a + two_m) * (a + two_m + 1.0)),
        ):
            denominator = 1.0 + coefficient * denominator
            if abs(denominator) < _TINY:
                denominator = _TINY
            numerator_scale = 1.0 + coefficient / numerator_scale
            if abs(numerator_scale) < _TINY:
                numerator_scale = _TINY
            denominator = 1.0 / denominator
            change = denominator * numerator_scale
            value *= change
        if abs(change - 1.0) < _EPSILON:
            return value
    raise ConvergenceError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, x={x})")


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) = B(x; a, b) / B(a, b), for a, b > 0 and 0 <= x <= 1."""
    if not (a > 0.0 and b > 0.0 and math.isfinite(a) and math.isfinite(b)):
        raise ValueError(f"incomplete beta needs finite a, b > 0, got a={a!r}, b={b!r}")
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"incomplete beta needs 0 <= x <= 1, got {x!r}")
    if x == 0.0:
        return 0.0
    if x == 1.0:
        return 1.0
    # x^a (1-x)^b / B(a, b), in logs so large parameters neither overflow nor underflow early.
    log_front = a * math.log(x) + b * math.log1p(-x) - _log_beta(a, b)
    if x < (a + 1.0) / (a + b + 2.0):
        return min(1.0, math.exp(log_front) * _beta_continued_fraction(a, b, x, 1.0 - x) / a)
    # The symmetric form converges fast here; 1 - (small) keeps absolute accuracy.
    return max(0.0, 1.0 - math.exp(log_front) * _beta_continued_fraction(b, a, 1.0 - x, x) / b)


def _check_df(df: float) -> None:
    if not (df > 0.0 and not math.isnan(df)):
        raise ValueError(f"degrees of freedom must be > 0, got {df!r}")


def student_t_two_sided_p(t: float, df: float) -> float:
    """P(|T| >= |t|) for Student's t with ``df`` (> 0, real, may be ``inf``) degrees of freedom."""
    _check_df(df)
    if math.isnan(t):
        raise ValueError("t is NaN")
    if math.isinf(df):
        return normal_two_sided_p(t)
    if math.isinf(t):
        return 0.0
    if df >= _LARGE_DF:
        return _student_t_two_sided_p_large_df(abs(t), df)
    t_squared = t * t
    if t_squared == 0.0:
        return 1.0
    # x = df/(df+t^2) and 1-x = t^2/(df+t^2), each computed directly (no 1-x cancellation).
    denominator = df + t_squared
    x = df / denominator
    half_df = 0.5 * df
    # ln x as -log1p(t^2/df): x is within 1e-16 of 1 for large df, and half_df * ln(x)
    # would multiply x's rounding error by df.
    log_x = -math.log1p(t_squared / df)
    log_front = half_df * log_x + 0.5 * math.log(t_squared / denominator) - _log_beta(half_df, 0.5)
    if x < (half_df + 1.0) / (half_df + 2.5):
        return min(
            1.0,
            math.exp(log_front)
            * _beta_continued_fraction(half_df, 0.5, x, t_squared / denominator)
            / half_df,
        )
    one_minus_x = t_squared / denominator
    return max(0.0, 1.0 - math.exp(log_front) * _beta_continued_fraction(0.5, half_df, one_minus_x, x) / 0.5)


def _student_t_two_sided_p_large_df(t: float, df: float) -> float:
    """Fisher's expansion of the t tail in powers of 1/df, two terms (t >= 0).

    P(|T| >= t) = 2 Phi(-t) + 2 phi(t) [(t^3 + t) / (4 df) + (3t^7 - 7t^5 - 5t^3 - 3t) / (96 df^2)] + O(df^-3).
    Used from df = 3e4, where the dropped term is below 1e-13 absolute; there the
    continued fraction is ill-conditioned (its terms nearly cancel, losing
    ~log10(df) digits).
    """
    t_squared = t * t
    first = (t_squared + 1.0) * t / 4.0
    second = (((3.0 * t_squared - 7.0) * t_squared - 5.0) * t_squared - 3.0) * t / 96.0
    correction = 2.0 * normal_pdf(t) * (first / df + second / (df * df))
    return min(1.0, max(0.0, normal_two_sided_p(t) + correction))


def student_t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    half_tail = 0.5 * student_t_two_sided_p(t, df)
    return 1.0 - half_tail if t > 0.0 else half_tail


def student_t_pdf(t: float, df: float) -> float:
    _check_df(df)
    if math.isinf(df):
        return normal_pdf(t)
    log_density = (
        math.lgamma(0.5 * (df + 1.0))
        - math.lgamma(0.5 * df)
        - 0.5 * math.log(df * math.pi)
        - 0.5 * (df + 1.0) * math.log1p(t * t / df)
    )
    return math.exp(log_density)


def student_t_critical(alpha: float, df: float) -> float:
    """The t > 0 with ``student_t_two_sided_p(t, df) == alpha`` (e.g. 1.96... for alpha 0.05, df inf)."""
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha!r}")
    _check_df(df)
    normal_guess = normal_quantile(1.0 - 0.5 * alpha)
    if math.isinf(df):
        return normal_guess
    # Bracket the root: the two-sided p decreases in t; t's tails are heavier than
    # the normal's, so the normal critical value is a lower bound.
    low, high = 0.0, max(normal_guess, 1.0)
    while student_t_two_sided_p(high, df) > alpha:
        low, high = high, 2.0 * high
        if high > 1e300:
            raise ConvergenceError(f"no t critical value for alpha={alpha}, df={df}")
    t = min(max(normal_guess, low), high)
    for _ in range(200):
        excess = student_t_two_sided_p(t, df) - alpha
        if excess == 0.0:
            return t
        if excess > 0.0:
            low = t
        else:
            high = t
        slope = -2.0 * student_t_pdf(t, df)
        candidate = t - excess / slope if slope != 0.0 else math.nan
        # Newton when it stays strictly inside the bracket, bisection otherwise.
        next_t = candidate if low < candidate < high else 0.5 * (low + high)
        if abs(next_t - t) <= 1e-15 * max(1.0, t):
            return next_t
        t = next_t
    raise ConvergenceError(f"t critical value did not converge (alpha={alpha}, df={df})")


def regularized_upper_gamma(a: float, x: float) -> float:
    """Q(a, x) = Gamma(a, x) / Gamma(a), for a > 0 and x >= 0."""
    if not (a > 0.0 and math.isfinite(a)):
        raise ValueError(f"incomplete gamma needs finite a > 0, got {a!r}")
    if not x >= 0.0:
        raise ValueError(f"incomplete gamma needs x >= 0, got {x!r}")
    if x == 0.0:
        return 1.0
    if math.isinf(x):
        return 0.0
    log_front = a * math.log(x) - x - math.lgamma(a)
    if x < a + 1.0:
        # P(a, x) = x^a e^-x / Gamma(a+1) * sum_n x^n / ((a+1)...(a+n)): all terms positive.
        term = 1.0 / a
        total = term
        for n in range(1, _MAX_ITERATIONS):
            term *= x / (a + n)
            total += term
            if term < total * _EPSILON:
                return max(0.0, 1.0 - math.exp(log_front) * total)
        raise ConvergenceError(f"incomplete gamma series did not converge (a={a}, x={x})")
    # Q(a, x) = x^a e^-x / Gamma(a) * 1/(x+1-a- 1(1-a)/(x+3-a- 2(2-a)/(x+5-a- ...))).
    if log_front < _LOG_SMALLEST:
        # The fraction is below 1 here (x >= a+1), so Q underflows; and for x near the
        # float limit the Lentz recurrences themselves would go subnormal.
        return 0.0
    b = x + 1.0 - a
    numerator_scale = 1.0 / _TINY
    denominator = 1.0 / b
    value = denominator
    for n in range(1, _MAX_ITERATIONS):
        coefficient = -n * (n - a)
        b += 2.0
        denominator = coefficient * denominator + b
        if abs(denominator) < _TINY:
            denominator = _TINY
        numerator_scale = b + coefficient / numerator_scale
        if abs(numerator_scale) < _TINY:
            numerator_scale = _TINY
        denominator = 1.0 / denominator
        change = denominator * numerator_scale
        value *= change
        if abs(change - 1.0) < _EPSILON:
            return min(1.0, math.exp(log_front) * value)
    raise ConvergenceError(f"incomplete gamma continued fraction did not converge (a={a}, x={x})")


def chi_square_sf(statistic: float, df: float) -> float:
    """P(X >= statistic) for a chi-square X with ``df`` degrees of freedom."""
    _check_df(df)
    if not statistic >= 0.0:
        raise ValueError(f"chi-square statistic must be >= 0, got {statistic!r}")
    return regularized_upper_gamma(0.5 * df, 0.5 * statistic)


def _beta_greater_sum(alpha_a: int, beta_a: int, alpha_b: int, beta_b: int) -> float:
    """P(X_B > X_A), X ~ Beta: sum_{i<alpha_b} B(alpha_a+i, beta_a+beta_b) / ((beta_b+i) B(1+i, beta_b) B(alpha_a, beta_a)).

    The closed form for an integer ``alpha_b`` (integrate the Beta CDF of X_B,
    a finite binomial sum, against X_A's density). Consecutive terms differ by
    the factor r(i) = (alpha_a+i)(beta_b+i) / ((alpha_a+beta_a+beta_b+i)(1+i)),
    so the terms are built by multiplication (2 roundings per term; a running
    sum of logarithms would drift by ~1e-16 * |ln term| per term). r(i) < 1
    exactly when i > (alpha_a beta_b - alpha_a - beta_a - beta_b) / (beta_a + 1):
    the terms rise to one peak and then fall for good, so a term that
    underflows to 0 after the peak is followed only by zeros.
    Terms are kept as ``mantissa * exp(log_scale)``; the mantissa starts at 1
    and is rescaled when it grows large.
    """
    # The first term (i = 0): B(1, beta_b) = 1/beta_b cancels the 1/beta_b beside it.
    log_scale = _log_beta(alpha_a, beta_a + beta_b) - _log_beta(alpha_a, beta_a)
    mantissa = 1.0
    total = 0.0
    summed = alpha_a + beta_a + beta_b
    for i in range(alpha_b):
        total += mantissa
        mantissa *= (alpha_a + i) * (beta_b + i) / ((summed + i) * (1.0 + i))
        if mantissa > _RESCALE_ABOVE:
            mantissa /= _RESCALE_ABOVE
            total /= _RESCALE_ABOVE
            log_scale += _LOG_RESCALE
        elif mantissa == 0.0:
            break
    return total * math.exp(log_scale)


def beta_probability_greater(alpha_b: int, beta_b: int, alpha_a: int, beta_a: int) -> float:
    """P(X_B > X_A) for independent X_B ~ Beta(alpha_b, beta_b), X_A ~ Beta(alpha_a, beta_a).

    Exact (a finite sum) for integer parameters >= 1. Four forms of the sum
    exist (over alpha_b, alpha_a, beta_a or beta_b terms, by P(X_B > X_A) =
    1 - P(X_A > X_B) and by swapping X for 1 - X); the one with the fewest terms
    is used. When even that exceeds ``MAX_EXACT_BETA_TERMS`` every parameter is
    above 1e6 and both Betas are normal to within ~1e-3 skewness: the normal
    approximation of the difference is used instead.
    """
    for name, value in (("alpha_b", alpha_b), ("beta_b", beta_b), ("alpha_a", alpha_a), ("beta_a", beta_a)):
        if value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    smallest = min(alpha_b, alpha_a, beta_a, beta_b)
    if smallest > MAX_EXACT_BETA_TERMS:
        return _beta_greater_normal(alpha_b, beta_b, alpha_a, beta_a)
    if smallest == alpha_b:
        probability = _beta_greater_sum(alpha_a, beta_a, alpha_b, beta_b)
    elif smallest == alpha_a:
        probability = 1.0 - _beta_greater_sum(alpha_b, beta_b, alpha_a, beta_a)
    elif smallest == beta_a:
        # X_B > X_A  <=>  1 - X_A > 1 - X_B, and 1 - X ~ Beta(beta, alpha).
        probability = _beta_greater_sum(beta_b, alpha_b, beta_a, alpha_a)
    else:
        probability = 1.0 - _beta_greater_sum(beta_a, alpha_a, beta_b, alpha_b)
    return min(1.0, max(0.0, probability))


def _beta_greater_normal(alpha_b: int, beta_b: int, alpha_a: int, beta_a: int) -> float:
    def moments(alpha: int, beta: int) -> tuple[float, float]:
        total = alpha + beta
        return alpha / total, alpha * beta / (total * total * (total + 1.0))

    mean_b, variance_b = moments(alpha_b, beta_b)
    mean_a, variance_a = moments(alpha_a, beta_a)
    return normal_cdf((mean_b - mean_a) / math.sqrt(variance_a + variance_b))
