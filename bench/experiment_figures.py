"""Experiment results over 1,000,000 exposures, answered by the flag server.

``measure_experiment`` (the ``ofrep`` step's last part):

1. creates an experiment on ``EXPERIMENT_FLAG`` (a 50/50 ``fractional`` flag
   of the bench environment, variants ``control`` and ``treatment``) with a
   conversion metric ``purchase``, and starts it through
   ``ExperimentService`` (the start records the end offsets of the tenant's
   ``__exposures`` and ``__tracking``: analysis reads from there);
2. writes ``exposures`` exposure records straight to ``__exposures`` (the
   documented format, ``flags.exposures.encode_exposure``; key = targeting
   key) with ``client.Producer`` and the operator key acting in the tenant,
   as flag servers would have written them over days: ``exposures / 2``
   users, each exposed twice (the same variant: the split is by user), then
   one ``purchase`` tracking record (``encode_tracking``) for every tenth
   user, all after that user's exposures;
3. stops the experiment once every record is acknowledged (the stop
   records the end offsets: the window is then exactly these records), and
   asks ``GetExperimentResults`` every ``poll_s`` until
   ``analysis.complete`` (the server's analyzer has read the whole window):
   ``experiment_catchup_s`` is the time from the stop to that answer
   (``details``: also from the first record written: the analyzer reads
   while the writer writes);
4. checks the answer against what was written (users, exposures,
   conversions per variant), then times ``calls`` more
   ``GetExperimentResults`` calls one at a time from this process:
   ``experiment_results_ms`` is the **slowest** of them (the target is
   "every answer under a second"), ``experiment_results_p50_ms`` their
   median.

Invariants: the figures are only reported when the results match the
written records exactly; the write is not part of any figure (it is the
cluster's produce rate, measured by the ``cluster`` step).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from bench.percentiles import percentile
from client.admin import Admin
from client.errors import AlreadyExistsError
from client.producer import Producer
from flags.exposures import (
    EXPOSURES_TOPIC,
    RETENTION_MS,
    TRACKING_TOPIC,
    TrackingEvent,
    encode_exposure,
    encode_tracking,
)
from raftlog.flags.v1 import flags_pb2, flags_pb2_grpc

EXPERIMENT_FLAG = "bench-experiment"
EXPERIMENT = "bench-checkout"
VARIANTS = ("control", "treatment")
METRIC = "purchase"
CONVERTING_EVERY = 10
"""One user in this many converts."""


def experiment_flag() -> dict[str, Any]:
    return {
        "state": "ENABLED",
        "variants": {"control": False, "treatment": True},
        "defaultVariant": "control",
        "targeting": {"fractional": [["control", 50], ["treatment", 50]]},
    }


@dataclass(frozen=True)
class ExperimentParams:
    exposures: int = 1_000_000
    calls: int = 20
    poll_s: float = 0.05
    catchup_timeout_s: float = 300.0


def planned_users(exposures: int) -> int:
    return exposures // 2


def variant_of(user: int) -> str:
    return VARIANTS[user % 2]


def expected_results(exposures: int) -> dict[str, dict[str, int]]:
    """Per variant: users and conversions the written records make."""
    users = planned_users(exposures)
    found = {v: {"users": 0, "conversions": 0} for v in VARIANTS}
    for variant_index, variant in enumerate(VARIANTS):
        count = len(range(variant_index, users, 2))
        found[variant]["users"] = count
        found[variant]["conversions"] = len(
            [u for u in range(0, users, CONVERTING_EVERY) if u % 2 == variant_index]
        )
    return found


def exposure_records(env: str, exposures: int, ts_ms: int) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of every exposure record, in write order (generated: 1,000,000
    records held at once would be a few hundred MB)."""
    users = planned_users(exposures)
    for round_ in range(2):
        for user in range(users):
            key = f"x-{user:07d}"
            value = encode_exposure(
                env, EXPERIMENT_FLAG, variant_of(user), "SPLIT", key, 3, "rpc", ts_ms + round_
            )
            yield key.encode(), value


def tracking_records(env: str, exposures: int, ts_ms: int) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) of every tracking record: a purchase of every tenth user."""
    for user in range(0, planned_users(exposures), CONVERTING_EVERY):
        key = f"x-{user:07d}"
        yield key.encode(), encode_tracking(env, TrackingEvent(METRIC, key), ts_ms)


async def _ensure_topics(bootstrap: Sequence[str], operator_key: str, tenant: str) -> None:
    """The topics as flags/exposures.py creates them (they usually exist by now)."""
    async with Admin(bootstrap, api_key=operator_key, tenant=tenant) as admin:
        for topic in (EXPOSURES_TOPIC, TRACKING_TOPIC):
            with contextlib.suppress(AlreadyExistsError):
                await admin.create_topic(topic, 1, 0, cleanup_policy="delete", retention_ms=RETENTION_MS)


async def _write(
    bootstrap: Sequence[str], operator_key: str, tenant: str, batches: Sequence[Iterable[tuple[bytes, bytes]]]
) -> None:
    async with Producer(bootstrap, api_key=operator_key, tenant=tenant, idempotent=True) as producer:
        for topic, batch in zip((EXPOSURES_TOPIC, TRACKING_TOPIC), batches, strict=True):
            last = None
            for key, value in batch:
                last = await producer.send(topic, value, key=key, partition=0)
            if last is not None:
                await last
        await producer.flush()


async def measure_experiment(
    eval_address: str,
    bootstrap: Sequence[str],
    operator_key: str,
    tenant: str,
    env: str,
    params: ExperimentParams,
    *,
    server_cpu_s: Callable[[], float] | None = None,
) -> dict[str, Any]:
    """The figures (module docstring) and their details."""
    metadata = (("authorization", f"Bearer {operator_key}"), ("raftlog-tenant", tenant))
    await _ensure_topics(bootstrap, operator_key, tenant)
    ts_ms = time.time_ns() // 1_000_000
    tracking_count = len(range(0, planned_users(params.exposures), CONVERTING_EVERY))
    async with grpc.aio.insecure_channel(eval_address) as channel:
        stub = flags_pb2_grpc.ExperimentServiceStub(channel)
        await stub.CreateExperiment(
            flags_pb2.CreateExperimentRequest(
                environment=env,
                name=EXPERIMENT,
                flag=EXPERIMENT_FLAG,
                control=VARIANTS[0],
                metrics=[flags_pb2.ExperimentMetric(event=METRIC, type="conversion")],
            ),
            metadata=metadata,
            timeout=30,
        )
        await stub.StartExperiment(
            flags_pb2.StartExperimentRequest(environment=env, name=EXPERIMENT), metadata=metadata, timeout=30
        )
        cpu0 = None if server_cpu_s is None else server_cpu_s()
        write_started = time.monotonic()
        await _write(
            bootstrap,
            operator_key,
            tenant,
            (
                exposure_records(env, params.exposures, ts_ms),
                tracking_records(env, params.exposures, ts_ms + 2),
            ),
        )
        written = time.monotonic()
        await stub.StopExperiment(
            flags_pb2.StopExperimentRequest(environment=env, name=EXPERIMENT), metadata=metadata, timeout=30
        )
        request = flags_pb2.GetExperimentResultsRequest(environment=env, name=EXPERIMENT)

        async def results() -> dict[str, Any]:
            answer = await stub.GetExperimentResults(request, metadata=metadata, timeout=30)
            document: dict[str, Any] = json.loads(answer.results_json)
            return document

        deadline = written + params.catchup_timeout_s
        while True:
            try:
                document = await results()
            except grpc.aio.AioRpcError as error:
                if error.code() is not grpc.StatusCode.UNAVAILABLE:  # NOT_READY: starting
                    raise
                document = {"analysis": {"complete": False}}
            if document["analysis"]["complete"]:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the analysis was not complete after {params.catchup_timeout_s:g} s: {document}"
                )
            await asyncio.sleep(params.poll_s)
        caught_up = time.monotonic()
        analyzer_cpu = None if cpu0 is None or server_cpu_s is None else server_cpu_s() - cpu0
        check_results(document, params.exposures)
        timings = []
        for _ in range(params.calls):
            t0 = time.perf_counter()
            await results()
            timings.append((time.perf_counter() - t0) * 1000)
    ordered = sorted(timings)
    return {
        "experiment_results_ms": round(ordered[-1], 2),
        "experiment_results_p50_ms": round(percentile(ordered, 50), 2),
        "experiment_catchup_s": round(caught_up - written, 2),
        "details": {
            "exposures": params.exposures,
            "users": planned_users(params.exposures),
            "tracking_records": tracking_count,
            "calls": params.calls,
            "write_s": round(written - write_started, 2),
            "written_to_complete_s": round(caught_up - written, 2),
            "first_write_to_complete_s": round(caught_up - write_started, 2),
            "results_json_bytes": len(json.dumps(document)),
            # The server's CPU from the first record written to the analysis
            # complete: reading and attributing (the write is the cluster's).
            "flag_server_cpu_s": None if analyzer_cpu is None else round(analyzer_cpu, 2),
            "flag_server_cpu_us_per_exposure": (
                None
                if analyzer_cpu is None
                else round(analyzer_cpu / (params.exposures + tracking_count) * 1e6, 2)
            ),
        },
    }


def check_results(document: dict[str, Any], exposures: int) -> None:
    """Raises unless ``document`` counts exactly the written records."""
    analysis = document["analysis"]
    tracking = len(range(0, planned_users(exposures), CONVERTING_EVERY))
    if analysis["exposures"] != exposures or analysis["tracking"] != tracking:
        raise RuntimeError(
            f"the analysis counted {analysis}, not {exposures} exposures and {tracking} events"
        )
    rows = {row["variant"]: row for row in document["metrics"][0]["variants"]}
    for variant, wanted in expected_results(exposures).items():
        row = rows.get(variant)
        found = None if row is None else {"users": row["users"], "conversions": row["conversions"]}
        if found != wanted:
            raise RuntimeError(f"variant {variant}: the results say {found}, the records {wanted}")
