"""The drill's workload: producers writing unique values, consumers reading
everything, each attempt and read recorded in the ``History``.

Producers: ``producers`` of them (acks=all; idempotent unless the
negative control turns it off), each placed next to a node (its location,
round robin) so network partitions cut clients off too. A client acts in
one tenant, so each producer is one SDK ``Producer`` per tenant, each with
that tenant's API key. Together they send about ``rate`` records per
second; each producer writes every partition of every topic of every
tenant in turn, so each (producer, partition) is one ordered stream. A
value names its tenant, topic, partition, producer and sequence number, so
it is unique in the drill.

Outcomes: an acknowledgement is ``ok`` with its offset. A refusal that
cannot have written anything (invalid request, unknown topic, fenced
producer, sequence gap, refused before sending) is ``failed``. Everything
else (timeouts, unavailable nodes, outcome unknown, the producer closed or
giving up) is ``unknown``: the record may or may not be in the log.

Consumers: one group per tenant. The SDK's consumer groups
(``Consumer(group_id=...).subscribe``) are not used here yet:
``AssignedGroup`` stands in for one. Its members split the partitions
between them with ``Consumer.assign``, read from offset 0, and every
``commit_interval_s`` record their position as the group's committed offset
(``History.commits``, nothing is committed to the server), which is exactly
what a group member would commit. A workload driving a real group would
``subscribe`` and commit through the coordinator instead, recording the
same reads and commits.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from chaos.cluster import TP, ChaosCluster, TopicTarget
from chaos.history import Attempt, Commit, History, Outcome, Read
from client import Consumer, Producer, RecordMetadata
from client.errors import (
    InvalidRequestError,
    OutOfOrderSequenceError,
    ProducerFencedError,
    RaftlogError,
    RecordTooLargeError,
    UnknownProducerIdError,
    UnknownTopicOrPartitionError,
)

__all__ = ["AssignedGroup", "Workload", "WorkloadSpec", "classify"]

_DEFINITE = (
    InvalidRequestError,
    RecordTooLargeError,
    UnknownTopicOrPartitionError,
    ProducerFencedError,
    OutOfOrderSequenceError,
    UnknownProducerIdError,
)


def classify(error: BaseException) -> Outcome:
    """``failed`` only for errors after which nothing can have been written."""
    return Outcome.FAILED if isinstance(error, _DEFINITE) else Outcome.UNKNOWN


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    topics: tuple[TopicTarget, ...]
    producers: int = 4
    rate: float = 120.0
    idempotent: bool = True
    consumers: int = 2
    request_timeout_s: float = 2.0
    delivery_timeout_s: float = 15.0
    commit_interval_s: float = 1.0


class AssignedGroup:
    """Stand-in for a consumer group (see the module docstring): ``run``
    reads (and records commits) until ``finish`` says to stop."""

    def __init__(
        self,
        name: str,
        partitions: Sequence[TP],
        consumers: Sequence[Consumer],
        history: History,
        commit_interval_s: float = 1.0,
    ) -> None:
        self.name = name
        self.history = history
        self.consumers = list(consumers)
        self.assignment = {
            i: [tp for k, tp in enumerate(partitions) if k % len(consumers) == i]
            for i in range(len(consumers))
        }
        self.commit_interval_s = commit_interval_s
        self._reads: dict[TP, int] = {tp: 0 for tp in partitions}
        self._committed: dict[TP, int] = {}
        self._ends: Mapping[TP, int] | None = None
        self._deadline: float | None = None
        self.errors: dict[str, int] = {}

    def finish(self, ends: Mapping[TP, int] | None, timeout_s: float) -> None:
        """Stop once every partition was read up to ``ends`` (its high
        watermark after the drill), or after ``timeout_s``."""
        self._ends = dict(ends) if ends is not None else {}
        self._deadline = asyncio.get_running_loop().time() + timeout_s

    def _done(self, consumer: Consumer, partitions: list[TP]) -> bool:
        if self._deadline is None:
            return False
        if asyncio.get_running_loop().time() >= self._deadline:
            return True
        assert self._ends is not None
        return all((consumer.position(tp) or 0) >= self._ends.get(tp, 0) for tp in partitions)

    def _commit(self, consumer: Consumer, partitions: list[TP]) -> None:
        for tp in partitions:
            position = consumer.position(tp)
            if position is not None and position > self._committed.get(tp, -1):
                self._committed[tp] = position
                self.history.commits.append(
                    Commit(self.name, tp[0], tp[1], position, self._reads[tp], self.history.clock())
                )

    async def _member(self, consumer: Consumer, partitions: list[TP]) -> None:
        consumer.assign(partitions)
        for topic, partition in partitions:
            consumer.seek(topic, partition, 0)
        loop = asyncio.get_running_loop()
        next_commit = loop.time() + self.commit_interval_s
        try:
            while not self._done(consumer, partitions):
                try:
                    records = await consumer.poll(0.3)
                except RaftlogError as exc:
                    self.errors[exc.reason] = self.errors.get(exc.reason, 0) + 1
                    await asyncio.sleep(0.2)
                    continue
                now = self.history.clock()
                for r in records:
                    tp = (r.topic, r.partition)
                    self.history.reads.append(
                        Read(self.name, r.topic, r.partition, r.offset, r.value or b"", now)
                    )
                    self._reads[tp] += 1
                if loop.time() >= next_commit:
                    self._commit(consumer, partitions)
                    next_commit = loop.time() + self.commit_interval_s
            self._commit(consumer, partitions)
        finally:
            await consumer.close()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            for i, consumer in enumerate(self.consumers):
                if self.assignment[i]:
                    tasks.create_task(self._member(consumer, self.assignment[i]))
                else:
                    tasks.create_task(consumer.close())


class Workload:
    """Producers and consumer parts over ``cluster``; see the module docstring."""

    def __init__(
        self, spec: WorkloadSpec, cluster: ChaosCluster, history: History, rng: random.Random
    ) -> None:
        self.spec = spec
        self.cluster = cluster
        self.history = history
        self.rng = rng
        self.partitions: list[tuple[TopicTarget, int]] = [
            (t, p) for t in spec.topics for p in range(t.partitions)
        ]
        self.tenants = sorted({t.tenant for t in spec.topics})
        self._stop = asyncio.Event()
        self.producers: list[Producer] = []
        self.producer_stats: list[dict[str, Any]] = []
        self.consumers: list[AssignedGroup] = []
        self._producer_tasks: list[asyncio.Task[None]] = []
        self._consumer_tasks: list[asyncio.Task[None]] = []

    def location(self, index: int) -> int:
        nodes = self.cluster.node_ids
        return nodes[index % len(nodes)]

    def _client_kwargs(self, location: int, tenant: str) -> dict[str, Any]:
        return {"address_map": self.cluster.address_map(location), "api_key": self.cluster.key_for(tenant)}

    def start(self) -> None:
        spec = self.spec
        for k in range(spec.producers):
            # One SDK producer per tenant (a client acts in one tenant), all
            # at this producer's location.
            mine = {
                tenant: Producer(
                    self.cluster.bootstrap,
                    linger_ms=2.0,
                    idempotent=spec.idempotent,
                    request_timeout_s=spec.request_timeout_s,
                    delivery_timeout_s=spec.delivery_timeout_s,
                    retry_backoff_max_ms=500.0,
                    metadata_timeout_s=5.0,
                    **self._client_kwargs(self.location(k), tenant),
                )
                for tenant in self.tenants
            }
            self.producers.extend(mine.values())
            self._producer_tasks.append(
                asyncio.create_task(self._produce(k, mine), name=f"chaos-producer-{k}")
            )
        if spec.consumers:
            for tenant in self.tenants:
                consumers = [
                    Consumer(
                        self.cluster.bootstrap,
                        request_timeout_s=spec.request_timeout_s,
                        fetch_max_wait_ms=300,
                        api_timeout_s=10.0,
                        **self._client_kwargs(self.location(k + 1), tenant),
                    )
                    for k in range(spec.consumers)
                ]
                tps = [(t.topic, p) for t, p in self.partitions if t.tenant == tenant]
                group = AssignedGroup(f"g-{tenant}", tps, consumers, self.history, spec.commit_interval_s)
                self.consumers.append(group)
                self._consumer_tasks.append(
                    asyncio.create_task(group.run(), name=f"chaos-consumers-{tenant}")
                )

    async def _produce(self, k: int, producers: Mapping[str, Producer]) -> None:
        interval = self.spec.producers / self.spec.rate
        order = list(self.partitions)
        self.rng.shuffle(order)
        seqs = [0] * len(order)
        i = 0
        while not self._stop.is_set():
            index = i % len(order)
            target, partition = order[index]
            seq = seqs[index]
            seqs[index] += 1
            i += 1
            value = f"{target.tenant}/{target.topic}/{partition}/p{k}/{seq}".encode()
            attempt = Attempt(value, target.tenant, target.topic, partition, k, seq, self.history.clock())
            self.history.attempts.append(attempt)
            try:
                future = await producers[target.tenant].send(target.topic, value, partition=partition)
            except RaftlogError as exc:
                attempt.fail(Outcome.FAILED, f"not sent: {exc.reason}", self.history.clock())
            else:
                future.add_done_callback(self._resolver(attempt, target.topic, partition))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(interval * self.rng.uniform(0.5, 1.5)):
                    await self._stop.wait()

    def _resolver(
        self, attempt: Attempt, topic: str, partition: int
    ) -> Callable[[asyncio.Future[RecordMetadata]], None]:
        def resolve(future: asyncio.Future[RecordMetadata]) -> None:
            now = self.history.clock()
            if future.cancelled():
                attempt.fail(Outcome.UNKNOWN, "cancelled", now)
                return
            error = future.exception()
            if error is None:
                meta = future.result()
                assert (meta.topic, meta.partition) == (topic, partition), meta
                attempt.succeed(meta.offset, now)
            else:
                reason = getattr(error, "reason", type(error).__name__)
                attempt.fail(classify(error), str(reason), now)

        return resolve

    async def stop_producing(self, close_timeout_s: float = 20.0) -> None:
        """Stop sending; wait for what was sent (at most ``close_timeout_s``;
        records then pending fail as closed: unknown)."""
        self._stop.set()
        await asyncio.gather(*self._producer_tasks, return_exceptions=True)
        await asyncio.gather(
            *(p.close(timeout_s=close_timeout_s) for p in self.producers), return_exceptions=True
        )
        for producer in self.producers:
            s = producer.stats
            self.producer_stats.append(
                {
                    "batches": s.batches,
                    "records": s.records,
                    "requests": s.requests,
                    "retries": s.retries,
                    "duplicates": s.duplicates,
                    "errors": dict(s.errors),
                }
            )

    async def stop_consuming(self, ends: Mapping[TP, int] | None, timeout_s: float = 20.0) -> None:
        for group in self.consumers:
            group.finish(ends, timeout_s)
        await asyncio.gather(*self._consumer_tasks, return_exceptions=True)

    def consumer_errors(self) -> dict[str, dict[str, int]]:
        return {group.name: dict(group.errors) for group in self.consumers}

    async def abort(self) -> None:
        self._stop.set()
        for group in self.consumers:
            group.finish({}, 0.0)
        tasks = [*self._producer_tasks, *self._consumer_tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for producer in self.producers:
            with contextlib.suppress(Exception):
                await producer.close(timeout_s=0)
