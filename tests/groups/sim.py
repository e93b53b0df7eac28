"""A seeded simulation of one consumer group: honest clients, the pure
coordinator, a lossy network, crashes, network cuts, slow revocations,
coordinator failovers and topic growth.

A coordinator failover replays the offsets log, sometimes compacted (only
the last record per key, tombstones sometimes gone too), and takes the
group over from its metadata records (``cluster/groups/takeover.py``):
members it knows keep their partitions. As the service does, every call
that changed the group appends the group's records before it is answered;
now and then the coordinator fails over right after such a change, before
the append (the answer is never sent), so a successor never learns it.

The clients play the member's half of the contract written at the top of
``cluster/groups/membership.py``: take what an answer lists, commit and let go
of what it no longer lists, drop everything on FENCED_MEMBER or
UNKNOWN_MEMBER_ID, and drop everything when ``session_timeout_ms`` has passed
since the last answered request was *sent*.

Each client's requests and answers travel on FIFO channels (one gRPC
connection) with random delays and drops, except that a heartbeat or commit
is now and then delivered a second time, seconds later and out of order
(joins never are: see the assumptions in membership.py). An answer that
arrives after the client's request timeout is ignored, as a real client
never sees it.

Each client asks for its own session timeout (from the minimum to the
maximum the coordinator allows), so the failover fence, which comes from
the sessions the log records, is as short as the clients allow.

Each client consumes every partition it owns from the committed offset
(records are integers; "processing" marks them), and commits its positions
now and then and before letting a partition go.

``check`` (after every event) raises ``SimulationFailure`` if:

- two clients own one partition at once (the client-level safety property:
  stronger than the coordinator's own bookkeeping, which is checked too);
- a commit is accepted for a partition another client owns (a zombie
  commit got through);
- an accepted commit of offset X leaves a record below X unprocessed (a
  committed record would be skipped).

``finish`` checks liveness after the faults stop: every partition owned by
exactly one live client, as the coordinator says, with a balanced
assignment; and that replaying the offsets log rebuilds the same table.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from cluster.groups import GroupError, TopicPartition
from cluster.groups.coordinator import GroupCoordinator, OffsetCommit
from cluster.groups.membership import Assignment, GroupConfig, GroupState
from cluster.groups.offsets import CommittedOffsets, stored_form

TENANT = "acme"
GROUP = "g"
CONFIG = GroupConfig(
    default_session_timeout_ms=3_000,
    min_session_timeout_ms=1_000,
    max_session_timeout_ms=3_000,
    default_rebalance_timeout_ms=4_000,
    max_heartbeat_interval_ms=1_000,
    failover_margin_ms=0,  # no deposed leader answers here
)
REQUEST_TIMEOUT_MS = 1_500
LEGACY_FENCE_EXPECTED = False
"""Every log here is written by this version: no takeover needs the fence."""


class SimulationFailure(AssertionError):
    pass


class _AppendLost(Exception):
    """The coordinator failed over before the append: no answer goes out."""


@dataclass(order=True)
class _Event:
    time: int
    seq: int
    action: Callable[[], None] = field(compare=False)


@dataclass
class Client:
    name: str
    member_id: str
    topics: frozenset[str]
    session_ms: int = CONFIG.default_session_timeout_ms
    alive: bool = True
    state: str = "joining"  # joining | member | idle
    epoch: int = 0
    owned: dict[TopicPartition, int] = field(default_factory=dict)
    """Partition → the position it consumes from next."""
    letting_go: set[TopicPartition] = field(default_factory=set)
    last_success_sent_ms: int = 0
    incarnation: int = 0
    waiting: set[int] = field(default_factory=set)
    """Request ids whose answers it still waits for."""
    heartbeat_in_flight: bool = False
    cut_until_ms: int = 0


class Simulation:
    def __init__(self, seed: int, *, clients: int = 5, chaos_ms: int = 40_000, heal_ms: int = 20_000) -> None:
        self.rng = random.Random(seed)
        self.now = 0
        self.chaos_until = chaos_ms
        self.end = chaos_ms + heal_ms
        self._queue: list[_Event] = []
        self._seq = 0
        self._channel_free: dict[tuple[str, str], int] = {}
        self._request_ids = 0
        self.topics = {"a": 5, "b": 3}
        self.mixed = seed % 2 == 1
        self.log: list[bytes] = []
        self.longest_session_admitted = 0
        self.term = 1
        self.coordinator = self._new_coordinator()
        self.processed: dict[TopicPartition, set[int]] = {}
        self.stats: Counter[str] = Counter()
        self.clients: dict[str, Client] = {}
        for i in range(clients):
            self._start_client(f"c{i}")
        self._every(500, self._tick)
        self._at(self.rng.randint(5_000, chaos_ms - 5_000), self._grow_topic)

    # --- event loop ------------------------------------------------------------------

    def _at(self, time: int, action: Callable[[], None]) -> None:
        self._seq += 1
        heapq.heappush(self._queue, _Event(time, self._seq, action))

    def _every(self, period: int, action: Callable[[], None]) -> None:
        def again() -> None:
            action()
            self._at(self.now + period, again)

        self._at(self.now + period, again)

    def run(self) -> None:
        while self._queue and self._queue[0].time <= self.end:
            event = heapq.heappop(self._queue)
            self.now = event.time
            event.action()
            self.check()
        self.finish()

    @property
    def chaos(self) -> bool:
        return self.now < self.chaos_until

    # --- network -----------------------------------------------------------------------

    def _send(self, client: Client, direction: str, action: Callable[[], None]) -> None:
        """Deliver ``action`` later on the client's FIFO channel (or lose it)."""
        if self.chaos and (self.rng.random() < 0.05 or self.now < client.cut_until_ms):
            self.stats["lost messages"] += 1
            return
        delay = self.rng.randint(1, 400) if self.chaos else self.rng.randint(1, 20)
        key = (client.name, direction)
        when = max(self._channel_free.get(key, 0), self.now + delay)
        self._channel_free[key] = when
        self._at(when, action)

    def _request(
        self,
        client: Client,
        call: Callable[[], object],
        on_answer: Callable[[object, int], None],
        on_timeout: Callable[[], None] = lambda: None,
        *,
        may_duplicate: bool = False,
    ) -> None:
        """Send a request; ``on_answer(result or GroupError, sent_at)`` runs if
        its answer arrives in time, ``on_timeout`` otherwise. With
        ``may_duplicate``, a copy may also arrive much later, out of order (a
        retry stuck in a proxy): its answer reaches nobody."""
        self._request_ids += 1
        request_id, sent_at, incarnation = self._request_ids, self.now, client.incarnation
        client.waiting.add(request_id)

        def serve() -> None:
            try:
                result: object = self._durably(call)
            except GroupError as error:
                result = error
            except _AppendLost:
                return  # the client times out

            def answer() -> None:
                if request_id in client.waiting and client.incarnation == incarnation and client.alive:
                    client.waiting.discard(request_id)
                    on_answer(result, sent_at)

            self._send(client, "down", answer)

        def expire() -> None:
            if request_id in client.waiting:
                client.waiting.discard(request_id)
                if client.incarnation == incarnation and client.alive:
                    on_timeout()

        def late_copy() -> None:
            try:
                self._durably(call)
                self.stats["late duplicates accepted"] += 1
            except GroupError as error:
                self.stats[f"late duplicate refused {error.reason}"] += 1
            except _AppendLost:
                pass

        self._send(client, "up", serve)
        self._at(self.now + REQUEST_TIMEOUT_MS, expire)
        if may_duplicate and self.chaos and self.rng.random() < 0.05:
            self._at(self.now + self.rng.randint(2_000, 10_000), late_copy)

    # --- the coordinator side --------------------------------------------------------------

    def _counts(self, tenant: str, topic: str) -> int:
        return self.topics.get(topic, 0)

    def _new_coordinator(self) -> GroupCoordinator:
        """What a new leader does: replay, then record that it started."""
        coordinator = GroupCoordinator(self._counts, CONFIG, epoch_base=self.term << 32)
        compact = self.rng.random() < 0.5
        coordinator.replay(
            self._compacted(drop_tombstones=self.rng.random() < 0.5) if compact else enumerate(self.log)
        )
        started = coordinator.start(self.now, self.term)
        self.log.append(started.encode())
        coordinator.record_sessions(started)
        return coordinator

    def _compacted(self, *, drop_tombstones: bool) -> list[tuple[int, bytes]]:
        """The log as compaction may leave it: the last record of each key."""
        last: dict[bytes | None, int] = {}
        for offset, entry in enumerate(self.log):
            key, value = stored_form(entry)
            if key is not None and not (value is None and drop_tombstones):
                last[key] = offset
            elif key is not None:
                last.pop(key, None)
        keep = {offset for offset in last.values()}
        return [(o, e) for o, e in enumerate(self.log) if o in keep or stored_form(e)[0] is None]

    def _failover(self) -> None:
        """A new coordinator: offsets and groups from the log."""
        self.term += 1
        self.coordinator = self._new_coordinator()
        assert self.coordinator.failover_fence_ms == 0 or not LEGACY_FENCE_EXPECTED
        state = self.coordinator.membership(TENANT, GROUP)
        self.stats["failovers"] += 1
        if state is not None and state.owners():
            self.stats["takeovers keeping partitions"] += 1

    def _durably(self, call: Callable[[], object]) -> object:
        """Call the coordinator; before the answer leaves, the log stores
        the group's metadata if it changed (or the coordinator fails over
        first, and the answer is lost)."""
        coordinator = self.coordinator
        result = call()
        if coordinator is not self.coordinator:
            raise _AppendLost  # a coordinator that is gone answers nobody
        self._record_metadata(lose=self.chaos and self.rng.random() < 0.03)
        return result

    def _record_metadata(self, *, lose: bool = False) -> None:
        if self.coordinator.unrecorded_change(TENANT, GROUP) is None:
            return
        if lose:
            self.stats["metadata appends lost"] += 1
            self._failover()
            raise _AppendLost
        seq, records = self.coordinator.metadata_records()
        self.log.extend(record.encode() for record in records)
        self.coordinator.metadata_recorded(seq)
        self.stats["metadata records"] += len(records)

    def _commit(self, client: Client, offsets: dict[TopicPartition, int]) -> None:
        records = self.coordinator.prepare_commit(
            TENANT,
            GROUP,
            member_id=client.member_id,
            member_epoch=client.epoch,
            offsets=[OffsetCommit(tp.topic, tp.partition, offset) for tp, offset in sorted(offsets.items())],
            now_ms=self.now,
            commit_timestamp_ms=self.now,
        )
        for record in records:
            tp = record.topic_partition
            for other in self.clients.values():
                if other is not client and tp in other.owned:
                    raise SimulationFailure(
                        f"t={self.now}: {client.name} committed {tp} while {other.name} owns it"
                    )
            done = self.processed.get(tp, set())
            missing = [o for o in range(record.offset) if o not in done]
            if missing:
                raise SimulationFailure(
                    f"t={self.now}: commit of {tp} at {record.offset} skips unprocessed {missing[:5]}"
                )
            self.log.append(record.encode())
            self.coordinator.apply(len(self.log) - 1, record)
        self.stats["commits accepted"] += 1

    def _tick(self) -> None:
        self.stats["expired"] += len(self.coordinator.expire(self.now))
        self._record_metadata()
        if self.chaos and self.rng.random() < 0.01:
            self._failover()

    def _grow_topic(self) -> None:
        self.topics["a"] += 2

    # --- clients ---------------------------------------------------------------------------

    def _start_client(self, name: str) -> None:
        topics = frozenset({"b"}) if self.mixed and name == "c0" else frozenset({"a", "b"})
        session_ms = self.rng.choice([CONFIG.min_session_timeout_ms, 2_000, CONFIG.max_session_timeout_ms])
        client = Client(name=name, member_id=f"{name}-{self.now}", topics=topics, session_ms=session_ms)
        self.clients[name] = client
        self._join(client)
        self._client_loop(client)

    def _client_loop(self, client: Client) -> None:
        def heartbeat() -> None:
            if client.alive:
                if client.state == "member" and not client.heartbeat_in_flight:
                    self._heartbeat(client)
                self._at(self.now + CONFIG.heartbeat_interval(client.session_ms), heartbeat)

        def process() -> None:
            if client.alive:
                self._process(client)
                self._at(self.now + self.rng.randint(100, 300), process)

        def auto_commit() -> None:
            if client.alive:
                if client.state == "member" and client.owned:
                    offsets = dict(client.owned)
                    self._request(
                        client,
                        lambda: self._commit(client, offsets),
                        self._on_commit_answer,
                        may_duplicate=True,
                    )
                self._at(self.now + self.rng.randint(500, 1_500), auto_commit)

        def mischief() -> None:
            if client.alive and self.chaos:
                self._mischief(client)
                self._at(self.now + self.rng.randint(2_000, 8_000), mischief)

        self._at(self.now + 1, heartbeat)
        self._at(self.now + 1, process)
        self._at(self.now + 700, auto_commit)
        self._at(self.now + self.rng.randint(2_000, 8_000), mischief)

    def _on_commit_answer(self, result: object, sent_at: int) -> None:
        if isinstance(result, GroupError):
            self.stats[f"commit refused {result.reason}"] += 1

    def _mischief(self, client: Client) -> None:
        roll = self.rng.random()
        if roll < 0.08:
            client.alive = False  # crashed: owns nothing any more, says nothing
            client.owned.clear()
            self.stats["crashes"] += 1
            self._start_client(f"{client.name}r")
        elif roll < 0.3:
            client.cut_until_ms = self.now + self.rng.randint(500, 6_000)
            self.stats["network cuts"] += 1
        elif roll < 0.4 and client.state == "member":
            self._leave(client)

    def _answered(self, client: Client, sent_at: int) -> None:
        """A request sent at ``sent_at`` was answered: the session is alive
        until ``sent_at + session`` at least; arm the client's own timer."""
        client.last_success_sent_ms = max(client.last_success_sent_ms, sent_at)
        deadline = client.last_success_sent_ms + client.session_ms

        def session_check() -> None:
            if client.alive and client.owned and self.now - client.last_success_sent_ms >= client.session_ms:
                # The coordinator may be ending the session: stop consuming now.
                self.stats["session drops"] += 1
                if client.state == "member":
                    self._drop_all_and_rejoin(client)
                else:
                    client.owned.clear()
                    client.letting_go.clear()

        self._at(deadline, session_check)

    def _process(self, client: Client) -> None:
        for tp, position in list(client.owned.items()):
            count = self.rng.randint(0, 3)
            self.processed.setdefault(tp, set()).update(range(position, position + count))
            client.owned[tp] = position + count

    def _take(self, client: Client, partitions: frozenset[TopicPartition]) -> None:
        committed = self.coordinator.fetch_offsets(TENANT, GROUP, partitions)
        for tp in sorted(partitions - client.owned.keys()):
            entry = committed.get(tp)
            client.owned[tp] = entry.offset if entry else 0

    def _drop_all_and_rejoin(self, client: Client) -> None:
        client.owned.clear()
        client.letting_go.clear()
        client.incarnation += 1
        client.waiting.clear()
        client.heartbeat_in_flight = False
        self._join(client)

    def _join(self, client: Client) -> None:
        client.state = "joining"
        incarnation = client.incarnation

        def call() -> Assignment:
            # As the service does: the log allows the session before the join is made.
            coordinator = self.coordinator
            record = coordinator.prepare_join(
                TENANT,
                GROUP,
                member_id=client.member_id,
                client_id=client.name,
                topics=client.topics,
                session_timeout_ms=client.session_ms,
                rebalance_timeout_ms=0,
            )
            if record is not None:
                self.log.append(record.encode())
                coordinator.record_sessions(record)
            answer = coordinator.join(
                TENANT,
                GROUP,
                member_id=client.member_id,
                client_id=client.name,
                topics=client.topics,
                session_timeout_ms=client.session_ms,
                rebalance_timeout_ms=0,
                now_ms=self.now,
            )
            self.longest_session_admitted = max(self.longest_session_admitted, client.session_ms)
            return answer

        def answered(result: object, sent_at: int) -> None:
            if isinstance(result, GroupError):
                raise SimulationFailure(f"join refused: {result}")
            assert isinstance(result, Assignment)
            client.state = "member"
            client.epoch = result.member_epoch
            self._answered(client, sent_at)
            self._take(client, result.partitions)

        def retry() -> None:
            if client.incarnation == incarnation and client.state == "joining":
                self._join(client)

        self._request(client, call, answered, retry)

    def _heartbeat(self, client: Client) -> None:
        client.heartbeat_in_flight = True
        owned, epoch = frozenset(client.owned), client.epoch

        def call() -> Assignment:
            return self.coordinator.heartbeat(
                TENANT, GROUP, member_id=client.member_id, member_epoch=epoch, owned=owned, now_ms=self.now
            )

        def answered(result: object, sent_at: int) -> None:
            client.heartbeat_in_flight = False
            if isinstance(result, GroupError):
                self.stats[f"heartbeat refused {result.reason}"] += 1
                self._drop_all_and_rejoin(client)
                return
            assert isinstance(result, Assignment)
            client.epoch = result.member_epoch
            self._answered(client, sent_at)
            self._take(client, result.partitions)
            for tp in sorted(client.owned.keys() - result.partitions - client.letting_go):
                self._let_go(client, tp)

        def timed_out() -> None:
            client.heartbeat_in_flight = False

        self._request(client, call, answered, timed_out, may_duplicate=True)

    def _let_go(self, client: Client, tp: TopicPartition) -> None:
        """Finish what is in hand, commit, then stop consuming ``tp``."""
        client.letting_go.add(tp)
        incarnation = client.incarnation
        slow = self.chaos and self.rng.random() < 0.1
        delay = self.rng.randint(4_000, 7_000) if slow else self.rng.randint(0, 500)

        def drop() -> None:
            if client.incarnation == incarnation and tp in client.owned:
                del client.owned[tp]
                client.letting_go.discard(tp)
                self.stats["revocations"] += 1

        def committed(result: object, sent_at: int) -> None:
            self._on_commit_answer(result, sent_at)
            drop()

        def commit() -> None:
            if client.incarnation == incarnation and tp in client.owned:
                position = client.owned[tp]
                self._request(
                    client, lambda: self._commit(client, {tp: position}), committed, drop, may_duplicate=True
                )

        self._at(self.now + delay, commit)

    def _leave(self, client: Client) -> None:
        """Commit everything, stop, leave; come back later."""
        offsets, epoch = dict(client.owned), client.epoch
        client.state = "idle"
        client.incarnation += 1
        client.waiting.clear()
        client.heartbeat_in_flight = False

        def leave() -> None:
            client.owned.clear()
            client.letting_go.clear()
            self._request(
                client,
                lambda: self.coordinator.leave(
                    TENANT, GROUP, member_id=client.member_id, member_epoch=epoch, now_ms=self.now
                ),
                lambda result, sent_at: None,
            )
            self.stats["leaves"] += 1
            self._at(
                self.now + self.rng.randint(1_000, 5_000),
                lambda: self._join(client) if client.alive else None,
            )

        # The final commit goes first on the same channel; stop consuming
        # once it is answered (or lost).
        self._request(client, lambda: self._commit(client, offsets), lambda r, s: leave(), leave)

    # --- checks ------------------------------------------------------------------------------

    def check(self) -> None:
        owner: dict[TopicPartition, str] = {}
        for client in self.clients.values():
            for tp in client.owned:
                if tp in owner:
                    raise SimulationFailure(f"t={self.now}: {tp} owned by {owner[tp]} and {client.name}")
                owner[tp] = client.name
        state = self.coordinator.membership(TENANT, GROUP)
        if state is not None:
            state.check_invariants()

    def finish(self) -> None:
        self.coordinator.expire(self.now)
        live = {c.member_id: c for c in self.clients.values() if c.alive}
        all_partitions = {TopicPartition(t, p) for t, count in self.topics.items() for p in range(count)}
        description = self.coordinator.describe(TENANT, GROUP, now_ms=self.now)
        if {m.member_id for m in description.members} != set(live):
            raise SimulationFailure(
                f"members {[m.member_id for m in description.members]} != live {sorted(live)}"
            )
        if description.state is not GroupState.STABLE:
            raise SimulationFailure(f"the group is {description.state} after healing: {description}")
        seen: list[TopicPartition] = []
        for member in description.members:
            owned = set(live[member.member_id].owned)
            if owned != set(member.assigned):
                raise SimulationFailure(
                    f"{member.member_id} owns {sorted(owned)}, coordinator says {member.assigned}"
                )
            seen += member.assigned
        if sorted(seen) != sorted(all_partitions):
            raise SimulationFailure(f"partitions owned {sorted(seen)} != all {sorted(all_partitions)}")
        sizes = [len(m.assigned) for m in description.members if set(m.topics) == {"a", "b"}]
        if sizes and max(sizes) - min(sizes) > 1:
            raise SimulationFailure(f"unbalanced: {sizes}")
        replayed = CommittedOffsets.replay(enumerate(self.log))
        if replayed.snapshot() != self.coordinator.offsets.snapshot():
            raise SimulationFailure("replaying the offsets log gives another table")
