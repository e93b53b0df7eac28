"""``ExperimentAnalyzer``: every started experiment's attribution, fed from the log.

Each flag server runs one (``run()`` as a task of the server, ``close()`` on
shutdown). It watches the ``ExperimentRegistry`` (``generation``) and, for
each tenant with started experiments, keeps one ``Attribution`` per
experiment and reads the tenant's ``__exposures`` and ``__tracking`` topics
with one streaming ``Consumer`` each (the flag server's operator key acting
in the tenant), from the offsets recorded at start, feeding every record to
every attribution of the tenant (each takes what is in its window:
flags/experiments/attribution.py). The two topics are read independently;
attribution does not depend on their interleaving.

Invariants:

1. Every attribution is fed each record of its window once, in offset order
   per topic: a reader reads from the smallest position any unfinished
   attribution of its tenant still needs (``Attribution.next_*``), seeking
   back when an experiment that needs earlier records appears; records an
   attribution has already seen are skipped by it.
2. A stop recorded behind what an attribution already counted (the reader
   was ahead of the stop's end offsets) replaces it with a fresh one that
   reads its window again: results are always those of the recorded window.
3. Every server computes the same numbers from the same log (the window is
   offsets; attribution is deterministic while ``pending_dropped`` is 0).
4. Reader tasks are owned by ``run()``'s ``TaskGroup``; a tenant without
   started experiments has none; each closes its consumer when it ends.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from client.admin import Admin
from client.consumer import Consumer, FetchMode, OffsetReset
from client.errors import NotFoundError, RaftlogError, UnknownTopicOrPartitionError
from flags.event_records import EXPOSURES_TOPIC, TRACKING_TOPIC
from flags.experiments.attribution import Attribution, parse_exposure, parse_tracking
from flags.experiments.model import Experiment, Offsets
from flags.experiments.registry import ExperimentRegistry

__all__ = ["EXPOSURES_TOPIC", "TRACKING_TOPIC", "ExperimentAnalyzer"]

log = logging.getLogger(__name__)

SYNC_INTERVAL_S = 0.2
"""How often the registry is checked for started, stopped or removed experiments."""
POLL_TIMEOUT_S = 0.5
MAX_POLL_RECORDS = 5000
ERROR_BACKOFF_S = (0.2, 5.0)
OFFSETS_TIMEOUT_S = 10.0


@dataclass(slots=True)
class _Tenant:
    tenant: str
    generation: int = -1
    attributions: dict[tuple[str, str], Attribution] = field(default_factory=dict)
    experiments: dict[tuple[str, str], Experiment] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=lambda: {EXPOSURES_TOPIC: 0, TRACKING_TOPIC: 0})
    """Records that were not in the documented format, per topic."""


class ExperimentAnalyzer:
    """See the module docstring. ``api_key``: the flag server's operator key."""

    def __init__(
        self,
        registry: ExperimentRegistry,
        bootstrap: str | Sequence[str],
        api_key: str,
        *,
        attribution: Callable[[Experiment], Attribution] = Attribution,
        sync_interval_s: float = SYNC_INTERVAL_S,
    ) -> None:
        self._registry = registry
        self._bootstrap = bootstrap
        self._api_key = api_key
        self._make = attribution
        self._sync_interval_s = sync_interval_s
        self._tenants: dict[str, _Tenant] = {}
        self._group: asyncio.TaskGroup | None = None
        self._run_task: asyncio.Task[None] | None = None
        self._closed = False

    # --- running ---------------------------------------------------------------------

    async def run(self) -> None:
        """Follow the registry and read for every started experiment, until cancelled."""
        if self._run_task is not None or self._closed:
            raise RuntimeError("ExperimentAnalyzer.run() runs once, before close()")
        self._run_task = asyncio.current_task()
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                while True:
                    self.sync()
                    await asyncio.sleep(self._sync_interval_s)
        finally:
            self._group = None

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        task = self._run_task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            await asyncio.wait([task])

    def sync(self) -> None:
        """Bring the attributions in line with the registry now (``run`` does
        it every ``sync_interval_s``; the admin RPCs after a start or stop)."""
        tenants = set(self._registry.tenants()) | set(self._tenants)
        for tenant in sorted(tenants):
            state = self._tenants.get(tenant)
            generation = self._registry.generation(tenant)
            if state is None or state.generation != generation:
                started = {(e.env, e.name): e for e in self._registry.analysed(tenant)}
                if state is None:
                    if not started:
                        continue
                    state = self._tenants[tenant] = _Tenant(tenant)
                state.generation = generation
                self._update(state, started)
                state.changed.set()
            if not state.attributions:
                for task in state.tasks:
                    task.cancel()
                del self._tenants[tenant]
            elif not state.tasks and self._group is not None:
                for topic in (EXPOSURES_TOPIC, TRACKING_TOPIC):
                    state.tasks.append(
                        self._group.create_task(
                            self._read(state, topic), name=f"experiments-{tenant}-{topic}"
                        )
                    )

    def _update(self, state: _Tenant, started: dict[tuple[str, str], Experiment]) -> None:
        for key in [k for k in state.attributions if k not in started]:
            del state.attributions[key]
            del state.experiments[key]
        for key, experiment in started.items():
            known = state.experiments.get(key)
            if known == experiment:
                continue
            state.experiments[key] = experiment
            current = state.attributions.get(key)
            if current is not None and known is not None and known.start_offsets == experiment.start_offsets:
                stop = experiment.stop_offsets
                if stop is None or current.stop == stop or current.stop_at(stop):
                    continue
            # New, re-created, or stopped behind what was counted (invariant 2).
            state.attributions[key] = self._make(experiment)

    # --- reading ---------------------------------------------------------------------

    async def _read(self, state: _Tenant, topic: str) -> None:
        exposures = topic == EXPOSURES_TOPIC
        parse = parse_exposure if exposures else parse_tracking
        consumer = Consumer(
            self._bootstrap,
            api_key=self._api_key,
            tenant=state.tenant,
            fetch_mode=FetchMode.STREAM,
            auto_offset_reset=OffsetReset.EARLIEST,
            max_poll_records=MAX_POLL_RECORDS,
        )
        tp = (topic, 0)
        failures = 0
        position: int | None = None
        try:
            consumer.assign([tp])
            while True:
                wanted = self._wanted(state, exposures)
                if wanted is None:  # every attribution has its whole window
                    state.changed.clear()
                    await state.changed.wait()
                    continue
                if position != wanted:
                    consumer.seek(topic, 0, wanted)
                    position = wanted
                try:
                    records = await consumer.poll(POLL_TIMEOUT_S)
                except RaftlogError as error:
                    failures += 1
                    if (
                        failures == 1
                        or failures % 20 == 0
                        or not isinstance(error, UnknownTopicOrPartitionError | NotFoundError)
                    ):
                        log.info("experiments: reading %s/%s: %s (retrying)", state.tenant, topic, error)
                    first, longest = ERROR_BACKOFF_S
                    await asyncio.sleep(min(first * 2 ** min(failures - 1, 10), longest))
                    position = None  # seek again: the partition idles after an error
                    continue
                failures = 0
                if not records:
                    continue
                attributions = list(state.attributions.values())
                for record in records:
                    parsed = parse(record.value)
                    if parsed is None:
                        state.skipped[topic] += 1
                    for attribution in attributions:
                        if exposures:
                            attribution.add_exposure(record.offset, parsed)  # type: ignore[arg-type]
                        else:
                            attribution.add_tracking(record.offset, parsed)  # type: ignore[arg-type]
                position = records[-1].offset + 1
        finally:
            await consumer.close()

    @staticmethod
    def _wanted(state: _Tenant, exposures: bool) -> int | None:
        """Invariant 1: the smallest position an unfinished attribution needs."""
        needed = [
            (a.next_exposure if exposures else a.next_tracking)
            for a in state.attributions.values()
            if a.stop is None
            or (a.next_exposure < a.stop.exposures if exposures else a.next_tracking < a.stop.tracking)
        ]
        return min(needed) if needed else None

    # --- reading the state -----------------------------------------------------------

    def attribution(self, tenant: str, env: str, name: str) -> Attribution | None:
        """The experiment's attribution now (None: not started here yet)."""
        state = self._tenants.get(tenant)
        return None if state is None else state.attributions.get((env, name))

    def skipped(self, tenant: str) -> dict[str, int]:
        state = self._tenants.get(tenant)
        return {} if state is None else dict(state.skipped)

    async def end_offsets(self, tenant: str) -> Offsets:
        """The end offsets of the tenant's ``__exposures`` and ``__tracking``
        now (0 for a topic not created yet: it will be read from its start).
        Raises the SDK's ``RaftlogError`` when the cluster does not answer."""
        ends: dict[str, int] = {}
        async with Admin(
            self._bootstrap, api_key=self._api_key, tenant=tenant, timeout_s=OFFSETS_TIMEOUT_S
        ) as admin:
            for topic in (EXPOSURES_TOPIC, TRACKING_TOPIC):
                try:
                    await admin.describe_topic(topic)
                except NotFoundError:  # (a consumer would wait for its leader instead)
                    ends[topic] = 0
        missing = [t for t in (EXPOSURES_TOPIC, TRACKING_TOPIC) if t not in ends]
        if missing:
            async with Consumer(
                self._bootstrap, api_key=self._api_key, tenant=tenant, api_timeout_s=OFFSETS_TIMEOUT_S
            ) as consumer:
                consumer.assign([(topic, 0) for topic in missing])
                for topic in missing:
                    await consumer.seek_to_end((topic, 0))
                    ends[topic] = consumer.position((topic, 0)) or 0
        return Offsets(exposures=ends[EXPOSURES_TOPIC], tracking=ends[TRACKING_TOPIC])
