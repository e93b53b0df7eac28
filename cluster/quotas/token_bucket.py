"""``TokenBucket``: a rate with a burst, time passed in (no clock, no I/O).

The bucket holds ``tokens`` (units: bytes or requests), refilled at
``rate_per_s`` up to ``burst``. A charge always takes its whole amount, even
past zero: the bucket then holds *debt*, paid back by the refill. That is
what lets one call larger than the burst through (a 4 MB batch on a 1 MB/s
quota), and what makes the policy simple: a caller asks ``wait(now)`` (how
long until the debt is paid) *before* it charges, and decides there whether
the call goes at once, waits, or is refused (cluster/quotas/quota_stage.py:
delayed up to 100 ms, refused beyond). Refusing on the debt already owed, not
on the debt the call would add, means a refused call is admitted once the
debt it met is paid: a large call is never refused for ever.

Invariants:

1. ``tokens <= burst`` at every observation (refill stops at the burst).
2. Over any interval starting from a full bucket, the amount charged minus
   the debt still owed at the end is at most ``burst + rate * elapsed``:
   a caller that never charges while ``wait`` > 0 cannot beat the rate by
   more than the burst plus the single call that ran into debt.
3. ``wait(now)`` is 0 exactly when ``tokens >= 0`` after refilling to ``now``,
   and ``tokens + rate * wait(now) == 0`` otherwise.
4. Time never runs backwards for the bucket: an earlier ``now`` than the last
   one seen is treated as the last one (no refill, never a negative one).
5. A rate of 0 never refills: ``wait`` is infinite once in debt (the caller
   turns that into a refusal that waiting does not cure).
"""

from __future__ import annotations

import math

__all__ = ["TokenBucket"]


class TokenBucket:
    """See the module docstring. Starts full at time ``now``."""

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate_per_s: float, burst: float, now: float = 0.0) -> None:
        _check(rate_per_s, burst)
        self._rate = float(rate_per_s)
        self._burst = float(burst)
        self._tokens = float(burst)
        self._last = now

    @property
    def rate_per_s(self) -> float:
        return self._rate

    @property
    def burst(self) -> float:
        return self._burst

    def tokens(self, now: float) -> float:
        """What the bucket holds at ``now`` (negative: debt)."""
        self._refill(now)
        return self._tokens

    def wait(self, now: float) -> float:
        """Seconds from ``now`` until the debt is paid (0: none owed)."""
        self._refill(now)
        if self._tokens >= 0:
            return 0.0
        if self._rate <= 0:
            return math.inf
        return -self._tokens / self._rate

    def charge(self, amount: float, now: float) -> float:
        """Take ``amount`` (debt allowed); returns the wait the bucket now
        owes (``wait(now)`` after the charge): what the next call meets."""
        if amount < 0:
            raise ValueError(f"a charge must be >= 0, got {amount}")
        self._refill(now)
        self._tokens -= amount
        return self.wait(now)

    def reconfigure(self, rate_per_s: float, burst: float, now: float) -> None:
        """A new rate and burst from ``now`` on; what is held (or owed) so
        far is kept, cut down to the new burst."""
        _check(rate_per_s, burst)
        self._refill(now)
        self._rate = float(rate_per_s)
        self._burst = float(burst)
        self._tokens = min(self._tokens, self._burst)

    def _refill(self, now: float) -> None:
        if now > self._last:
            self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
            self._last = now


def _check(rate_per_s: float, burst: float) -> None:
    if not (rate_per_s >= 0 and burst >= 0 and math.isfinite(rate_per_s) and math.isfinite(burst)):
        raise ValueError(f"rate and burst must be finite and >= 0, got {rate_per_s} and {burst}")
