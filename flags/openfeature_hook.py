"""Exposures and ``track()`` from in-process OpenFeature evaluation to a flag server.

In-process evaluation (the flagd provider's IN_PROCESS mode) never calls the
flag server per evaluation, so the server cannot record exposures itself. This
module gives such an application:

- ``ExposureHook``: an OpenFeature ``Hook`` whose ``after`` stage reports each
  evaluation that has a targeting key and a variant (flag, variant, reason,
  targeting key) to ``POST /raftlog/v1/exposures``;
- ``enable_tracking(provider, reporter)``: makes OpenFeature's
  ``client.track(name, context, TrackingEventDetails(value, attributes))``
  (which the SDK hands to ``provider.track``; hooks never see it) post to
  ``POST /raftlog/v1/track``.

Both go through one ``EventReporter``: bounded queues drained by one daemon
thread that posts batches (standard library HTTP, the server key as
``Authorization: Bearer``). Usage::

    reporter = EventReporter("http://flags.internal:8016", server_key)
    client.add_hooks([ExposureHook(reporter)])
    enable_tracking(provider, reporter)
    ...
    reporter.close()          # at exit: sends what is queued (bounded wait)

Invariants:

- Evaluation and ``track()`` never block on the network and never raise:
  they append to a bounded queue (``max_queued`` each) or count a drop.
- A batch the server refuses (4xx) is dropped and counted (``rejected``),
  never retried; a batch that failed in transit (no answer, 5xx) is retried
  ``retries`` times with backoff, then dropped and counted (``failed``).
- At most one request is in flight (one thread): a slow server slows the
  reports down and the queues absorb, then drop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.flag_evaluation import FlagEvaluationDetails, FlagValueType
from openfeature.hook import Hook, HookContext, HookHints
from openfeature.provider import FeatureProvider
from openfeature.track import TrackingEventDetails

__all__ = ["EventReporter", "ExposureHook", "ReporterStats", "enable_tracking"]

EXPOSURES_PATH = "/raftlog/v1/exposures"
TRACK_PATH = "/raftlog/v1/track"
EXPOSURE_BATCH = 1000
TRACK_BATCH = 100

log = logging.getLogger(__name__)

Poster = Callable[[str, bytes], int]
"""(path, JSON body) -> HTTP status; raises OSError when no answer came."""


@dataclass(frozen=True, slots=True)
class ReporterStats:
    queued: int
    sent: int
    dropped: int
    """The queue was full (or the reporter closed)."""
    rejected: int
    """Refused by the server (4xx): a bad key or a bad event."""
    failed: int
    """No answer or 5xx after every retry."""


class EventReporter:
    """Posts exposures and tracking events to a flag server from a daemon thread."""

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        max_queued: int = 10_000,
        interval_s: float = 1.0,
        timeout_s: float = 5.0,
        retries: int = 2,
        poster: Poster | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._key = key
        self._max_queued = max_queued
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._retries = retries
        self._post = poster or self._urllib_post
        self._exposures: deque[dict[str, str]] = deque()
        self._events: deque[dict[str, Any]] = deque()
        self._wake = threading.Event()
        self._idle = threading.Condition()
        self._busy = False
        self._closed = False
        self._sent = self._dropped = self._rejected = self._failed = 0
        self._thread = threading.Thread(target=self._run, name="raftlog-flag-events", daemon=True)
        self._thread.start()

    # --- producers (any thread; never block) ---------------------------------------------

    def exposure(self, flag: str, variant: str, reason: str, targeting_key: str) -> None:
        self._offer(
            self._exposures,
            {"flag": flag, "variant": variant, "reason": reason, "targetingKey": targeting_key},
        )

    def event(
        self,
        name: str,
        targeting_key: str,
        value: float | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> None:
        item: dict[str, Any] = {"name": name, "targetingKey": targeting_key}
        if value is not None:
            item["value"] = value
        if attributes:
            item["attributes"] = dict(attributes)
        self._offer(self._events, item)

    def _offer(self, queue: deque[Any], item: Any) -> None:
        # deque.append is atomic; the length check may race by a few items, which the bound tolerates.
        if self._closed or len(queue) >= self._max_queued:
            self._dropped += 1
            return
        queue.append(item)
        if len(queue) >= EXPOSURE_BATCH // 2:
            self._wake.set()

    @property
    def stats(self) -> ReporterStats:
        return ReporterStats(
            len(self._exposures) + len(self._events), self._sent, self._dropped, self._rejected, self._failed
        )

    # --- the thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            self._wake.wait(self._interval_s)
            self._wake.clear()
            with self._idle:
                self._busy = True
            try:
                self._drain(self._exposures, EXPOSURES_PATH, "exposures", EXPOSURE_BATCH)
                self._drain(self._events, TRACK_PATH, "events", TRACK_BATCH)
            except Exception:  # never let the thread die: reports would queue up forever
                log.exception("flag event reporter")
            with self._idle:
                self._busy = False
                self._idle.notify_all()
            if self._closed and not self._exposures and not self._events:
                return

    def _drain(self, queue: deque[Any], path: str, field: str, batch_size: int) -> None:
        while queue:
            batch: list[Any] = []
            while queue and len(batch) < batch_size:
                batch.append(queue.popleft())
            body = json.dumps({field: batch}, separators=(",", ":")).encode()
            self._send(path, body, len(batch))

    def _send(self, path: str, body: bytes, count: int) -> None:
        for attempt in range(self._retries + 1):
            try:
                status = self._post(path, body)
            except OSError as error:
                status = 0
                reason = str(error)
            else:
                reason = f"HTTP {status}"
            if 200 <= status < 300:
                self._sent += count
                return
            if 400 <= status < 500 and status != 429:
                self._rejected += count
                log.warning("flag server refused %d report(s) to %s: %s", count, path, reason)
                return
            if attempt < self._retries and not self._closed:
                time.sleep(min(0.1 * 2**attempt, 2.0))
        self._failed += count
        log.warning("%d report(s) to %s not delivered: %s", count, path, reason)

    def _urllib_post(self, path: str, body: bytes) -> int:
        request = urllib.request.Request(
            self._base_url + path,
            data=body,
            method="POST",
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self._key}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_s) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)

    # --- lifecycle -----------------------------------------------------------------------

    def flush(self, timeout_s: float = 5.0) -> bool:
        """Send what is queued now; whether the queues emptied within ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        self._wake.set()
        with self._idle:
            while self._exposures or self._events or self._busy or self._wake.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self._thread.is_alive():
                    return False
                self._idle.wait(min(remaining, 0.05))
        return True

    def close(self, timeout_s: float = 5.0) -> None:
        """Send what is queued (for at most ``timeout_s``) and stop the thread."""
        with contextlib.suppress(Exception):
            self.flush(timeout_s)
        self._closed = True
        self._wake.set()
        self._thread.join(timeout_s)


class ExposureHook(Hook):
    """Reports every evaluation with a targeting key and a variant as an exposure."""

    def __init__(self, reporter: EventReporter) -> None:
        self.reporter = reporter

    def after(
        self, hook_context: HookContext, details: FlagEvaluationDetails[FlagValueType], hints: HookHints
    ) -> None:
        targeting_key = hook_context.evaluation_context.targeting_key
        variant = details.variant
        if not targeting_key or not variant or details.error_code is not None:
            return
        reason = details.reason
        reason_text = getattr(reason, "value", reason) or "UNKNOWN"
        self.reporter.exposure(details.flag_key, variant, str(reason_text), targeting_key)


def enable_tracking(provider: FeatureProvider, reporter: EventReporter) -> FeatureProvider:
    """Make ``provider.track`` (what ``client.track`` calls) report to the flag
    server, keeping everything else the provider does (events, status). An
    event without a targeting key in its merged context is dropped (counted):
    it could never be attributed."""

    def track(
        tracking_event_name: str,
        evaluation_context: EvaluationContext | None = None,
        tracking_event_details: TrackingEventDetails | None = None,
    ) -> None:
        targeting_key = evaluation_context.targeting_key if evaluation_context is not None else None
        if not targeting_key:
            reporter._dropped += 1
            return
        details = tracking_event_details or TrackingEventDetails()
        reporter.event(tracking_event_name, targeting_key, details.value, details.attributes)

    setattr(provider, "track", track)  # noqa: B010 (an instance attribute shadows the method, on purpose)
    return provider
