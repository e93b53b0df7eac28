"""``raftlog.flags.v1.ExperimentService``: create, start, stop, list experiments, and their results.

Same front door as the flag admin API (flags/admin_service.py): the caller's
cluster API key -> ``Caller`` (``TenantKeys``), every read and write in the
caller's tenant, ``UNAVAILABLE NOT_READY`` until the follower has read the
log, errors as ``AdminError`` (flags/admin_errors.py). Writes are records of
the tenant's ``__flags`` topic (``FlagWriter.append_record``) under
``@experiment/<env>/<name>``; the ``ExperimentRegistry`` fed by ``LiveFlags``
decides them (flags/experiments/registry.py).

Invariants:

- Nothing is written for a refused request: names, the environment, the flag
  (two or more variants), the control (one of them), the metrics and the
  state are checked first.
- A write reports success only if the log accepted *its* record (the
  experiment's version is the record's offset + 1 once applied). When a
  concurrent write won, the winner's record is appended again (so the latest
  record under the key is the accepted state: registry docstring) and the
  caller gets the conflict (``EXPERIMENT_EXISTS`` or ``EXPERIMENT_STATE``).
- Start and stop record the end offsets of ``__exposures`` and ``__tracking``
  as they are when the request is handled; stop offsets and time are never
  before the start's.
- "who" is the caller's key id, never the key.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import grpc

from client.errors import RaftlogError
from flags.admin_calls import admin_call
from flags.admin_errors import AdminError, shown
from flags.admin_requests import bad_request, env_name, flag_key, unknown_env, unknown_flag
from flags.experiments.analyzer import ExperimentAnalyzer
from flags.experiments.model import (
    MAX_METRICS,
    Experiment,
    InvalidExperiment,
    Metric,
    MetricType,
    Offsets,
    State,
    check_event_name,
    check_experiment_name,
    encode_record,
)
from flags.experiments.registry import ExperimentRegistry, StoredExperiment
from flags.experiments.results import results_document
from flags.follower import Follower
from flags.live import LiveFlags
from flags.tenant_keys import Caller, TenantKeys
from flags.writer import FlagLogError, FlagWriter
from raftlog.flags.v1 import flags_pb2, flags_pb2_grpc

__all__ = ["ExperimentAdmin", "register_experiments"]

C = grpc.StatusCode


def register_experiments(
    server: grpc.aio.Server,
    *,
    live: LiveFlags,
    registry: ExperimentRegistry,
    writer: FlagWriter,
    follower: Follower,
    keys: TenantKeys,
    analyzer: ExperimentAnalyzer,
) -> None:
    """Add ``ExperimentService`` to ``server`` (the admin API's port)."""
    flags_pb2_grpc.add_ExperimentServiceServicer_to_server(
        ExperimentAdmin(live, registry, writer, follower, keys, analyzer), server
    )


_handled = admin_call(
    (FlagLogError, RaftlogError), "list the experiments first: the change may or may not have been made"
)


def unknown_experiment(env: str, name: str) -> AdminError:
    return AdminError(
        C.NOT_FOUND,
        "UNKNOWN_EXPERIMENT",
        f"no experiment {shown(name)} in environment {shown(env)}; list them with ListExperiments",
        {"environment": env, "experiment": name},
    )


def wrong_state(experiment: Experiment, wanted: str) -> AdminError:
    return AdminError(
        C.FAILED_PRECONDITION,
        "EXPERIMENT_STATE",
        f"experiment {shown(experiment.name)} is {experiment.state}; {wanted}",
        {"state": experiment.state.value},
    )


def invalid(message: str) -> AdminError:
    return bad_request("INVALID_EXPERIMENT", message)


def experiment_message(stored: StoredExperiment) -> flags_pb2.Experiment:
    e = stored.experiment
    message = flags_pb2.Experiment(
        environment=e.env,
        name=e.name,
        flag=e.flag,
        control=e.control,
        metrics=[flags_pb2.ExperimentMetric(event=m.event, type=m.type.value) for m in e.metrics],
        state=e.state.value,
        start_ms=e.start_ms or 0,
        stop_ms=e.stop_ms or 0,
        updated_by=e.who,
        updated_ms=e.when,
        version=stored.version,
    )
    if e.start_offsets is not None:
        message.start_offsets.CopyFrom(_offsets_message(e.start_offsets))
    if e.stop_offsets is not None:
        message.stop_offsets.CopyFrom(_offsets_message(e.stop_offsets))
    return message


def _offsets_message(offsets: Offsets) -> flags_pb2.ExperimentOffsets:
    return flags_pb2.ExperimentOffsets(exposures=offsets.exposures, tracking=offsets.tracking)


def _metrics(requested: Any) -> tuple[Metric, ...]:
    metrics: list[Metric] = []
    for item in requested:
        kind = item.type or MetricType.CONVERSION.value
        if kind not in (MetricType.CONVERSION.value, MetricType.VALUE.value):
            raise invalid(f"metric type {shown(kind)}: use conversion or value")
        if problem := check_event_name(item.event):
            raise invalid(f"metric {shown(item.event)}: {problem}")
        metric = Metric(item.event, MetricType(kind))
        if metric in metrics:
            raise invalid(f"metric {item.event}:{kind} is named twice")
        metrics.append(metric)
    if not 0 < len(metrics) <= MAX_METRICS:
        raise invalid(f"an experiment has 1-{MAX_METRICS} metrics (EVENT, EVENT:conversion or EVENT:value)")
    return tuple(metrics)


class ExperimentAdmin(flags_pb2_grpc.ExperimentServiceServicer):
    def __init__(
        self,
        live: LiveFlags,
        registry: ExperimentRegistry,
        writer: FlagWriter,
        follower: Follower,
        keys: TenantKeys,
        analyzer: ExperimentAnalyzer,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._live = live
        self._registry = registry
        self._writer = writer
        self._follower = follower
        self._keys = keys
        self._analyzer = analyzer
        self._clock = clock

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    def _name(self, name: str) -> str:
        if problem := check_experiment_name(name):
            raise bad_request("INVALID_NAME", problem)
        return name

    def _stored(self, tenant: str, env: str, name: str) -> StoredExperiment:
        stored = self._registry.get(tenant, env_name(env), self._name(name))
        if stored is None:
            raise unknown_experiment(env, name)
        return stored

    async def _write(
        self, tenant: str, experiment: Experiment, lost: Callable[[Experiment], AdminError]
    ) -> StoredExperiment:
        """Append ``experiment``'s record; the stored state if the log accepted it."""
        try:
            value = encode_record(experiment)
        except InvalidExperiment as error:
            raise invalid(str(error)) from None
        offset = await self._writer.append_record(tenant, experiment.key, value)
        stored = self._registry.get(tenant, experiment.env, experiment.name)
        if stored is not None and stored.version == offset + 1:
            self._analyzer.sync()
            return stored
        if stored is not None:  # another write won: make it the latest record under the key again
            await self._writer.append_record(tenant, experiment.key, stored.value)
            raise lost(stored.experiment)
        raise AdminError(C.ABORTED, "EXPERIMENT_STATE", "the experiment changed meanwhile; list and retry")

    # --- the RPCs ----------------------------------------------------------------------

    @_handled
    async def CreateExperiment(
        self, request: flags_pb2.CreateExperimentRequest, context: grpc.aio.ServicerContext, caller: Caller
    ) -> flags_pb2.CreateExperimentResponse:
        env = env_name(request.environment)
        name = self._name(request.name)
        store = self._live.store
        if not store.has_environment(caller.tenant, env):
            raise unknown_env(env)
        flag = store.flag(caller.tenant, env, flag_key(request.flag))
        if flag is None:
            raise unknown_flag(env, request.flag)
        variants = flag.flag.variants
        if len(variants) < 2:
            raise invalid(
                f"flag {shown(request.flag)} has {len(variants)} variant(s); an experiment compares two or more"
            )
        if request.control not in variants:
            raise invalid(
                f"control {shown(request.control)} is not a variant of {shown(request.flag)} "
                f"({', '.join(sorted(variants))})"
            )
        metrics = _metrics(request.metrics)

        def exists(current: Experiment) -> AdminError:
            return AdminError(
                C.ALREADY_EXISTS,
                "EXPERIMENT_EXISTS",
                f"experiment {shown(name)} exists in {shown(env)} ({current.state}); choose another name",
                {"environment": env, "experiment": name},
            )

        current = self._registry.get(caller.tenant, env, name)
        if current is not None:
            raise exists(current.experiment)
        now = self._now_ms()
        experiment = Experiment(
            env, name, request.flag, request.control, metrics, State.DRAFT, caller.key_id, now
        )
        stored = await self._write(caller.tenant, experiment, exists)
        return flags_pb2.CreateExperimentResponse(experiment=experiment_message(stored))

    @_handled
    async def StartExperiment(
        self, request: flags_pb2.StartExperimentRequest, context: grpc.aio.ServicerContext, caller: Caller
    ) -> flags_pb2.StartExperimentResponse:
        current = self._stored(caller.tenant, request.environment, request.name).experiment
        if current.state is not State.DRAFT:
            raise wrong_state(current, "only a draft can be started")
        offsets = await self._analyzer.end_offsets(caller.tenant)
        now = self._now_ms()
        started = dataclasses.replace(
            current, state=State.RUNNING, start_ms=now, start_offsets=offsets, who=caller.key_id, when=now
        )
        stored = await self._write(
            caller.tenant, started, lambda e: wrong_state(e, "it was started or changed meanwhile")
        )
        return flags_pb2.StartExperimentResponse(experiment=experiment_message(stored))

    @_handled
    async def StopExperiment(
        self, request: flags_pb2.StopExperimentRequest, context: grpc.aio.ServicerContext, caller: Caller
    ) -> flags_pb2.StopExperimentResponse:
        current = self._stored(caller.tenant, request.environment, request.name).experiment
        if current.state is not State.RUNNING or current.start_offsets is None or current.start_ms is None:
            raise wrong_state(current, "only a running experiment can be stopped")
        ends = await self._analyzer.end_offsets(caller.tenant)
        start = current.start_offsets
        # Never before the start (another server's clock; a re-created topic).
        offsets = Offsets(max(ends.exposures, start.exposures), max(ends.tracking, start.tracking))
        now = self._now_ms()
        stopped = dataclasses.replace(
            current,
            state=State.STOPPED,
            stop_ms=max(now, current.start_ms),
            stop_offsets=offsets,
            who=caller.key_id,
            when=now,
        )
        stored = await self._write(
            caller.tenant, stopped, lambda e: wrong_state(e, "it was stopped or changed meanwhile")
        )
        return flags_pb2.StopExperimentResponse(experiment=experiment_message(stored))

    @_handled
    async def ListExperiments(
        self, request: flags_pb2.ListExperimentsRequest, context: grpc.aio.ServicerContext, caller: Caller
    ) -> flags_pb2.ListExperimentsResponse:
        env = env_name(request.environment) if request.environment else None
        return flags_pb2.ListExperimentsResponse(
            experiments=[experiment_message(s) for s in self._registry.list(caller.tenant, env)]
        )

    @_handled
    async def GetExperimentResults(
        self,
        request: flags_pb2.GetExperimentResultsRequest,
        context: grpc.aio.ServicerContext,
        caller: Caller,
    ) -> flags_pb2.GetExperimentResultsResponse:
        experiment = self._stored(caller.tenant, request.environment, request.name).experiment
        if experiment.state is State.DRAFT:
            raise wrong_state(experiment, "start it first (results cover exposures from its start on)")
        self._analyzer.sync()
        attribution = self._analyzer.attribution(caller.tenant, experiment.env, experiment.name)
        if attribution is None:
            raise AdminError(
                C.UNAVAILABLE, "NOT_READY", "the analysis of this experiment is starting; retry shortly"
            )
        view = self._live.store.flag(caller.tenant, experiment.env, experiment.flag)
        document = results_document(experiment, attribution, None if view is None else view.flag)
        return flags_pb2.GetExperimentResultsResponse(
            results_json=json.dumps(document, separators=(",", ":"), allow_nan=False)
        )
