"""Always-valid (sequential) inference for a difference between two variants (pure).

A fixed-horizon p-value is valid only if it is computed once, at a sample size
chosen in advance: looked at every day and acted on the first time it dips
below 0.05, it finds a "winner" in an A/A test far more often than 5% of the
time. The quantities here stay valid under continuous monitoring: for any
stopping rule a team likes (including "stop the first day it looks
significant"), P(sequential p-value ever <= alpha | no difference) <= alpha.

The mixture SPRT (mSPRT) with a normal mixture, after Robbins (1970),
Johari, Koomen, Pekelis & Walsh, "Peeking at A/B tests" (KDD 2017) and
"Always valid inference" (Operations Research 2022), and the normal-mixture
confidence sequence of Howard, Ramdas, McAuliffe & Sekhon, "Time-uniform,
nonparametric, nonasymptotic confidence sequences" (Ann. Statist. 2021):

- ``theta_hat``: the observed difference (treatment minus control: of
  conversion rates or of means); ``V``: its estimated variance,
  ``s_A^2/n_A + s_B^2/n_B`` (per-user variances; ``p(1-p)`` for a rate);
- the mixing distribution on the true difference is ``N(0, tau^2)``; the
  likelihood ratio of "difference ~ N(0, tau^2)" against "difference = theta0"
  for a normal ``theta_hat ~ N(theta, V)`` is

      Lambda(theta0) = sqrt(V / (V + tau^2)) * exp(tau^2 (theta_hat - theta0)^2 / (2 V (V + tau^2)))

  a nonnegative martingale under ``theta = theta0``, so by Ville's inequality
  ``P(sup_n Lambda_n >= 1/alpha) <= alpha``;
- always-valid p-value: ``min(1, 1/Lambda(0))`` at each look (the running
  minimum over looks, ``fold``, is also valid and never larger);
- always-valid confidence sequence at level ``1 - alpha``: the ``theta0`` with
  ``Lambda(theta0) < 1/alpha``,

      theta_hat +- sqrt(V (V + tau^2) / tau^2 * (2 ln(1/alpha) + ln((V + tau^2) / V)))

  (its running intersection over looks, ``fold``, is also valid). The p-value
  is below alpha exactly when the interval excludes 0.

The mixing variance ``tau^2`` is a tuning parameter, not a prior belief the
result depends on for validity: any fixed ``tau^2`` gives valid inference;
it decides *when* the boundary is tightest. ``SequentialSettings.mixing_variance``
sets it directly (in squared units of the difference); by default it is
``u*(alpha) * (s_A^2 + s_B^2) / tuning_users``, which makes the interval
narrowest, relative to the fixed-horizon interval, when each arm has about
``tuning_users`` users (``u*`` solves ``u = 2 ln(1/alpha) + ln(1 + u)``: the
minimiser of the squared half-width over ``V``, ~8.2 for alpha = 0.05).

Assumptions (the usual practice of the sources above, stated so nobody
mistakes them for exact): ``theta_hat`` is treated as normal and ``V`` as
known (it is the plug-in estimate), and the default ``tau^2`` uses the
plug-in per-user variances too; both are accurate once each arm has a few
hundred users. Users are assumed independent and identically distributed
within an arm over time.

Degenerate input has defined answers: ``V == 0`` (no variance observed: no
users in an arm, all-or-nothing conversions in both) gives p-value ``1.0``
and no interval (``None``); ``V`` is never negative.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

DEFAULT_ALPHA = 0.05
DEFAULT_TUNING_USERS = 5_000


@dataclass(frozen=True, slots=True)
class SequentialSettings:
    """How the always-valid results are computed (module docstring: the formulas).

    ``alpha``: the interval has coverage ``1 - alpha`` uniformly over all looks.
    ``tuning_users``: users per arm at which the interval is tightest (default tau^2).
    ``mixing_variance``: tau^2 itself, in squared units of the difference; overrides
    ``tuning_users`` when set.
    """

    alpha: float = DEFAULT_ALPHA
    tuning_users: int = DEFAULT_TUNING_USERS
    mixing_variance: float | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), got {self.alpha!r}")
        if self.tuning_users < 1:
            raise ValueError(f"tuning_users must be >= 1, got {self.tuning_users!r}")
        if self.mixing_variance is not None and not (
            self.mixing_variance > 0.0 and math.isfinite(self.mixing_variance)
        ):
            raise ValueError(f"mixing_variance must be finite and > 0, got {self.mixing_variance!r}")


@dataclass(frozen=True, slots=True)
class SequentialEstimate:
    """The always-valid p-value and interval for the difference at one look.

    ``ci_low``/``ci_high`` are both ``None`` or both finite with ``ci_low <= ci_high``.
    """

    p_value: float
    ci_low: float | None
    ci_high: float | None


def optimal_variance_ratio(alpha: float) -> float:
    """u*(alpha): the tau^2 / V at which the mixture interval is narrowest relative to sqrt(V).

    The squared half-width over V is (1 + 1/u)(2 ln(1/alpha) + ln(1 + u)) with
    u = tau^2 / V; setting its derivative to zero gives u = 2 ln(1/alpha) + ln(1 + u),
    a contraction (slope 1/(1+u) < 1), so fixed-point iteration converges.
    """
    twice_log = 2.0 * math.log(1.0 / alpha)
    u = twice_log + 1.0
    for _ in range(200):
        next_u = twice_log + math.log1p(u)
        if abs(next_u - u) <= 1e-15 * next_u:
            return next_u
        u = next_u
    return u


def mixing_variance(settings: SequentialSettings, per_user_variance_sum: float) -> float:
    """tau^2: the explicit setting, or u*(alpha) * (s_A^2 + s_B^2) / tuning_users."""
    if settings.mixing_variance is not None:
        return settings.mixing_variance
    return optimal_variance_ratio(settings.alpha) * per_user_variance_sum / settings.tuning_users


def mixture_sprt(
    difference: float, variance: float, tau_squared: float, alpha: float = DEFAULT_ALPHA
) -> SequentialEstimate:
    """The always-valid p-value and (1 - alpha) interval for one look (module docstring)."""
    if not (math.isfinite(difference) and math.isfinite(variance) and variance >= 0.0):
        raise ValueError(f"need a finite difference and variance >= 0, got {difference!r}, {variance!r}")
    if not (tau_squared > 0.0 and math.isfinite(tau_squared)):
        raise ValueError(f"tau^2 must be finite and > 0, got {tau_squared!r}")
    if variance == 0.0:
        return SequentialEstimate(p_value=1.0, ci_low=None, ci_high=None)
    # Everything in standardised terms (z = difference / sqrt(V), the ratio tau^2 / V), so
    # the answer does not depend on the scale of the values: products like V (V + tau^2)
    # underflow for values of ~1e-100.
    standard_error = math.sqrt(variance)
    z = difference / standard_error
    shrink = 1.0 / (1.0 + variance / tau_squared)  # tau^2 / (V + tau^2)
    log_total_over_variance = math.log(tau_squared) - math.log(variance) + math.log1p(variance / tau_squared)
    # ln Lambda(0), kept in logs: the exponent grows with the sample and would overflow exp().
    log_likelihood_ratio = 0.5 * (z * z * shrink - log_total_over_variance)
    p_value = math.exp(-log_likelihood_ratio) if log_likelihood_ratio > 0.0 else 1.0
    half_width = standard_error * math.sqrt((2.0 * math.log(1.0 / alpha) + log_total_over_variance) / shrink)
    return SequentialEstimate(
        p_value=p_value, ci_low=difference - half_width, ci_high=difference + half_width
    )


def fold(previous: SequentialEstimate | None, current: SequentialEstimate) -> SequentialEstimate:
    """Combine this look with the running result of earlier looks (for a caller that keeps one).

    The running minimum of the p-values and the running intersection of the
    intervals are valid too, and never worse. If the intersection is empty
    (which happens with probability <= alpha, or when the normal assumption is
    badly off) the current interval is kept rather than reporting nothing.
    """
    if previous is None:
        return current
    p_value = min(previous.p_value, current.p_value)
    if previous.ci_low is None or previous.ci_high is None:
        return SequentialEstimate(p_value=p_value, ci_low=current.ci_low, ci_high=current.ci_high)
    if current.ci_low is None or current.ci_high is None:
        return SequentialEstimate(p_value=p_value, ci_low=previous.ci_low, ci_high=previous.ci_high)
    low = max(previous.ci_low, current.ci_low)
    high = min(previous.ci_high, current.ci_high)
    if low > high:
        return SequentialEstimate(p_value=p_value, ci_low=current.ci_low, ci_high=current.ci_high)
    return SequentialEstimate(p_value=p_value, ci_low=low, ci_high=high)
