"""flags/rate_limit.py: token buckets per key and per (key, address), time passed in."""

from __future__ import annotations

import pytest

from flags.rate_limit import Rate, RateLimiter, TokenBuckets, retry_after_seconds


def admitted(limiter: RateLimiter, key: str | None, address: str, now: float, times: int) -> int:
    return sum(limiter.check(key, address, now) == 0.0 for _ in range(times))


def test_a_burst_is_admitted_then_the_rate() -> None:
    limiter = RateLimiter(Rate(10, 20), Rate.unlimited())
    assert admitted(limiter, "k", "a", 100.0, 50) == 20
    wait = limiter.check("k", "a", 100.0)
    assert wait == pytest.approx(0.1)
    assert admitted(limiter, "k", "a", 100.5, 50) == 5  # half a second at 10/s
    assert admitted(limiter, "k", "a", 1000.0, 50) == 20  # refilled, capped at the burst


def test_one_key_flooding_leaves_another_key_its_whole_budget() -> None:
    limiter = RateLimiter(Rate(100, 100), Rate(50, 100))
    assert admitted(limiter, "tenant-a", "10.0.0.1", 5.0, 1000) == 100
    assert limiter.check("tenant-a", "10.0.0.1", 5.0) > 0
    # Same address, other tenant: untouched.
    assert admitted(limiter, "tenant-b", "10.0.0.1", 5.0, 100) == 100


def test_one_address_cannot_take_its_keys_whole_budget() -> None:
    limiter = RateLimiter(Rate(1000, 1000), Rate(5, 10))
    assert admitted(limiter, "app", "10.0.0.1", 0.0, 100) == 10
    assert admitted(limiter, "app", "10.0.0.2", 0.0, 100) == 10
    assert limiter.by_key.available("app", 0.0) == 980


def test_refused_requests_take_nothing() -> None:
    limiter = RateLimiter(Rate(1, 1), Rate(1000, 1000))
    assert limiter.check("k", "a", 0.0) == 0.0
    for _ in range(100):
        assert limiter.check("k", "a", 0.5) == pytest.approx(0.5)
    # Had the refusals taken tokens, the bucket would be deep in debt.
    assert limiter.check("k", "a", 1.0) == 0.0
    # The key bucket refusing must not drain the address bucket either.
    assert limiter.by_address.available(("k", "a"), 1.0) == pytest.approx(999)


def test_requests_without_a_key_share_a_bucket_per_address() -> None:
    limiter = RateLimiter(Rate(1000, 1000), Rate(1, 3))
    assert admitted(limiter, None, "10.0.0.9", 0.0, 10) == 3
    assert admitted(limiter, None, "10.0.0.8", 0.0, 10) == 3
    assert admitted(limiter, "k", "10.0.0.9", 0.0, 10) == 3


def test_unlimited_keeps_no_buckets() -> None:
    limiter = RateLimiter(Rate.unlimited(), Rate.unlimited())
    assert admitted(limiter, "k", "a", 0.0, 10_000) == 10_000
    assert len(limiter.by_key) == len(limiter.by_address) == 0


def test_memory_is_bounded_and_full_buckets_go_first() -> None:
    buckets = TokenBuckets(Rate(1, 2), max_buckets=100)
    for i in range(1000):
        key = f"idle-{i}"
        buckets.take(key, buckets.available(key, float(i)), float(i))
        assert len(buckets) <= 100
    # Busy buckets (not refilled yet) outlive full ones, even when older.
    slow = TokenBuckets(Rate(0.001, 1), max_buckets=10)
    for i in range(5):
        slow.take(f"busy-{i}", 1.0, 0.0)  # empty at t=0, full again only at t=1000
    for i in range(5):
        slow.take(f"done-{i}", 1.0, -2000.0)  # empty long ago: full by now
    slow.take("new", 1.0, 1.0)
    assert sorted(map(str, slow._buckets)) == [*(f"busy-{i}" for i in range(5)), "new"]
    # When every bucket is busy, the oldest are dropped in a batch.
    limited = TokenBuckets(Rate(1, 1), max_buckets=10)
    for i in range(10):
        limited.take(f"k{i}", 1.0, 0.0)  # each empty at t=0
    limited.take("new", 1.0, 0.5)  # nobody is full at t=0.5
    assert len(limited) <= 10 and "new" in limited._buckets
    assert "k9" in limited._buckets and "k0" not in limited._buckets


def test_retry_after_is_whole_seconds_at_least_one() -> None:
    assert retry_after_seconds(0.001) == 1
    assert retry_after_seconds(1.0) == 1
    assert retry_after_seconds(1.01) == 2


def test_bad_rates_are_refused() -> None:
    with pytest.raises(ValueError):
        Rate(-1, 10)
    with pytest.raises(ValueError):
        Rate(5, 0.5)
