"""``TokenBucket``: the pure rule, against its numbered invariants
(cluster/quotas/token_bucket.py)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.quotas.token_bucket import TokenBucket


def test_a_full_bucket_admits_its_burst_then_owes() -> None:
    bucket = TokenBucket(rate_per_s=100, burst=50, now=0.0)
    assert bucket.wait(0.0) == 0
    assert bucket.charge(50, 0.0) == 0  # exactly the burst: no debt
    assert bucket.charge(20, 0.0) == pytest.approx(0.2)  # 20 owed at 100/s
    assert bucket.wait(0.1) == pytest.approx(0.1)  # half paid back
    assert bucket.wait(0.2) == 0
    assert bucket.tokens(10.0) == 50  # refill stops at the burst


def test_one_call_larger_than_the_burst_goes_through_into_debt() -> None:
    bucket = TokenBucket(rate_per_s=1_000_000, burst=500_000)
    assert bucket.wait(0.0) == 0  # the policy asks before charging: admitted
    assert bucket.charge(4_000_000, 0.0) == pytest.approx(3.5)
    assert bucket.wait(3.5) == pytest.approx(0.0, abs=1e-9)


def test_time_running_backwards_refills_nothing() -> None:
    bucket = TokenBucket(10, 10, now=5.0)
    bucket.charge(10, 5.0)
    assert bucket.tokens(4.0) == 0
    assert bucket.tokens(5.5) == pytest.approx(5)


def test_a_zero_rate_never_pays_back() -> None:
    bucket = TokenBucket(0, 1)
    bucket.charge(2, 0.0)
    assert math.isinf(bucket.wait(1e9))


def test_reconfigure_keeps_the_debt_and_the_burst_cap() -> None:
    bucket = TokenBucket(10, 10)
    bucket.charge(5, 0.0)
    bucket.reconfigure(10, 10, 0.0)
    assert bucket.tokens(0.0) == 5  # what was held is kept
    bucket.reconfigure(100, 4, 0.0)
    assert bucket.tokens(0.0) == 4
    assert bucket.rate_per_s == 100 and bucket.burst == 4


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(-1, 1)
    with pytest.raises(ValueError):
        TokenBucket(1, math.inf)
    with pytest.raises(ValueError):
        TokenBucket(1, 1).charge(-1, 0.0)


@settings(max_examples=200, deadline=None)
@given(
    rate=st.floats(1, 1e6),
    burst_s=st.floats(0.01, 2),
    steps=st.lists(st.tuples(st.floats(0, 0.5), st.floats(0, 1e6)), min_size=1, max_size=60),
)
def test_a_caller_that_respects_wait_never_beats_rate_plus_burst(
    rate: float, burst_s: float, steps: list[tuple[float, float]]
) -> None:
    """Invariants 1-3: charged - owed <= burst + rate * elapsed."""
    burst = rate * burst_s
    bucket = TokenBucket(rate, burst)
    now, charged = 0.0, 0.0
    for gap, amount in steps:
        now += gap
        assert bucket.tokens(now) <= burst + 1e-6
        wait = bucket.wait(now)
        if wait == 0:
            bucket.charge(amount, now)
            charged += amount
        else:
            assert bucket.tokens(now) + rate * wait == pytest.approx(0, abs=1e-6 * max(1, burst))
        owed = max(0.0, -bucket.tokens(now))
        assert charged - owed <= burst + rate * now + 1e-6 * max(1.0, charged)
