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

Consumers: one consumer group per tenant (``ConsumerGroup``), ``consumers``
members each, every member its own SDK ``Consumer(group_id=...)`` (so its
own member id) next to a node (round robin, like the producers), all
subscribed to the tenant's topics. The group's coordinator splits the
partitions among them and moves them as members lose their sessions in a
fault and join again. What the history gets, and why:

- every record a member receives (``Read``: member, its ownership
  ``span`` of the partition, offset, value), recorded in the same
  synchronous step as the ``poll`` that returned it, so at any moment seen
  from another task the recorded reads are exactly what was handed over;
- every commit a member sends (``Commit``), with its outcome. Auto commit
  is off: a member commits by hand, every ``commit_interval_s``, the
  position of each partition it owns (the offset after the last record
  ``poll`` handed over), and on revocation (``on_revoked``) the offset
  after the last record it received of each revoked partition. The
  offsets are fixed and ``Commit.seen`` counted in one synchronous step
  before the commit is sent, so the checker can tell whether a commit ran
  ahead of delivery. A lost membership commits nothing (the SDK refuses:
  someone else may own the partitions);
- every grant, revocation and loss (``Rebalance``); a grant starts a new
  ``span`` for that member and partition (it may start below what the
  member read before: redelivery from the committed offset).

Compacted topics (``TopicTarget.compacted``) are not written with unique
keyless values nor read by the groups (a compacted log has gaps a group's
checks would count): each producer also writes keyed updates and
tombstones to them, at ``keyed_rate`` records/s in all (chaos/keyed.py),
with the same SDK producer of the topic's tenant.

At the end (``stop_consuming``) the group reads until its successful
commits reach every partition's end (its high watermark once the replicas
converged, and at least every acknowledged offset), or until the timeout,
then every member closes (which revokes, so commits, and leaves).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from chaos.cluster import ChaosCluster, TopicTarget
from chaos.history import TP, Attempt, Commit, CommitOutcome, GroupRecord, History, Outcome, Read, Rebalance
from chaos.keyed import write_keyed
from client import Consumer, Producer, RebalanceCallback, RecordMetadata, TopicPartition
from client.errors import (
    GroupMembershipError,
    InvalidRequestError,
    OutOfOrderSequenceError,
    ProducerFencedError,
    RaftlogError,
    RecordTooLargeError,
    UnknownProducerIdError,
    UnknownTopicOrPartitionError,
)

__all__ = ["ConsumerGroup", "Workload", "WorkloadSpec", "classify"]

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
    session_timeout_ms: int = 6000
    """The shortest session the coordinator admits: a member cut off by a
    fault loses its partitions to the others within the drill's faults."""
    keyed_rate: float = 40.0
    """Keyed writes per second to each compacted topic, all producers together."""


@dataclass
class _Member:
    """One member of a ``ConsumerGroup``: its consumer and what it was
    handed over. Touched only on the drill's event loop."""

    label: str
    consumer: Consumer
    spans: dict[TP, int] = field(default_factory=dict)
    """Per partition: how many times it was granted to this member."""
    handed: dict[TP, int] = field(default_factory=dict)
    """Per owned partition: the offset after the last record received in
    the current ownership (absent before the first one)."""


class ConsumerGroup:
    """A real consumer group over the SDK (see the module docstring):
    ``run`` reads and commits until ``finish`` says to stop, then closes
    every member."""

    def __init__(
        self,
        record: GroupRecord,
        make_consumer: Callable[[int, Mapping[str, RebalanceCallback]], Consumer],
        members: int,
        history: History,
        commit_interval_s: float = 1.0,
        callback_timeout_s: float = 2.0,
    ) -> None:
        self.record = record
        self.name = record.name
        self.topics = record.topics
        self.partitions: tuple[TP, ...] = tuple(record.partitions)
        self.history = history
        self.commit_interval_s = commit_interval_s
        # A rebalance callback runs on the member's heartbeat task: a commit
        # stuck behind a fault must not hold the heartbeats past the session.
        self.callback_timeout_s = callback_timeout_s
        self.members: list[_Member] = []
        self._by_label: dict[str, _Member] = {}
        for k in range(members):
            label = f"m{k}"
            member = _Member(label, make_consumer(k, self._callbacks(label)))
            self._by_label[label] = member
            self.members.append(member)
            record.members[label] = member.consumer.member_id
        self._reads: dict[TP, int] = {tp: 0 for tp in self.partitions}
        self._committed: dict[TP, int] = {}  # the highest successful commit per partition
        self._targets: dict[TP, int] | None = None
        self._deadline: float | None = None
        self.errors: dict[str, int] = {}

    def _callbacks(self, label: str) -> dict[str, RebalanceCallback]:
        """The rebalance callbacks of member ``label`` (made before its
        consumer, so they find the member by its label)."""

        def assigned(partitions: frozenset[TopicPartition]) -> None:
            member = self._by_label[label]
            for tp in partitions:
                key = (tp.topic, tp.partition)
                member.spans[key] = member.spans.get(key, 0) + 1
                member.handed.pop(key, None)
            # The coordinator may have named the member anew when it joined.
            self.record.members[label] = member.consumer.member_id
            self._rebalance(label, "assigned", partitions)

        async def revoked(partitions: frozenset[TopicPartition]) -> None:
            member = self._by_label[label]
            self._rebalance(label, "revoked", partitions)
            offsets = {
                (tp.topic, tp.partition): member.handed.pop((tp.topic, tp.partition))
                for tp in partitions
                if (tp.topic, tp.partition) in member.handed
            }
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.callback_timeout_s):
                    await self._commit(member, offsets, "revoked")

        def lost(partitions: frozenset[TopicPartition]) -> None:
            member = self._by_label[label]
            for tp in partitions:
                member.handed.pop((tp.topic, tp.partition), None)
            self._rebalance(label, "lost", partitions)

        return {"on_assigned": assigned, "on_revoked": revoked, "on_lost": lost}

    def _rebalance(self, label: str, change: str, partitions: Iterable[TopicPartition]) -> None:
        tps = tuple(sorted((tp.topic, tp.partition) for tp in partitions))
        self.history.rebalances.append(Rebalance(self.name, label, change, tps, self.history.clock()))

    def _error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def finish(self, targets: Mapping[TP, int], timeout_s: float) -> None:
        """Stop once the group's successful commits reached ``targets`` (the
        offset to reach per partition), or after ``timeout_s``."""
        self._targets = dict(targets)
        self._deadline = asyncio.get_running_loop().time() + timeout_s

    def _finishing(self) -> bool:
        return self._deadline is not None

    def _done(self) -> bool:
        if self._deadline is None:
            return False
        if asyncio.get_running_loop().time() >= self._deadline:
            return True
        assert self._targets is not None
        return all(self._committed.get(tp, 0) >= self._targets.get(tp, 0) for tp in self.partitions)

    async def _commit(self, member: _Member, offsets: Mapping[TP, int], why: str) -> None:
        """Commit ``offsets`` for ``member`` and record the attempt. The
        caller fixed ``offsets`` in the synchronous step that called this,
        so ``seen`` (taken here, before the first await) covers them."""
        if not offsets:
            return
        seen = {tp: self._reads.get(tp, 0) for tp in offsets}
        sent_at = self.history.clock()
        outcome = CommitOutcome.OK
        done: dict[TP, int] = {}
        try:
            done = {(tp.topic, tp.partition): o for tp, o in (await member.consumer.commit(offsets)).items()}
        except GroupMembershipError as exc:
            outcome = CommitOutcome.FAILED  # refused: the member lost or gave up the partitions
            self._error(f"commit({why}): {exc.reason}")
        except (RaftlogError, TimeoutError, asyncio.CancelledError) as exc:
            # Unanswered: it may have been applied all the same.
            outcome = CommitOutcome.UNKNOWN
            self._error(f"commit({why}): {getattr(exc, 'reason', type(exc).__name__)}")
            if isinstance(exc, asyncio.CancelledError):
                self._record_commits(member, offsets, seen, sent_at, outcome)
                raise
        except ValueError as exc:  # not owned any more: nothing was sent
            self._error(f"commit({why}): not owned")
            self.history.event(f"group {self.name} {member.label}: commit refused locally: {exc}")
            return
        now = self.history.clock()
        if outcome is CommitOutcome.OK:
            # The SDK leaves out offsets the group holds already: record only
            # what was sent.
            self._record_commits(member, done, seen, sent_at, outcome, now)
            for tp, offset in done.items():
                self._committed[tp] = max(self._committed.get(tp, 0), offset)
        else:
            self._record_commits(member, offsets, seen, sent_at, outcome)

    def _record_commits(
        self,
        member: _Member,
        offsets: Mapping[TP, int],
        seen: Mapping[TP, int],
        sent_at: float,
        outcome: CommitOutcome,
        done_at: float | None = None,
    ) -> None:
        for (topic, partition), offset in sorted(offsets.items()):
            self.history.commits.append(
                Commit(
                    self.name,
                    topic,
                    partition,
                    offset,
                    seen[(topic, partition)],
                    sent_at,
                    member=member.label,
                    outcome=outcome,
                    done_at=done_at,
                )
            )

    def _positions(self, member: _Member) -> dict[TP, int]:
        """What ``member`` has handed over, per owned partition, per the SDK."""
        positions: dict[TP, int] = {}
        for tp in member.consumer.assignment():
            position = member.consumer.position(tp)
            if position is not None:
                positions[(tp.topic, tp.partition)] = position
        return positions

    async def _run_member(self, member: _Member) -> None:
        consumer = member.consumer
        loop = asyncio.get_running_loop()
        next_commit = loop.time() + self.commit_interval_s
        try:
            consumer.subscribe(self.topics)
            while not self._done():
                try:
                    records = await consumer.poll(0.3)
                except RaftlogError as exc:
                    self._error(f"poll: {exc.reason}")
                    await asyncio.sleep(0.2)
                    continue
                # Recorded before the next await (see the module docstring).
                now = self.history.clock()
                for r in records:
                    tp = (r.topic, r.partition)
                    self.history.reads.append(
                        Read(
                            self.name,
                            r.topic,
                            r.partition,
                            r.offset,
                            r.value or b"",
                            now,
                            member=member.label,
                            span=member.spans.get(tp, 0),
                        )
                    )
                    self._reads[tp] = self._reads.get(tp, 0) + 1
                    member.handed[tp] = r.offset + 1
                # Finishing: commit as soon as there is something new, so the
                # group reaches the ends without waiting out the interval.
                if loop.time() >= next_commit or (self._finishing() and records):
                    await self._commit(member, self._positions(member), "interval")
                    next_commit = loop.time() + (self.commit_interval_s if not self._finishing() else 0.3)
        except Exception as exc:  # a bug here must show in the report, not vanish in gather()
            self._error(f"member failed: {type(exc).__name__}")
            self.history.event(f"group {self.name} {member.label} failed: {exc!r}")
            raise
        finally:
            # Closing revokes what the member owns: on_revoked commits it.
            with contextlib.suppress(Exception):
                await consumer.close()

    async def run(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            for member in self.members:
                tasks.create_task(self._run_member(member), name=f"chaos-{self.name}-{member.label}")


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
            (t, p) for t in spec.topics if not t.compacted for p in range(t.partitions)
        ]
        self.compacted = [t for t in spec.topics if t.compacted]
        self.tenants = sorted({t.tenant for t in spec.topics})
        self._stop = asyncio.Event()
        self.producers: list[Producer] = []
        self.producer_stats: list[dict[str, Any]] = []
        self.consumers: list[ConsumerGroup] = []
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
                    # Retries every 100 ms at most while a partition has
                    # no leader, as in bench/failover.py: the failover figure
                    # measures the cluster, not the SDK's default 1 s cap.
                    retry_backoff_max_ms=100.0,
                    metadata_timeout_s=5.0,
                    **self._client_kwargs(self.location(k), tenant),
                )
                for tenant in self.tenants
            }
            self.producers.extend(mine.values())
            self._producer_tasks.append(
                asyncio.create_task(self._produce(k, mine), name=f"chaos-producer-{k}")
            )
            for target in self.compacted:
                keyed = write_keyed(
                    mine[target.tenant],
                    target,
                    k,
                    spec.producers,
                    spec.keyed_rate / spec.producers,
                    self.history,
                    random.Random(self.rng.random()),
                    self._stop,
                    classify,
                )
                self._producer_tasks.append(
                    asyncio.create_task(keyed, name=f"chaos-producer-{k}-{target.topic}")
                )
        if spec.consumers:
            for tenant in self.tenants:
                if all(t.compacted for t in spec.topics if t.tenant == tenant):
                    continue  # nothing a group reads
                group = self._group(tenant)
                self.consumers.append(group)
                self._consumer_tasks.append(
                    asyncio.create_task(group.run(), name=f"chaos-consumers-{tenant}")
                )

    def _group(self, tenant: str) -> ConsumerGroup:
        spec = self.spec
        name = f"g-{tenant}"
        record = GroupRecord(
            name,
            tenant,
            tuple(sorted({t.topic for t in spec.topics if t.tenant == tenant and not t.compacted})),
            tuple((t.topic, p) for t, p in self.partitions if t.tenant == tenant),
            {},
        )
        self.history.groups.append(record)

        def make_consumer(k: int, callbacks: Mapping[str, RebalanceCallback]) -> Consumer:
            return Consumer(
                self.cluster.bootstrap,
                group_id=name,
                enable_auto_commit=False,  # the workload commits, and records, every commit
                session_timeout_ms=spec.session_timeout_ms,
                client_id=f"chaos-{name}-m{k}",
                request_timeout_s=spec.request_timeout_s,
                fetch_max_wait_ms=300,
                api_timeout_s=10.0,
                on_assigned=callbacks["on_assigned"],
                on_revoked=callbacks["on_revoked"],
                on_lost=callbacks["on_lost"],
                **self._client_kwargs(self.location(k + 1), tenant),
            )

        return ConsumerGroup(record, make_consumer, spec.consumers, self.history, spec.commit_interval_s)

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
        self.producer_stats.extend(asdict(producer.stats) for producer in self.producers)

    async def stop_consuming(self, ends: Mapping[TP, int] | None, timeout_s: float = 45.0) -> None:
        """Let each group read and commit up to ``ends`` (high watermarks;
        None when unknown) and at least past every acknowledged offset, at
        most ``timeout_s``; then close the members."""
        targets: dict[TP, int] = dict(ends or {})
        for attempt in self.history.attempts:
            if attempt.offset is not None:
                targets[attempt.tp] = max(targets.get(attempt.tp, 0), attempt.offset + 1)
        for group in self.consumers:
            group.finish(targets, timeout_s)
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
