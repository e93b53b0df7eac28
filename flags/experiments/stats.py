"""Statistics of an experiment's results from per-variant aggregates (pure, stdlib ``math`` only).

The analyzer keeps, per metric and variant, only aggregates that can be updated
one user at a time and merged: ``ConversionCounts`` (users, converted users)
and ``ValueSummary`` (count, sum, sum of squares of per-user values). This
module turns them into the per-variant rows of ``raftlog experiment results``
(``VariantResult.to_json``: the field names of issue 17) and checks the
sample ratio (``sample_ratio_mismatch``). Every server computes the same
numbers from the same aggregates: nothing here is random or clock-dependent.

Formulas (``z`` = ``normal_quantile(0.975)``; A = control, B = a treatment;
``lift`` is *relative*, ``absolute_lift`` the difference):

================================ ===============================================================
result                           conversion metric (rates p = c/n)
================================ ===============================================================
``absolute_lift``                ``p_B - p_A``, 95% interval: Newcombe's hybrid score interval
                                 (Newcombe 1998, method 10: from the two Wilson intervals;
                                 never outside [-1, 1], sensible at 0 and 100%)
``lift`` (relative)              ``p_B/p_A - 1``, 95% interval: delta method on ln(p_B/p_A)
                                 (Katz): ``exp(ln(p_B/p_A) +- z sqrt((1-p_A)/c_A + (1-p_B)/c_B)) - 1``
``p_value``                      two-proportion z-test, pooled: ``z = (p_B-p_A) / sqrt(p(1-p)
                                 (1/n_A + 1/n_B))``, ``p = (c_A+c_B)/(n_A+n_B)``; two-sided
``chance_to_beat_control``       ``P(p_B > p_A)`` with posteriors ``Beta(1+c, 1+n-c)``
                                 (uniform priors), exact (``beta_probability_greater``)
================================ ===============================================================

================================ ===============================================================
result                           value metric (per-user values: mean m, sample variance s^2)
================================ ===============================================================
``absolute_lift``                ``m_B - m_A``, 95% interval ``+- t* se`` with
                                 ``se^2 = s_A^2/n_A + s_B^2/n_B`` and ``t*`` the Student t
                                 quantile at the Welch-Satterthwaite df
                                 ``se^4 / ((s_A^2/n_A)^2/(n_A-1) + (s_B^2/n_B)^2/(n_B-1))``
``lift`` (relative)              ``(m_B - m_A)/|m_A|``, interval ``+- t* sqrt(s_B^2/n_B +
                                 (m_B/m_A)^2 s_A^2/n_A) / |m_A|`` (delta method on the ratio)
``p_value``                      Welch's t-test, two-sided, same df
``chance_to_beat_control``       ``Phi((m_B - m_A) / se)``: the normal approximation of the
                                 posterior of the difference (flat prior)
================================ ===============================================================

``sequential_p_value``/``sequential_ci_low``/``sequential_ci_high``: always-valid
p-value and 95% confidence sequence for the absolute difference (mSPRT with a
normal mixture; ``stats_sequential`` documents the formula, its sources and
``SequentialSettings``). Valid however often the results are looked at.

Sample ratio mismatch: Pearson's chi-square goodness of fit of users per
variant against ``N * weight / sum(weights)``, ``df = k - 1``; ``warn`` when
``p < 0.001`` (GrowthBook's threshold).

Defined answers for the edges (every float is finite, so the JSON never
carries NaN or Infinity; ``None`` means "not defined", JSON ``null``):

- the control row has every comparison field ``None``;
- a variant, or the control, with zero users: the rate/mean of that arm and
  every comparison ``None``; a control absent from the aggregates is
  reported as a control row with zero users (first);
- zero conversions in the control: relative lift and its interval ``None``
  (no ratio); zero conversions in a treatment: relative lift ``-1``, its
  interval ``None`` (the log is undefined); the absolute lift and interval
  are still defined. Both arms at 0% or both at 100%: pooled variance 0,
  ``p_value`` 1.0 (the rates are equal);
- value metrics with fewer than 2 users in an arm: mean and lifts as point
  estimates, intervals/p-value/chance ``None`` (no variance). Zero variance
  in both arms (se = 0): equal means give p 1.0, chance 0.5; different means
  give p 0.0, chance 1.0 or 0.0; intervals collapse to the point. A control
  mean of 0: relative lift ``None``;
- SRM with no users: ``p_value`` None, no warning; users in a variant that
  has no weight (absent from the weights or weight 0): ``p_value`` 0.0 and a
  warning (traffic where none was configured is a mismatch by definition;
  a weight too small next to the others to expect any share of the users in
  float arithmetic counts as no weight; a chi-square beyond float range is
  p 0.0 with no statistic);
  only one weighted variant and no stray users: ``p_value`` 1.0.

Invariants: ``ConversionCounts`` has ``0 <= conversions <= users``;
``ValueSummary`` has ``count >= 0``, finite sums, ``total_squares >= 0`` and
all zero when ``count == 0``; every float in a ``VariantResult`` is finite
(checked on construction); interval bounds are both ``None`` or
``low <= high``; probabilities are in [0, 1]; results keep the order of the
aggregates mapping.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import TypeVar

from flags.experiments.stats_sequential import (
    SequentialEstimate,
    SequentialSettings,
    mixing_variance,
    mixture_sprt,
)
from flags.experiments.stats_special import (
    beta_probability_greater,
    chi_square_sf,
    normal_cdf,
    normal_quantile,
    normal_two_sided_p,
    student_t_critical,
    student_t_two_sided_p,
)

CONFIDENCE = 0.95
# GrowthBook's threshold: an SRM this unlikely means the assignment or the exposure logging is broken.
SRM_WARN_P_VALUE = 0.001

_ALPHA = 1.0 - CONFIDENCE
_Z = normal_quantile(1.0 - _ALPHA / 2.0)

JsonValue = str | int | float | None


@dataclass(frozen=True, slots=True)
class ConversionCounts:
    """Users exposed to one variant and how many of them converted (after their first exposure)."""

    users: int = 0
    conversions: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.conversions <= self.users:
            raise ValueError(f"need 0 <= conversions <= users, got {self.conversions} of {self.users}")

    def merge(self, other: ConversionCounts) -> ConversionCounts:
        return ConversionCounts(self.users + other.users, self.conversions + other.conversions)

    @property
    def rate(self) -> float | None:
        return self.conversions / self.users if self.users else None


@dataclass(frozen=True, slots=True)
class ValueSummary:
    """Count, sum and sum of squares of per-user values of one variant (updatable one user at a time).

    One value per exposed user (for a "sum of the event's values" metric, a
    user without the event contributes 0, so ``count`` equals the users
    exposed). The variance comes from the sums (``(S2 - S1^2/n)/(n-1)``,
    clamped at 0): accurate while the spread is not tiny next to the mean
    (values of ~1e6 that differ by ~1 lose most digits).
    """

    count: int = 0
    total: float = 0.0
    total_squares: float = 0.0

    def __post_init__(self) -> None:
        if self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")
        if not (math.isfinite(self.total) and math.isfinite(self.total_squares)):
            raise ValueError("sums must be finite (values too large for a float sum of squares?)")
        if self.total_squares < 0.0:
            raise ValueError(f"sum of squares must be >= 0, got {self.total_squares}")
        if self.count == 0 and (self.total != 0.0 or self.total_squares != 0.0):
            raise ValueError("an empty summary has zero sums")

    @classmethod
    def of(cls, values: list[float] | tuple[float, ...]) -> ValueSummary:
        summary = cls()
        for value in values:
            summary = summary.add(value)
        return summary

    def add(self, value: float) -> ValueSummary:
        if not math.isfinite(value):
            raise ValueError(f"a value must be finite, got {value!r}")
        return ValueSummary(self.count + 1, self.total + value, self.total_squares + value * value)

    def merge(self, other: ValueSummary) -> ValueSummary:
        return ValueSummary(
            self.count + other.count, self.total + other.total, self.total_squares + other.total_squares
        )

    @property
    def mean(self) -> float | None:
        return self.total / self.count if self.count else None

    @property
    def variance(self) -> float | None:
        """The sample variance (n - 1 denominator); ``None`` below 2 values."""
        if self.count < 2:
            return None
        centred = self.total_squares - self.total * self.total / self.count
        return max(0.0, centred / (self.count - 1))


@dataclass(frozen=True, slots=True)
class VariantResult:
    """One row of the results: a variant and its comparison with the control (``to_json``: issue 17's fields).

    ``conversions``/``rate`` are set for conversion metrics, ``mean`` for value
    metrics. ``lift*`` is the relative lift, ``absolute_lift*`` the difference;
    ``sequential_*`` are always-valid and about the difference.
    """

    variant: str
    users: int
    conversions: int | None = None
    rate: float | None = None
    mean: float | None = None
    lift: float | None = None
    lift_ci_low: float | None = None
    lift_ci_high: float | None = None
    absolute_lift: float | None = None
    absolute_lift_ci_low: float | None = None
    absolute_lift_ci_high: float | None = None
    p_value: float | None = None
    chance_to_beat_control: float | None = None
    sequential_p_value: float | None = None
    sequential_ci_low: float | None = None
    sequential_ci_high: float | None = None

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{field.name} is not finite ({value!r}): the statistics must define it")
        for low, high in (
            (self.lift_ci_low, self.lift_ci_high),
            (self.absolute_lift_ci_low, self.absolute_lift_ci_high),
            (self.sequential_ci_low, self.sequential_ci_high),
        ):
            if (low is None) != (high is None) or (low is not None and high is not None and low > high):
                raise ValueError(f"interval bounds must be both None or ordered, got {low!r}, {high!r}")
        for probability in (self.rate, self.p_value, self.chance_to_beat_control, self.sequential_p_value):
            if probability is not None and not 0.0 <= probability <= 1.0:
                raise ValueError(f"probability out of [0, 1]: {probability!r}")

    def to_json(self) -> dict[str, JsonValue]:
        return {field.name: getattr(self, field.name) for field in fields(self)}


@dataclass(frozen=True, slots=True)
class SampleRatioCheck:
    """Chi-square goodness of fit of users per variant against the configured weights."""

    p_value: float | None
    warn: bool
    statistic: float | None
    degrees_of_freedom: int
    expected_users: tuple[tuple[str, float], ...]
    unexpected_variants: tuple[str, ...]


_Aggregate = TypeVar("_Aggregate", "ConversionCounts", "ValueSummary")


def _finite(value: float) -> float | None:
    # A last guard: the formulas are written not to produce inf/NaN, but a
    # result that overflowed must show as "not defined", never reach the JSON.
    return value if math.isfinite(value) else None


def _interval(low: float, high: float) -> tuple[float | None, float | None]:
    if math.isfinite(low) and math.isfinite(high):
        return low, high
    return None, None


def _with_control_first(
    aggregates: Mapping[str, _Aggregate], control: str, empty: _Aggregate
) -> list[tuple[str, _Aggregate]]:
    rows = list(aggregates.items())
    if control not in aggregates:
        rows.insert(0, (control, empty))
    return rows


def _wilson(conversions: int, users: int) -> tuple[float, float]:
    """The Wilson score interval of one proportion (users > 0), clamped to [0, 1]."""
    rate = conversions / users
    z_squared = _Z * _Z
    scale = 1.0 + z_squared / users
    centre = (rate + z_squared / (2.0 * users)) / scale
    half_width = _Z / scale * math.sqrt(rate * (1.0 - rate) / users + z_squared / (4.0 * users * users))
    return max(0.0, centre - half_width), min(1.0, centre + half_width)


def _sequential(
    difference: float, variance: float, per_user_variance_sum: float, settings: SequentialSettings
) -> SequentialEstimate:
    if not variance > 0.0:
        return SequentialEstimate(p_value=1.0, ci_low=None, ci_high=None)
    return mixture_sprt(
        difference, variance, mixing_variance(settings, per_user_variance_sum), settings.alpha
    )


def _compare_conversions(
    name: str, control: ConversionCounts, treatment: ConversionCounts, settings: SequentialSettings
) -> VariantResult:
    n_a, c_a, n_b, c_b = control.users, control.conversions, treatment.users, treatment.conversions
    rate_b = c_b / n_b
    rate_a = c_a / n_a
    difference = rate_b - rate_a

    low_a, high_a = _wilson(c_a, n_a)
    low_b, high_b = _wilson(c_b, n_b)
    # Newcombe's hybrid score interval: each side combines the matching halves of the Wilson intervals.
    absolute_low = difference - math.sqrt((rate_b - low_b) ** 2 + (high_a - rate_a) ** 2)
    absolute_high = difference + math.sqrt((high_b - rate_b) ** 2 + (rate_a - low_a) ** 2)

    lift: float | None = None
    lift_low: float | None = None
    lift_high: float | None = None
    if c_a > 0:
        lift = rate_b / rate_a - 1.0
        if c_b > 0:
            log_ratio = math.log(rate_b / rate_a)
            log_se = math.sqrt((1.0 - rate_a) / c_a + (1.0 - rate_b) / c_b)
            lift_low, lift_high = math.expm1(log_ratio - _Z * log_se), math.expm1(log_ratio + _Z * log_se)

    pooled = (c_a + c_b) / (n_a + n_b)
    pooled_se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / n_a + 1.0 / n_b))
    # A pooled variance of 0 means both arms are at 0% or both at 100%: equal rates.
    p_value = normal_two_sided_p(difference / pooled_se) if pooled_se > 0.0 else 1.0

    chance = beta_probability_greater(1 + c_b, 1 + n_b - c_b, 1 + c_a, 1 + n_a - c_a)

    per_user_a = rate_a * (1.0 - rate_a)
    per_user_b = rate_b * (1.0 - rate_b)
    sequential = _sequential(
        difference, per_user_a / n_a + per_user_b / n_b, per_user_a + per_user_b, settings
    )
    return VariantResult(
        variant=name,
        users=n_b,
        conversions=c_b,
        rate=rate_b,
        lift=lift,
        lift_ci_low=lift_low,
        lift_ci_high=lift_high,
        absolute_lift=difference,
        absolute_lift_ci_low=max(-1.0, absolute_low),
        absolute_lift_ci_high=min(1.0, absolute_high),
        p_value=p_value,
        chance_to_beat_control=chance,
        sequential_p_value=sequential.p_value,
        sequential_ci_low=sequential.ci_low,
        sequential_ci_high=sequential.ci_high,
    )


def analyse_conversions(
    counts: Mapping[str, ConversionCounts],
    control: str,
    sequential: SequentialSettings | None = None,
) -> tuple[VariantResult, ...]:
    """One row per variant (the mapping's order; a missing control first, with zero users)."""
    settings = sequential or SequentialSettings()
    control_counts = counts.get(control, ConversionCounts())
    rows: list[VariantResult] = []
    for name, variant_counts in _with_control_first(counts, control, ConversionCounts()):
        if name == control or variant_counts.users == 0 or control_counts.users == 0:
            rows.append(
                VariantResult(
                    variant=name,
                    users=variant_counts.users,
                    conversions=variant_counts.conversions,
                    rate=variant_counts.rate,
                )
            )
        else:
            rows.append(_compare_conversions(name, control_counts, variant_counts, settings))
    return tuple(rows)


def _compare_values(
    name: str, control: ValueSummary, treatment: ValueSummary, settings: SequentialSettings
) -> VariantResult:
    mean_a = control.total / control.count
    mean_b = treatment.total / treatment.count
    difference = mean_b - mean_a
    # Relative to |m_A| so a positive lift always means "the treatment is higher".
    lift = _finite(difference / abs(mean_a)) if mean_a != 0.0 else None
    point = VariantResult(
        variant=name, users=treatment.count, mean=mean_b, lift=lift, absolute_lift=_finite(difference)
    )
    variance_a, variance_b = control.variance, treatment.variance
    if variance_a is None or variance_b is None:
        return point

    squared_error_a = variance_a / control.count
    squared_error_b = variance_b / treatment.count
    squared_error = squared_error_a + squared_error_b
    sequential = _sequential(difference, squared_error, variance_a + variance_b, settings)
    if squared_error == 0.0:
        # No spread in either arm: the difference is known exactly.
        same = difference == 0.0
        return _replace_comparison(
            point,
            lift_interval=(lift, lift) if lift is not None else (None, None),
            absolute_interval=(difference, difference),
            p_value=1.0 if same else 0.0,
            chance=0.5 if same else (1.0 if difference > 0.0 else 0.0),
            sequential=sequential,
        )

    standard_error = math.sqrt(squared_error)
    # Welch-Satterthwaite, written with each arm's share of se^2 so it cannot underflow
    # (se^4 of values ~1e-100 would be 0/0).
    share_a = squared_error_a / squared_error
    share_b = squared_error_b / squared_error
    degrees_of_freedom = 1.0 / (
        share_a * share_a / (control.count - 1) + share_b * share_b / (treatment.count - 1)
    )
    t_critical = student_t_critical(_ALPHA, degrees_of_freedom)
    p_value = student_t_two_sided_p(difference / standard_error, degrees_of_freedom)
    absolute_interval = _interval(
        difference - t_critical * standard_error, difference + t_critical * standard_error
    )
    lift_interval: tuple[float | None, float | None] = (None, None)
    if lift is not None:
        ratio = mean_b / mean_a
        lift_error = math.sqrt(squared_error_b + ratio * ratio * squared_error_a) / abs(mean_a)
        lift_interval = _interval(lift - t_critical * lift_error, lift + t_critical * lift_error)
    return _replace_comparison(
        point,
        lift_interval=lift_interval,
        absolute_interval=absolute_interval,
        p_value=p_value,
        chance=normal_cdf(difference / standard_error),
        sequential=sequential,
    )


def _replace_comparison(
    point: VariantResult,
    *,
    lift_interval: tuple[float | None, float | None],
    absolute_interval: tuple[float | None, float | None],
    p_value: float,
    chance: float,
    sequential: SequentialEstimate,
) -> VariantResult:
    return VariantResult(
        variant=point.variant,
        users=point.users,
        mean=point.mean,
        lift=point.lift,
        lift_ci_low=lift_interval[0],
        lift_ci_high=lift_interval[1],
        absolute_lift=point.absolute_lift,
        absolute_lift_ci_low=absolute_interval[0],
        absolute_lift_ci_high=absolute_interval[1],
        p_value=p_value,
        chance_to_beat_control=chance,
        sequential_p_value=sequential.p_value,
        sequential_ci_low=sequential.ci_low,
        sequential_ci_high=sequential.ci_high,
    )


def analyse_values(
    summaries: Mapping[str, ValueSummary],
    control: str,
    sequential: SequentialSettings | None = None,
) -> tuple[VariantResult, ...]:
    """One row per variant (the mapping's order; a missing control first, with zero users)."""
    settings = sequential or SequentialSettings()
    control_summary = summaries.get(control, ValueSummary())
    rows: list[VariantResult] = []
    for name, summary in _with_control_first(summaries, control, ValueSummary()):
        if name == control or summary.count == 0 or control_summary.count == 0:
            rows.append(VariantResult(variant=name, users=summary.count, mean=summary.mean))
        else:
            rows.append(_compare_values(name, control_summary, summary, settings))
    return tuple(rows)


def sample_ratio_mismatch(users: Mapping[str, int], weights: Mapping[str, float]) -> SampleRatioCheck:
    """Do the users per variant fit the flag's configured weights? (Module docstring: the edge cases.)"""
    for variant, weight in weights.items():
        if not (weight >= 0.0 and math.isfinite(weight)):
            raise ValueError(f"weight of {variant!r} must be finite and >= 0, got {weight!r}")
    for variant, count in users.items():
        if count < 0:
            raise ValueError(f"users of {variant!r} must be >= 0, got {count!r}")
    total_users = sum(users.values())
    positive = [(variant, weight) for variant, weight in weights.items() if weight > 0.0]
    total_weight = math.fsum(weight for _, weight in positive)
    # A weight so small next to the others that it expects no users (the share
    # underflows) is treated as no weight: any user there is a mismatch.
    expected = tuple(
        (variant, share)
        for variant, share in ((variant, total_users * weight / total_weight) for variant, weight in positive)
        if total_users == 0 or share > 0.0
    )
    expecting = {variant for variant, _ in expected}
    unexpected = tuple(
        sorted(variant for variant, count in users.items() if count > 0 and variant not in expecting)
    )
    degrees_of_freedom = max(0, len(expected) - 1)
    if total_users == 0:
        return SampleRatioCheck(None, False, None, degrees_of_freedom, expected, unexpected)
    if unexpected:
        return SampleRatioCheck(0.0, True, None, degrees_of_freedom, expected, unexpected)
    if degrees_of_freedom == 0:
        # One weighted variant holding every user: observed equals expected.
        return SampleRatioCheck(1.0, False, 0.0, 0, expected, unexpected)
    statistic = math.fsum((users.get(variant, 0) - count) ** 2 / count for variant, count in expected)
    if not math.isfinite(statistic):
        # A mismatch beyond float range (a tiny expected count that got users): certain.
        return SampleRatioCheck(0.0, True, None, degrees_of_freedom, expected, unexpected)
    p_value = chi_square_sf(statistic, degrees_of_freedom)
    return SampleRatioCheck(
        p_value, p_value < SRM_WARN_P_VALUE, statistic, degrees_of_freedom, expected, unexpected
    )
