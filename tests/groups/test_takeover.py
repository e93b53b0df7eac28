"""A new coordinator takes groups over from their metadata on the offsets log
(cluster/groups/takeover.py): members keep their partitions, free partitions
are granted at once, answers wait for the records, steady heartbeats append
nothing, and the old fence remains only for logs of an older version."""

from __future__ import annotations

import asyncio

from cluster.groups import FencedMemberError, TopicPartition
from cluster.groups.coordinator import GroupCoordinator
from cluster.groups.membership import GroupConfig
from cluster.groups.offsets import CoordinatorStarted, GroupMetadataRecord, decode_record
from raftlog.v1 import groups_pb2
from tests.groups.test_service import harness, join_request, legacy_started, parts

CONFIG = GroupConfig(
    default_session_timeout_ms=3_000,
    min_session_timeout_ms=1_000,
    max_session_timeout_ms=4_000,
    default_rebalance_timeout_ms=2_000,
    min_rebalance_timeout_ms=1_000,
    failover_margin_ms=500,
)
A = [TopicPartition("a", p) for p in range(4)]


class World:
    """One coordinator partition's log and its successive coordinators,
    appending the group records before each answer as the service does."""

    def __init__(self) -> None:
        self.log: list[bytes] = []
        self.term = 0
        self.c = self.take_over(0)

    def take_over(self, now: int) -> GroupCoordinator:
        self.term += 1
        c = GroupCoordinator(
            lambda tenant, topic: 4 if topic == "a" else 0, CONFIG, epoch_base=self.term << 32
        )
        c.replay(enumerate(self.log))
        started = c.start(now, self.term)
        self.log.append(started.encode())
        c.record_sessions(started)
        self.c = c
        return c

    def record(self) -> None:
        seq, records = self.c.metadata_records()
        self.log += [r.encode() for r in records]
        self.c.metadata_recorded(seq)

    def join(self, member: str, now: int) -> tuple[int, frozenset[TopicPartition]]:
        record = self.c.prepare_join(
            "acme",
            "g",
            member_id=member,
            client_id="",
            topics=["a"],
            session_timeout_ms=0,
            rebalance_timeout_ms=0,
        )
        if record is not None:
            self.log.append(record.encode())
            self.c.record_sessions(record)
        answer = self.c.join(
            "acme",
            "g",
            member_id=member,
            client_id="",
            topics=["a"],
            session_timeout_ms=0,
            rebalance_timeout_ms=0,
            now_ms=now,
        )
        self.record()
        return answer.member_epoch, answer.partitions

    def beat(self, member: str, epoch: int, owned: object, now: int) -> tuple[int, frozenset[TopicPartition]]:
        answer = self.c.heartbeat("acme", "g", member_id=member, member_epoch=epoch, owned=owned, now_ms=now)  # type: ignore[arg-type]
        self.record()
        return answer.member_epoch, answer.partitions


def test_members_keep_their_partitions_and_free_ones_are_granted_at_once() -> None:
    w = World()
    epoch, got = w.join("m1", 0)
    assert got == set(A)
    w.take_over(100)
    # No UNKNOWN_MEMBER_ID, no fence: the same epoch, the same partitions.
    assert w.beat("m1", epoch, got, 200) == (epoch, got)
    # A newcomer gets what m1 gives up as soon as m1 confirms, not after a fence.
    _, none = w.join("m2", 300)
    assert not none
    _, kept = w.beat("m1", epoch, got, 400)
    assert len(kept) == 2
    _, kept = w.beat("m1", epoch, kept, 500)
    group = w.c.membership("acme", "g")
    assert group is not None and group.members["m2"].epoch > w.term << 32
    _, granted = w.beat("m2", group.members["m2"].epoch, (), 600)
    assert granted == set(A) - kept


def test_a_release_the_log_lacks_keeps_the_partition_held_until_the_holder_says_so() -> None:
    w = World()
    epoch, got = w.join("m1", 0)
    w.join("m2", 0)
    epoch, kept = w.beat("m1", epoch, got, 10)  # told to revoke two
    w.c.heartbeat("acme", "g", member_id="m1", member_epoch=epoch, owned=kept, now_ms=20)  # confirms...
    w.take_over(30)  # ...but the coordinator moved before recording it
    group = w.c.membership("acme", "g")
    assert group is not None and set(group.owners()) == set(A), "still held by m1 as far as the log says"
    w.beat("m1", epoch, kept, 40)
    assert set(w.c.membership("acme", "g").owners()) == kept  # type: ignore[union-attr]
    w.take_over(50)  # this time the release was recorded
    assert set(w.c.membership("acme", "g").owners()) == kept  # type: ignore[union-attr]


def test_a_member_fenced_in_the_old_coordinators_last_moments_holds_until_its_restarted_session_ends() -> (
    None
):
    w = World()
    epoch, got = w.join("m1", 0)
    m2_epoch, _ = w.join("m2", 0)
    w.beat("m1", epoch, got, 10)  # told to revoke; it never does
    w.c.expire(10 + CONFIG.default_rebalance_timeout_ms)
    w.record()  # fenced, recorded
    takeover = 3_000
    w.take_over(takeover)
    group = w.c.membership("acme", "g")
    assert group is not None and group.members["m1"].fenced
    try:
        w.beat("m1", epoch, got, takeover + 10)
        raise AssertionError("a fenced member is refused")
    except FencedMemberError:
        pass
    ends = takeover + CONFIG.failover_margin_ms + CONFIG.default_session_timeout_ms
    m2_epoch, none = w.beat("m2", m2_epoch, (), ends - 1)
    assert not (none & set(group.members["m1"].revoking)), "not while m1 may still consume"
    _, granted = w.beat("m2", m2_epoch, none, ends)
    assert granted == set(A)


def test_an_older_versions_log_holds_grants_until_the_fence_then_says_so() -> None:
    w = World()
    w.log = [legacy_started(1, 2_000)]
    c = w.take_over(0)
    assert c.failover_fence_ms == 2_000 + CONFIG.failover_margin_ms
    _, got = w.join("m1", 0)
    assert not got
    assert c.holders_known_record(2_499) is None
    record = c.holders_known_record(2_500)
    assert record == CoordinatorStarted(w.term, 3_000, False)
    w.log.append(record.encode())
    c.record_sessions(record)
    assert c.holders_known_record(5_000) is None
    epoch = c.membership("acme", "g").members["m1"].epoch  # type: ignore[union-attr]
    assert w.beat("m1", epoch, (), 2_600)[1] == set(A)
    w.take_over(2_700)
    assert w.beat("m1", w.c.membership("acme", "g").members["m1"].epoch, set(A), 2_800)[1] == set(A)  # type: ignore[union-attr]
    _, none = w.join("m2", 2_900)
    assert not none and w.c.failover_fence_ms > 0, "a fence length is known, but not needed"


async def test_a_steady_group_appends_nothing() -> None:
    """Cost: heartbeats that change nothing do not append. Measured: appends
    per second of a stable two-member group over a minute of heartbeats."""
    h = harness()
    one = await h.service.join_group("acme", join_request("m1"))
    two = await h.service.join_group("acme", join_request("m2"))
    beats = {
        "m1": groups_pb2.HeartbeatRequest(group="g", member_id="m1", member_epoch=one.member_epoch),
        "m2": groups_pb2.HeartbeatRequest(group="g", member_id="m2", member_epoch=two.member_epoch),
    }
    for _ in range(5):  # reach the stable assignment
        for request in beats.values():
            answer = await h.service.heartbeat("acme", request)
            request.member_epoch = answer.member_epoch
            del request.owned[:]
            request.owned.extend(answer.assignment)
    log = h.log_of("g")
    before, start = len(log.records), h.clock.ms
    for _ in range(60):
        h.clock.ms += 1_000
        for request in beats.values():
            await h.service.heartbeat("acme", request)
    appends_per_s = (len(log.records) - before) / ((h.clock.ms - start) / 1000)
    assert appends_per_s == 0, appends_per_s


async def test_a_grant_is_answered_only_once_its_record_is_durable() -> None:
    h = harness()
    one = await h.service.join_group("acme", join_request("m1"))
    log = h.log_of("g")
    log.gate = asyncio.Event()
    joining = asyncio.ensure_future(h.service.join_group("acme", join_request("m2")))
    await asyncio.sleep(0.01)
    assert not joining.done(), "the join changed the group: it waits for the record"
    log.gate.set()
    await joining
    last = decode_record(log.records[-1])
    assert isinstance(last, GroupMetadataRecord) and [m.member_id for m in last.snapshot.members] == [
        "m1",
        "m2",
    ]
    # A refused append leaves the change unrecorded: the next heartbeat,
    # although it changes nothing, appends it before answering.
    request = groups_pb2.HeartbeatRequest(group="g", member_id="m1", member_epoch=one.member_epoch)
    request.owned.extend(one.assignment)
    before = len(log.records)
    answer = await h.service.heartbeat("acme", request)  # revokes two: a change, recorded
    assert len(log.records) == before + 1 and len(parts(answer.assignment)) == 2
