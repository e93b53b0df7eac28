"""Token buckets for the OFREP port: per SDK key and per (key, client address) (pure).

A bucket holds up to ``burst`` tokens and refills at ``per_second``; a
request takes one token, or is refused with the time until one is there.
Time is passed in (``now``, seconds on any monotonic scale), so the module
is deterministic and tests need no clock.

``RateLimiter.check(key, address, now)`` applies two buckets at once:

- the key's bucket: everything one key (one tenant's environment, e.g. one
  app's release) may ask of this server, so a viral app or a flood cannot
  take the flag server from other tenants;
- the (key, address) bucket: what one client address may take of its key's
  budget, so one device or script cannot starve the app's other users.
  Requests without a valid key share one bucket per address (``key`` None),
  which bounds key guessing.

Invariants:

- A request is admitted only when every bucket it touches has a whole
  token, and then takes one from each; a refused request takes nothing, so a
  refused flood does not push its own retry time further out.
- The wait returned for a refusal is the time until every touched bucket has
  a token again (> 0); ``retry_after_seconds`` turns it into the whole
  seconds of a ``Retry-After`` header (>= 1).
- A rate of 0 (``Rate.unlimited()``) admits everything and keeps no bucket.
- Memory is bounded: at most ``max_buckets`` buckets per kind. When full, the
  buckets that have refilled completely (indistinguishable from new ones) are
  dropped first; if all are busy, the oldest are dropped in a batch (such a
  key restarts with a full burst: the cost of the bound, paid only when more
  than ``max_buckets`` clients are active at once). Each step is O(1)
  amortised.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Hashable
from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_BUCKETS", "Rate", "RateLimiter", "TokenBuckets", "retry_after_seconds"]

DEFAULT_MAX_BUCKETS = 100_000
"""~150 bytes a bucket: 15 MB for each kind at most."""


@dataclass(frozen=True, slots=True)
class Rate:
    per_second: float
    burst: float

    def __post_init__(self) -> None:
        if self.per_second < 0 or (self.per_second > 0 and self.burst < 1):
            raise ValueError(f"a rate needs per_second >= 0 and, if limited, burst >= 1: {self}")

    @staticmethod
    def unlimited() -> Rate:
        return Rate(0.0, 0.0)

    @property
    def limited(self) -> bool:
        return self.per_second > 0


class TokenBuckets:
    """One token bucket per key, all with the same rate (module invariants)."""

    __slots__ = ("_buckets", "max_buckets", "rate")

    def __init__(self, rate: Rate, max_buckets: int = DEFAULT_MAX_BUCKETS) -> None:
        if max_buckets < 1:
            raise ValueError("max_buckets must be at least 1")
        self.rate = rate
        self.max_buckets = max_buckets
        self._buckets: dict[Hashable, list[float]] = {}
        """key -> [tokens, time they were counted]."""

    def __len__(self) -> int:
        return len(self._buckets)

    def available(self, key: Hashable, now: float) -> float:
        """Tokens in ``key``'s bucket at ``now`` (refilled, capped at the burst)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            return self.rate.burst
        tokens, then = bucket
        return min(self.rate.burst, tokens + max(0.0, now - then) * self.rate.per_second)

    def wait(self, tokens: float) -> float:
        """Seconds until a bucket holding ``tokens`` has a whole one."""
        return 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate.per_second

    def take(self, key: Hashable, tokens: float, now: float) -> None:
        """Record that ``key`` had ``tokens`` at ``now`` and used one."""
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= self.max_buckets:
                self._make_room(now)
            self._buckets[key] = [tokens - 1.0, now]
        else:
            bucket[0] = tokens - 1.0
            bucket[1] = now

    def _make_room(self, now: float) -> None:
        burst, per_second = self.rate.burst, self.rate.per_second
        full = [
            k for k, (tokens, then) in self._buckets.items() if tokens + (now - then) * per_second >= burst
        ]
        for key in full:
            del self._buckets[key]
        # Keep a margin so the next inserts do not sweep again at once.
        excess = len(self._buckets) - self.max_buckets * 7 // 8
        if excess > 0:
            for key in list(itertools.islice(self._buckets, excess)):  # the oldest inserted
                del self._buckets[key]


class RateLimiter:
    """The two buckets of a request (module docstring)."""

    __slots__ = ("by_address", "by_key")

    def __init__(self, per_key: Rate, per_address: Rate, max_buckets: int = DEFAULT_MAX_BUCKETS) -> None:
        self.by_key = TokenBuckets(per_key, max_buckets)
        self.by_address = TokenBuckets(per_address, max_buckets)

    def check(self, key: str | None, address: str, now: float) -> float:
        """0.0: admitted (a token taken from each bucket); else the seconds to
        wait before asking again (nothing taken)."""
        by_key, by_address = self.by_key, self.by_address
        key_tokens = address_tokens = 0.0
        wait = 0.0
        if key is not None and by_key.rate.limited:
            key_tokens = by_key.available(key, now)
            wait = by_key.wait(key_tokens)
        if by_address.rate.limited:
            address_tokens = by_address.available((key, address), now)
            wait = max(wait, by_address.wait(address_tokens))
        if wait > 0.0:
            return wait
        if key is not None and by_key.rate.limited:
            by_key.take(key, key_tokens, now)
        if by_address.rate.limited:
            by_address.take((key, address), address_tokens, now)
        return 0.0


def retry_after_seconds(wait: float) -> int:
    """The ``Retry-After`` value for a wait: whole seconds, at least 1."""
    return max(1, math.ceil(wait))
