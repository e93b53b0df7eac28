"""What the evaluating surfaces (flagd RPC in flags/flagd_evaluation.py,
OFREP in flags/ofrep.py) need of the exposure writer: one synchronous
``record`` call per answer. ``flags/exposures.py``'s ``ExposureSink`` is the
implementation; tests pass lists.

Invariant (the implementation's promise, relied on by the callers): ``record``
never blocks and never raises — an evaluation is never slowed or failed by
the exposure log.
"""

from __future__ import annotations

from typing import Protocol

from flags.live import Scope

__all__ = ["ExposureRecorder"]


class ExposureRecorder(Protocol):
    def record(
        self,
        scope: Scope,
        flag: str,
        variant: str,
        reason: str,
        targeting_key: str,
        version: int,
        source: str,
    ) -> None: ...
