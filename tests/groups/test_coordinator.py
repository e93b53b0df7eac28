"""The coordinator of one partition: request validation, simple commits,
group lifecycle, tenants kept apart, lazy expiry, replay."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import pytest

from cluster.groups import (
    FencedMemberError,
    GroupNotFoundError,
    InvalidGroupRequest,
    TopicPartition,
    UnknownMemberError,
    UnknownPartitionError,
)
from cluster.groups.coordinator import GroupCoordinator, OffsetCommit
from cluster.groups.membership import Assignment, GroupConfig, GroupState, MemberState
from cluster.groups.offsets import CommittedOffsets, CoordinatorStarted

_LOG_OFFSETS = itertools.count()
CONFIG = GroupConfig(
    default_session_timeout_ms=3_000, min_session_timeout_ms=1_000, max_session_timeout_ms=10_000
)
TOPICS = {("acme", "a"): 2, ("acme", "b"): 1, ("zeta", "a"): 1}


def coordinator(**kwargs: int) -> GroupCoordinator:
    return GroupCoordinator(lambda tenant, topic: TOPICS.get((tenant, topic), 0), CONFIG, **kwargs)


def join(
    c: GroupCoordinator,
    member: str,
    *,
    tenant: str = "acme",
    group: str = "g",
    now: int = 0,
    client_id: str = "host-1",
    topics: Sequence[str] = ("a",),
    session_ms: int = 0,
    rebalance_ms: int = 0,
) -> Assignment:
    return c.join(
        tenant,
        group,
        member_id=member,
        client_id=client_id,
        topics=topics,
        session_timeout_ms=session_ms,
        rebalance_timeout_ms=rebalance_ms,
        now_ms=now,
    )


def prepare(
    c: GroupCoordinator, member: str, *, group: str = "g", session_ms: int = 0
) -> CoordinatorStarted | None:
    return c.prepare_join(
        "acme",
        group,
        member_id=member,
        client_id="host-1",
        topics=["a"],
        session_timeout_ms=session_ms,
        rebalance_timeout_ms=0,
    )


def commit(
    c: GroupCoordinator,
    offsets: Sequence[OffsetCommit],
    *,
    member: str = "",
    epoch: int = 0,
    group: str = "g",
    log: list[bytes] | None = None,
) -> None:
    """Commit and apply, as the service does after the log stored it."""
    records = c.prepare_commit(
        "acme", group, member_id=member, member_epoch=epoch, offsets=offsets, now_ms=0, commit_timestamp_ms=77
    )
    for record in records:
        if log is not None:
            log.append(record.encode())
        c.apply(len(log) - 1 if log is not None else next(_LOG_OFFSETS), record)


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda c: join(c, "m1", group=""), "INVALID_NAME"),
        (lambda c: join(c, "m1", group="a b"), "INVALID_NAME"),
        (lambda c: join(c, "m1", group=".."), "INVALID_NAME"),
        (lambda c: join(c, "m1", group="g" * 250), "INVALID_NAME"),
        (lambda c: join(c, "m/1"), "INVALID_NAME"),
        (lambda c: join(c, "m" * 65), "INVALID_NAME"),
        (lambda c: join(c, "m", client_id="x" * 256), "INVALID_NAME"),
        (lambda c: join(c, "m", topics=[]), "INVALID_SUBSCRIPTION"),
        (lambda c: join(c, "m", topics=["no way"]), "INVALID_NAME"),
        (lambda c: join(c, "m", session_ms=60_000), "INVALID_SESSION_TIMEOUT"),
        (lambda c: join(c, "m", rebalance_ms=1_800_001), "INVALID_REBALANCE_TIMEOUT"),
        (lambda c: commit(c, [OffsetCommit("a", 0, 1), OffsetCommit("a", 0, 2)]), "DUPLICATE_PARTITION"),
        (lambda c: commit(c, [OffsetCommit("a", 0, 1, "x" * 4097)]), "OFFSET_METADATA_TOO_LARGE"),
        (lambda c: commit(c, [OffsetCommit("a", 0, -1)]), "INVALID_OFFSET"),
        (lambda c: commit(c, [OffsetCommit("a/b", 0, 1)]), "INVALID_NAME"),
        (lambda c: c.describe("acme", "", now_ms=0), "INVALID_NAME"),
    ],
)
def test_invalid_requests_are_refused_and_change_nothing(
    call: Callable[[GroupCoordinator], object], reason: str
) -> None:
    c = coordinator()
    with pytest.raises(InvalidGroupRequest) as caught:
        call(c)
    assert caught.value.reason == reason
    assert c.membership("acme", "g") is None
    assert c.list_groups("acme", now_ms=0) == []
    assert c.offsets.snapshot() == {}


def test_a_simple_commit_needs_an_empty_group_and_a_real_partition() -> None:
    c = coordinator()
    commit(c, [OffsetCommit("a", 1, 5, "m")])
    assert c.fetch_offsets("acme", "g")[TopicPartition("a", 1)].offset == 5
    with pytest.raises(UnknownPartitionError):
        commit(c, [OffsetCommit("a", 2, 5)])
    with pytest.raises(UnknownPartitionError):
        commit(c, [OffsetCommit("missing", 0, 5)])

    answer = join(c, "m1")
    with pytest.raises(UnknownMemberError, match="only a member may commit"):
        commit(c, [OffsetCommit("a", 1, 6)])
    commit(c, [OffsetCommit("a", 1, 6)], member="m1", epoch=answer.member_epoch)
    c.leave("acme", "g", member_id="m1", member_epoch=answer.member_epoch, now_ms=0)
    commit(c, [OffsetCommit("a", 1, 7)])  # empty again
    assert c.fetch_offsets("acme", "g")[TopicPartition("a", 1)].offset == 7


def test_a_member_commit_to_a_group_without_members_is_unknown() -> None:
    c = coordinator()
    with pytest.raises(UnknownMemberError):
        commit(c, [OffsetCommit("a", 0, 1)], member="m1", epoch=1)


def test_a_prepared_commit_changes_nothing_until_applied() -> None:
    c = coordinator()
    records = c.prepare_commit(
        "acme",
        "g",
        member_id="",
        member_epoch=0,
        offsets=[OffsetCommit("a", 0, 3)],
        now_ms=0,
        commit_timestamp_ms=9,
    )
    assert c.fetch_offsets("acme", "g") == {}
    c.apply(0, records[0])
    assert c.fetch_offsets("acme", "g")[TopicPartition("a", 0)].commit_timestamp_ms == 9


def test_groups_live_while_they_have_members_or_offsets() -> None:
    c = coordinator()
    with pytest.raises(GroupNotFoundError):
        c.describe("acme", "g", now_ms=0)
    one = join(c, "m1")
    description = c.describe("acme", "g", now_ms=0)
    assert description.state is GroupState.STABLE
    (member,) = description.members
    assert member.member_id == "m1" and member.client_id == "host-1" and member.state is MemberState.STABLE
    assert member.assigned == member.target == (TopicPartition("a", 0), TopicPartition("a", 1))
    assert [s.group for s in c.list_groups("acme", now_ms=0)] == ["g"]

    c.leave("acme", "g", member_id="m1", member_epoch=one.member_epoch, now_ms=0)
    with pytest.raises(GroupNotFoundError):
        c.describe("acme", "g", now_ms=0)
    assert c.list_groups("acme", now_ms=0) == []

    commit(c, [OffsetCommit("a", 0, 1)])
    assert c.describe("acme", "g", now_ms=0).state is GroupState.EMPTY
    (summary,) = c.list_groups("acme", now_ms=0)
    assert summary.state is GroupState.EMPTY and summary.member_count == 0


def test_a_group_made_again_continues_the_epochs() -> None:
    """A delayed request of a member of the forgotten group must not match an
    epoch of the new one."""
    c = coordinator()
    first = join(c, "m1")
    c.leave("acme", "g", member_id="m1", member_epoch=first.member_epoch, now_ms=0)
    second = join(c, "m1")
    assert second.member_epoch > first.member_epoch
    with pytest.raises(FencedMemberError):
        c.heartbeat("acme", "g", member_id="m1", member_epoch=first.member_epoch, owned=[], now_ms=0)


def test_epochs_start_at_the_base() -> None:
    c = coordinator(epoch_base=5 << 32)
    assert join(c, "m1").member_epoch > 5 << 32


def test_tenants_and_groups_are_kept_apart() -> None:
    c = coordinator()
    acme = join(c, "m1", tenant="acme")
    zeta = join(c, "m1", tenant="zeta")
    join(c, "m1", group="other")
    assert acme.partitions == {TopicPartition("a", 0), TopicPartition("a", 1)}
    assert zeta.partitions == {TopicPartition("a", 0)}  # zeta's topic "a" has one partition
    assert [s.group for s in c.list_groups("acme", now_ms=0)] == ["g", "other"]
    assert [s.group for s in c.list_groups("zeta", now_ms=0)] == ["g"]
    assert c.list_groups("nobody", now_ms=0) == []


def test_every_call_expires_its_group_first() -> None:
    c = coordinator()
    join(c, "m1", now=0)
    two = join(c, "m2", now=2_000)
    # No expire() call: m2's heartbeat at m1's deadline removes m1 first.
    answer = c.heartbeat("acme", "g", member_id="m2", member_epoch=two.member_epoch, owned=[], now_ms=3_000)
    assert answer.partitions == {TopicPartition("a", 0), TopicPartition("a", 1)}
    assert [m.member_id for m in c.describe("acme", "g", now_ms=3_000).members] == ["m2"]
    assert c.next_deadline_ms() == 6_000
    assert c.expire(6_000) == [("acme", "g", "m2")]
    assert c.next_deadline_ms() is None


def test_replay_rebuilds_the_offsets_of_every_group() -> None:
    c = coordinator()
    log: list[bytes] = []
    commit(c, [OffsetCommit("a", 0, 1), OffsetCommit("b", 0, 4, "x")], log=log)
    commit(c, [OffsetCommit("a", 0, 2)], group="h", log=log)
    commit(c, [OffsetCommit("a", 0, 3)], log=log)
    fresh = coordinator()
    fresh.replay(enumerate(log))
    assert (
        fresh.offsets.snapshot() == c.offsets.snapshot() == CommittedOffsets.replay(enumerate(log)).snapshot()
    )
    assert fresh.fetch_offsets("acme", "g")[TopicPartition("a", 0)].offset == 3
    assert fresh.fetch_offsets("acme", "g", [TopicPartition("b", 0)])[TopicPartition("b", 0)].metadata == "x"
    assert [s.group for s in fresh.list_groups("acme", now_ms=0)] == ["g", "h"]


def admit(
    c: GroupCoordinator, member: str, log: list[bytes], *, session_ms: int = 0, now: int = 0
) -> Assignment:
    """Join as the service does: a record allowing the session first, if the log needs one."""
    record = prepare(c, member, session_ms=session_ms)
    if record is not None:
        log.append(record.encode())
        c.record_sessions(record)
    return join(c, member, session_ms=session_ms, now=now)


def started(
    c: GroupCoordinator, log: list[bytes], *, now: int, term: int, legacy: bool = False
) -> CoordinatorStarted:
    """Replay and start; ``legacy``: the record goes to the log as a node of
    version 1 (which recorded no group) wrote it."""
    c.replay(enumerate(log))
    record = c.start(now_ms=now, term=term)
    encoded = record.encode()
    log.append(b"\x01" + encoded[1:-1] if legacy else encoded)
    c.record_sessions(record)
    return record


def test_the_failover_fence_comes_from_earlier_coordinators_in_the_log() -> None:
    first = coordinator()
    log: list[bytes] = []
    assert started(first, log, now=0, term=1, legacy=True) == CoordinatorStarted(1, 0), (
        "nobody was admitted yet"
    )
    assert first.failover_fence_ms == 0, "nobody served before: grant at once"
    assert admit(first, "m1", log).partitions  # no hold
    log[-1] = b"\x01" + log[-1][1:-1]  # a version-1 node recorded the session, and no group

    second = coordinator()
    record = started(second, log, now=100, term=2)
    session = CONFIG.default_session_timeout_ms
    assert second.failover_fence_ms == session + CONFIG.failover_margin_ms
    assert record == CoordinatorStarted(2, session, True), "it allows what the log allowed"
    held = admit(second, "m1", log, now=100)
    fence_ends = 100 + second.failover_fence_ms
    for now in range(1_100, fence_ends, 1_000):
        assert not second.heartbeat(
            "acme", "g", member_id="m1", member_epoch=held.member_epoch, owned=[], now_ms=now
        ).partitions
    answer = second.heartbeat(
        "acme", "g", member_id="m1", member_epoch=held.member_epoch, owned=[], now_ms=fence_ends
    )
    assert answer.partitions == {TopicPartition("a", 0), TopicPartition("a", 1)}


def test_the_failover_fence_is_the_longest_session_admitted_not_the_longest_allowed() -> None:
    """The regression: a failover held every group for the configured maximum
    session (plus the margin), whatever sessions its members had."""
    first = coordinator()
    log: list[bytes] = []
    started(first, log, now=0, term=1)
    assert admit(first, "m1", log, session_ms=2_000).partitions
    assert log[1:] == [CoordinatorStarted(1, 2_000).encode()], "recorded before admitting"
    admit(first, "m2", log, session_ms=1_500)
    assert len(log) == 2, "a session the log allows already needs no record"

    second = coordinator()
    started(second, log, now=0, term=2)
    assert second.failover_fence_ms == 2_000 + CONFIG.failover_margin_ms < CONFIG.max_session_timeout_ms

    # A longer session raises the fence of the next coordinator.
    admit(second, "m3", log, session_ms=CONFIG.max_session_timeout_ms)
    third = coordinator()
    started(third, log, now=0, term=3)
    assert third.failover_fence_ms == CONFIG.max_session_timeout_ms + CONFIG.failover_margin_ms


def test_a_join_waits_for_the_record_that_allows_its_session() -> None:
    c = coordinator()
    log: list[bytes] = []
    started(c, log, now=0, term=1)
    with pytest.raises(InvalidGroupRequest) as refused:
        prepare(c, "m1", session_ms=CONFIG.max_session_timeout_ms + 1)
    assert refused.value.reason == "INVALID_SESSION_TIMEOUT"
    with pytest.raises(InvalidGroupRequest):
        prepare(c, "m1", group="a b")
    record = prepare(c, "m1")
    assert record == CoordinatorStarted(1, CONFIG.default_session_timeout_ms)
    with pytest.raises(RuntimeError):
        join(c, "m1")  # not recorded yet
    assert c.membership("acme", "g") is None, "the refused join changed nothing"
    c.record_sessions(record)
    assert join(c, "m1").partitions
