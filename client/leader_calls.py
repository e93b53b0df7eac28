"""The SDK's one call path: locate, call, map the error, wait, follow redirects.

Every request the SDK sends to a node goes through here: produces, fetches
(long polls, and the opening of fetch streams), ``ListOffsets``, admin
calls and consumer-group calls. One attempt of a request:

1. **locate**: its ``Route`` names the address (a partition's leader from the
   ``MetadataCache``: ``PartitionRoute``; any node, the last that answered
   first: ``NodeRoute``, which also follows coordinator hints).
2. **call** with a per-attempt timeout: ``attempt_timeout_s`` (plus the
   long-poll wait of a fetch), never past the request's deadline. The
   attempt timeout is short (about a second) while the request's deadline
   is long, so a node that went silent costs one attempt, not the request.
3. **map** a failure once: ``client.errors.from_rpc_error``.
4. **learn**: a ``NOT_LEADER``/``NOT_COORDINATOR`` hint, or the
   ``raftlog-leader`` trailer a node adds to an answer it forwarded to the
   leader (successful or not), moves the route to that address, so the next
   call goes there directly. A node that timed out or could not be reached
   (``client.metadata.is_silent``) is reported to the cache
   (``MetadataCache.node_failed``): the leaderships cached at its address are
   forgotten and it is asked last for metadata for a while.
5. **wait**: a hint to another address is followed at once, up to
   ``max_redirects`` in a row; every other retriable error waits
   ``max(backoff.delay(attempt), retry_after_ms / 1000)``.
6. **give up**: a non-retriable error is raised at once; a retriable one is
   raised when the deadline has passed or the wait would end past it
   (callers wrap it in their own timeout error).

Callers keep only their own rules, through two hooks of ``call``:
``prepare`` (runs before each attempt; the producer encodes its batch there)
and ``on_error`` (sees every failure first and returns a ``Verdict``: the
producer's ``maybe_committed`` bookkeeping and renumbering). The stream
fetcher, whose call is not unary, drives an ``Attempts`` itself.

Invariants:

- A retry never starts sooner than the server's ``retry_after_ms`` after the
  answer that carried it, on every path.
- At most ``max_redirects`` hints are followed in a row without a wait.
- No attempt's timeout reaches past the request's deadline.
- The path never changes a request between attempts: the caller builds it
  (an idempotent producer's resend depends on the same bytes going out).
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Protocol, TypeVar

import grpc

from client.errors import (
    BackpressureError,
    NotCoordinatorError,
    NotLeaderError,
    OutcomeUnknownError,
    RaftlogError,
    RequestTimeoutError,
    from_rpc_error,
)
from client.metadata import Backoff, MetadataCache, is_silent
from raftlog.v1 import headers

__all__ = [
    "ATTEMPT_TIMEOUT_S",
    "MAX_REDIRECTS",
    "Attempts",
    "LeaderCalls",
    "NodeRoute",
    "PartitionRoute",
    "Route",
    "UnaryCall",
    "Verdict",
    "leader_trailer",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

ATTEMPT_TIMEOUT_S = 1.0
"""Default deadline of one attempt: Raft elects a new leader within about a
second, so waiting longer on a silent node only delays the retry."""

MAX_REDIRECTS = 3
"""Hints followed in a row without a wait (two nodes that each name the
other must not spin)."""


class Verdict(enum.Enum):
    """What a caller's ``on_error`` hook decides about a failed attempt."""

    DEFAULT = "default"
    """The path's rules: retry a retriable error, raise the others."""
    RETRY_NOW = "retry_now"
    """Try again at once (the caller changed what made it fail)."""


class UnaryCall(Protocol[T_co]):
    """What a ``grpc.aio`` unary stub call returns: awaitable for the
    response, with the trailers once it has finished."""

    def __await__(self) -> Generator[Any, None, T_co]: ...

    async def trailing_metadata(self) -> Any: ...


class Route(Protocol):
    """Where the attempts of one request go, and what they teach."""

    async def address(self) -> str:
        """The address for the next attempt; raises a ``RaftlogError``
        (retriable when waiting helps) when there is none yet."""
        ...

    def moved(self, address: str) -> None:
        """A hint or a trailer named ``address`` as the one to ask."""
        ...

    def failed(self, address: str, error: RaftlogError) -> None:
        """An attempt at ``address`` failed with the retriable ``error``
        (and no hint to elsewhere)."""
        ...

    def answered(self, address: str) -> None:
        """An attempt at ``address`` was answered."""
        ...


class PartitionRoute:
    """The leader of ``topic``/``partition``, from the metadata cache."""

    __slots__ = ("_metadata", "partition", "topic")

    def __init__(self, metadata: MetadataCache, topic: str, partition: int) -> None:
        self._metadata = metadata
        self.topic = topic
        self.partition = partition

    async def address(self) -> str:
        return await self._metadata.require_leader(self.topic, self.partition)

    def moved(self, address: str) -> None:
        self._metadata.leader_moved(self.topic, self.partition, address)

    def failed(self, address: str, error: RaftlogError) -> None:
        if isinstance(error, BackpressureError):
            return  # the leader answered: it is busy, not gone
        self._metadata.forget_leader(self.topic, self.partition, address)

    def answered(self, address: str) -> None:
        pass


class NodeRoute:
    """Any node (admin calls) or the node a hint names (group calls): the
    last node that answered or was named, otherwise the cache's candidates
    in turn (suspect nodes last), moving on after each failure."""

    __slots__ = ("_metadata", "_next", "_preferred")

    def __init__(self, metadata: MetadataCache) -> None:
        self._metadata = metadata
        self._preferred: str | None = None
        self._next = 0

    async def address(self) -> str:
        if self._preferred:
            return self._preferred
        candidates = self._metadata.candidates()
        return candidates[self._next % len(candidates)]

    def moved(self, address: str) -> None:
        self._preferred = address

    def failed(self, address: str, error: RaftlogError) -> None:
        if self._preferred == address:
            self._preferred = None
        self._next += 1

    def answered(self, address: str) -> None:
        self._preferred = address


def leader_trailer(trailing_metadata: object) -> str:
    """The ``raftlog-leader`` trailer's address; "" when there is none."""
    if not trailing_metadata:
        return ""
    try:
        items = list(trailing_metadata)  # type: ignore[call-overload]
    except TypeError:
        return ""
    for item in items:
        if isinstance(item, tuple) and len(item) == 2 and item[0] == headers.LEADER:
            value = item[1]
            return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)
    return ""


def _hint(error: RaftlogError) -> str:
    if isinstance(error, NotLeaderError | NotCoordinatorError | OutcomeUnknownError):
        return error.leader_address
    return ""


class Attempts:
    """The retry state of one request (module docstring, steps 4-6)."""

    __slots__ = ("_calls", "_deadline", "_loop", "_redirects", "attempt", "last", "route")

    def __init__(self, calls: LeaderCalls, route: Route, deadline: float | None) -> None:
        self._calls = calls
        self.route = route
        self._deadline = deadline
        self._loop = asyncio.get_running_loop()
        self.attempt = 0  # failures waited for so far
        self._redirects = 0
        self.last: RaftlogError | None = None

    def timeout(self, extra_s: float = 0.0) -> float:
        """The next attempt's timeout; raises the last error (or a timeout)
        when the deadline has passed."""
        timeout = self._calls.attempt_timeout_s + extra_s
        if self._deadline is None:
            return timeout
        remaining = self._deadline - self._loop.time()
        if remaining <= 0:
            raise self.last or RequestTimeoutError("the request's deadline passed before an attempt")
        return min(timeout, remaining)

    def answered(self, address: str, trailer: str = "") -> None:
        """An attempt at ``address`` succeeded (``trailer``: its
        ``raftlog-leader``); the next failure starts the backoff anew."""
        if trailer and trailer != address:
            self.route.moved(trailer)
        else:
            self.route.answered(address)
        self.attempt = 0
        self._redirects = 0

    async def failed(self, address: str | None, error: RaftlogError, trailer: str = "") -> None:
        """Learn from ``error`` (an attempt at ``address``, None when none
        was made), then wait before the next attempt; raises ``error`` when
        it is not retriable or no attempt fits before the deadline."""
        self.last = error
        if trailer and trailer != address:
            self.route.moved(trailer)
        if not error.retriable:
            raise error
        if address is not None and is_silent(error):
            self._calls.metadata.node_failed(address)
        hint = _hint(error)
        if hint and hint != address:
            self.route.moved(hint)
            # NOT_LEADER/NOT_COORDINATOR: nothing happened, go at once.
            # OUTCOME_UNKNOWN: the new leader may not have the entry yet.
            redirect = isinstance(error, NotLeaderError | NotCoordinatorError)
            if redirect and self._redirects < self._calls.max_redirects and not error.retry_after_ms:
                self._redirects += 1
                return
        elif address is not None:
            self.route.failed(address, error)
        self._redirects = 0
        delay = max(self._calls.backoff.delay(self.attempt), error.retry_after_ms / 1000)
        self.attempt += 1
        if self._deadline is not None and self._loop.time() + delay >= self._deadline:
            raise error
        await asyncio.sleep(delay)


class LeaderCalls:
    """The call path of one client (its pool's stubs are made by the
    callers' ``invoke`` functions). Use from one event loop."""

    def __init__(
        self,
        metadata: MetadataCache,
        backoff: Backoff,
        *,
        attempt_timeout_s: float = ATTEMPT_TIMEOUT_S,
        max_redirects: int = MAX_REDIRECTS,
    ) -> None:
        if attempt_timeout_s <= 0:
            raise ValueError(f"attempt_timeout_s must be > 0, got {attempt_timeout_s}")
        self.metadata = metadata
        self.backoff = backoff
        self.attempt_timeout_s = attempt_timeout_s
        self.max_redirects = max_redirects

    def attempts(self, route: Route, deadline: float | None) -> Attempts:
        """Retry state for a request the caller drives itself (streams)."""
        return Attempts(self, route, deadline)

    async def call(
        self,
        route: Route,
        invoke: Callable[[str, float], UnaryCall[T]],
        *,
        deadline: float | None,
        extra_timeout_s: float = 0.0,
        prepare: Callable[[], Awaitable[None]] | None = None,
        on_error: Callable[[RaftlogError, bool], Verdict] | None = None,
    ) -> T:
        """``invoke(address, timeout)`` until it answers, as the module
        docstring says; ``deadline`` is event-loop time (None: retry until
        cancelled). ``on_error(error, sent)`` (``sent``: the attempt reached
        ``invoke``) sees each failure first."""
        attempts = Attempts(self, route, deadline)
        while True:
            address: str | None = None
            sent = False
            trailer = ""
            try:
                if prepare is not None:
                    await prepare()
                address = await route.address()
            except RaftlogError as exc:
                error = exc
            else:
                timeout = attempts.timeout(extra_timeout_s)  # raises once the deadline passed
                sent = True
                call = invoke(address, timeout)
                try:
                    response = await call
                except grpc.aio.AioRpcError as exc:
                    error = from_rpc_error(exc)
                    trailer = leader_trailer(exc.trailing_metadata())
                else:
                    attempts.answered(address, leader_trailer(await call.trailing_metadata()))
                    return response
            if on_error is not None and on_error(error, sent) is Verdict.RETRY_NOW:
                attempts.last = error
                continue
            await attempts.failed(address, error, trailer)
