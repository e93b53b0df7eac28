"""Exposures accepted into the log through one flag server.

``measure_exposures`` (part of the ``ofrep`` step): load clients
(bench.ofrep_load, job ``exposures``) post ``batches`` batches of
``batch_size`` exposures to ``POST /raftlog/v1/exposures`` with a server
key, as the in-process OpenFeature hook does (flags/openfeature_hook.py:
batches of up to 1,000), every (targeting key, flag) pair once in the run,
so the server's dedup passes each one. The server hands each to its
``ExposureSink``, which batches them through its idempotent producer onto
the tenant's ``__exposures`` topic.

Why this path: it is the one whose volume is the exposure pipeline's own
(parse, dedup, buffer, produce) and not evaluation's: exposures reported by
server-side applications evaluating in-process, the high-volume source
(a backend evaluates per request, not per app start). Exposures from OFREP
and RPC evaluations take the same ``record`` → producer path after their
evaluation; the ``bulk`` run's exposures (100 per request) are counted the
same way and reported beside it (``details.ofrep.bulk.exposures_per_s``).

Counting: the figure is records *in the log*, not requests answered (a
``202`` only means handed to the sink, which drops when its buffer is full:
100,000 exposures per tenant). Before a run the topic's end offset is read
(after the sink has gone quiet: no records arriving for ``quiet_s``); after
it, the end offset is polled every ``poll_s`` until it stops moving for
``quiet_s``; then the range is read back and the records of this run
counted (``source`` ``hook`` and a targeting key of the run). The rate is
that count over the time from the clients' ``go`` to the first poll that
saw the final end offset (so at most ``poll_s`` late). Exposures sent but
not in the log are reported as ``dropped``.

Two runs: ``exposures_per_s`` is the **flat-out** one (the clients send
``batches`` batches as fast as the server answers: more than the sink can
write, so it drops; the figure is what a sustained overload still gets
into the log); ``details.exposures.paced`` then offers ``paced_per_s``
(the issue's target) for ``paced_seconds`` on fresh pairs: whether that
rate is carried without drops.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bench.ofrep_load import LoadSpec, run_load
from client.consumer import Consumer, OffsetReset
from flags.exposures import EXPOSURES_TOPIC

TP = (EXPOSURES_TOPIC, 0)


@dataclass(frozen=True)
class ExposureParams:
    batches: int = 600
    batch_size: int = 1000
    processes: int = 3
    connections: int = 4
    paced_per_s: float = 50_000.0
    """A second run offers this many exposures a second (0: none)."""
    paced_seconds: float = 6.0
    poll_s: float = 0.02
    quiet_s: float = 1.0
    timeout_s: float = 300.0


class LogEnd:
    """The end offset of the tenant's ``__exposures`` (0 while it does not exist)."""

    def __init__(self, bootstrap: Sequence[str], api_key: str, tenant: str) -> None:
        self.consumer = Consumer(
            bootstrap,
            api_key=api_key,
            tenant=tenant,
            auto_offset_reset=OffsetReset.EARLIEST,
            api_timeout_s=10,
        )
        self.consumer.assign([TP])

    async def now(self) -> int:
        await self.consumer.seek_to_end(TP)
        return self.consumer.position(TP) or 0

    async def settled(self, poll_s: float, quiet_s: float, timeout_s: float) -> tuple[int, float]:
        """Polls until the end has not moved for ``quiet_s``: (the end, the
        monotonic time of the first poll that saw it)."""
        deadline = time.monotonic() + timeout_s
        end = await self.now()
        seen_at = time.monotonic()
        while time.monotonic() - seen_at < quiet_s:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{EXPOSURES_TOPIC} still growing after {timeout_s:g} s")
            await asyncio.sleep(poll_s)
            current = await self.now()
            if current != end:
                end, seen_at = current, time.monotonic()
        return end, seen_at

    async def count(self, start: int, end: int, is_ours: Callable[[bytes, dict[str, Any]], bool]) -> int:
        """Records in ``[start, end)`` that ``is_ours(key, value)`` accepts
        (each value must be a documented exposure)."""
        self.consumer.seek(EXPOSURES_TOPIC, 0, start)
        found = position = 0
        position = start
        while position < end:
            for record in await self.consumer.poll(5.0, max_records=5000):
                if record.offset >= end:
                    break
                position = record.offset + 1
                doc = json.loads(record.value or b"null")
                if not isinstance(doc, dict) or doc.get("format") != 1:
                    raise RuntimeError(f"offset {record.offset}: not a documented exposure: {record.value!r}")
                found += is_ours(record.key or b"", doc)
        return found

    async def close(self) -> None:
        await self.consumer.close()


def _is_hook_exposure(key: bytes, doc: dict[str, Any]) -> bool:
    return doc.get("source") == "hook" and key.startswith(b"h-") and doc.get("targetingKey") == key.decode()


async def _run(
    host: str,
    port: int,
    spec: LoadSpec,
    log_end: LogEnd,
    params: ExposureParams,
    server_cpu_s: Callable[[], float] | None,
) -> dict[str, Any]:
    """One run of ``spec``, counted back from the log (module docstring)."""
    start, _ = await log_end.settled(params.poll_s, params.quiet_s, params.timeout_s)
    went: list[float] = []

    def on_go() -> None:
        went.extend((time.monotonic(), server_cpu_s() if server_cpu_s is not None else 0.0))

    load = await run_load(host, port, spec, on_go=on_go, timeout_s=params.timeout_s)
    # The last record may land after the last answer: wait for the end to settle.
    end, landed = await log_end.settled(params.poll_s, params.quiet_s, params.timeout_s)
    # (It includes the quiet wait at the end: the server is idle then.)
    server_cpu = None if server_cpu_s is None else server_cpu_s() - went[1]
    counted = await log_end.count(start, end, _is_hook_exposure)
    sent = spec.batches * spec.batch_size
    elapsed = landed - went[0]
    return {
        "exposures_per_s": round(counted / elapsed),
        "offered_per_s": round(spec.exposures_per_s) if spec.exposures_per_s else "flat out",
        "sent": sent,
        "in_log": counted,
        "dropped": sent - counted,
        "other_records_in_range": end - start - counted,
        "seconds_to_last_record": round(elapsed, 3),
        "requests_answered_s": load["seconds"],
        "requests_per_s": round(load["rps"], 1),
        "client_processes": load["client_processes"],
        "connections_per_process": load["connections_per_process"],
        "client_cpu_pct_each": load["client_cpu_pct_each"],
        "flag_server_cpu_pct": None if server_cpu is None else round(server_cpu / elapsed * 100, 1),
        "flag_server_cpu_us_per_exposure": (
            None if server_cpu is None or not counted else round(server_cpu / counted * 1e6, 2)
        ),
    }


async def measure_exposures(
    host: str,
    port: int,
    server_key: str,
    flags: Sequence[tuple[str, str]],
    bootstrap: Sequence[str],
    operator_key: str,
    tenant: str,
    params: ExposureParams,
    *,
    server_cpu_s: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """The figure (module docstring) and its details: the flat-out run, then
    (``paced_per_s``) a run offering that rate, on exposures of its own."""
    spec = LoadSpec(
        job="exposures",
        key=server_key,
        processes=params.processes,
        connections=params.connections,
        batches=params.batches,
        batch_size=params.batch_size,
        exposure_flags=tuple(flags),
    )
    log_end = LogEnd(bootstrap, operator_key, tenant)
    try:
        flat_out = await _run(host, port, spec, log_end, params, server_cpu_s)
        paced = None
        if params.paced_per_s > 0:
            batches = max(1, round(params.paced_per_s * params.paced_seconds / params.batch_size))
            paced_spec = replace(
                spec,
                batches=batches,
                exposures_per_s=params.paced_per_s,
                first_exposure=params.batches * params.batch_size,
            )
            paced = await _run(host, port, paced_spec, log_end, params, server_cpu_s)
    finally:
        await log_end.close()
    return {
        "exposures_per_s": flat_out.pop("exposures_per_s"),
        "details": {
            "path": "POST /raftlog/v1/exposures (the in-process hook's batches), server key",
            "batch_size": params.batch_size,
            **flat_out,
            "paced": paced,
        },
    }
