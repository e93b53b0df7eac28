"""One group's protocol, scenario by scenario: joining, the revocation
handshake, lost answers, fencing, expiry, leaving, commit checks, the
failover hold. The random-sequence properties are in test_properties.py."""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from cluster.groups import (
    FencedMemberError,
    GroupFullError,
    InvalidGroupRequest,
    StaleMemberEpochError,
    TopicPartition,
    UnknownMemberError,
)
from cluster.groups.membership import Assignment, Group, GroupConfig, GroupState, MemberState

CONFIG = GroupConfig(
    default_session_timeout_ms=3_000,
    min_session_timeout_ms=1_000,
    max_session_timeout_ms=10_000,
    default_rebalance_timeout_ms=5_000,
    max_group_size=3,
)


def tps(topic: str, *partitions: int) -> frozenset[TopicPartition]:
    return frozenset(TopicPartition(topic, p) for p in partitions)


class Metadata:
    def __init__(self, **counts: int) -> None:
        self.counts = counts

    def __call__(self, topic: str) -> int:
        return self.counts.get(topic, 0)


def join(
    group: Group, member: str, meta: Metadata, now: int = 0, topics: Iterable[str] = ("a",)
) -> Assignment:
    return group.join(
        member,
        client_id=f"client-{member}",
        topics=frozenset(topics),
        session_timeout_ms=0,
        rebalance_timeout_ms=0,
        now_ms=now,
        partition_counts=meta,
    )


def beat(
    group: Group,
    answer: Assignment,
    meta: Metadata,
    now: int = 0,
    owned: Iterable[TopicPartition] | None = None,
) -> Assignment:
    """A heartbeat from a member that owns what ``answer`` gave it (or ``owned``)."""
    return group.heartbeat(
        answer.member_id,
        answer.member_epoch,
        answer.partitions if owned is None else owned,
        now_ms=now,
        partition_counts=meta,
    )


def test_a_lone_member_gets_every_partition() -> None:
    meta = Metadata(a=4)
    group = Group(CONFIG)
    answer = join(group, "m1", meta)
    assert answer.partitions == tps("a", 0, 1, 2, 3)
    assert answer.heartbeat_interval_ms == 1_000  # a third of the 3 s default session
    assert group.state is GroupState.STABLE
    group.check_invariants()


def test_a_partition_moves_only_after_its_owner_lets_go() -> None:
    meta = Metadata(a=4)
    group = Group(CONFIG)
    one = join(group, "m1", meta)
    two = join(group, "m2", meta)
    assert two.partitions == frozenset(), "m1 still holds everything"
    assert group.member_state("m2") is MemberState.UNRELEASED_PARTITIONS

    one = beat(group, one, meta)  # told to give up two partitions, still holds them
    given_away = group.target("m2")
    assert one.partitions == tps("a", 0, 1, 2, 3) - given_away
    assert group.member_state("m1") is MemberState.UNREVOKED_PARTITIONS
    assert beat(group, two, meta).partitions == frozenset(), "m1 has not confirmed yet"

    # m1 still lists them: not a confirmation.
    one = beat(group, one, meta, owned=tps("a", 0, 1, 2, 3))
    assert beat(group, two, meta).partitions == frozenset()

    one = beat(group, one, meta)  # now it lists only what it kept
    two = beat(group, two, meta)
    assert two.partitions == given_away and len(given_away) == 2
    assert group.state is GroupState.STABLE
    group.check_invariants()


def test_a_member_epoch_grows_with_every_grant() -> None:
    meta = Metadata(a=2)
    group = Group(CONFIG)
    one = join(group, "m1", meta)
    assert one.member_epoch == group.epoch
    two = join(group, "m2", meta)
    assert two.member_epoch > one.member_epoch
    one = beat(group, beat(group, one, meta), meta)
    granted = beat(group, two, meta)
    assert granted.member_epoch > two.member_epoch and granted.partitions
    again = beat(group, granted, meta)
    assert again.member_epoch == granted.member_epoch, "nothing new, same epoch"


def test_a_heartbeat_from_the_previous_epoch_is_answered_but_confirms_nothing() -> None:
    """It was sent before the member took the partitions of its current
    epoch (its answer was lost, or it is a late copy): its owned list says
    nothing about them, so it releases nothing."""
    meta = Metadata(a=1, b=1)
    group = Group(CONFIG, grants_from_ms=10)
    joined = join(group, "m1", meta, now=0, topics=["a", "b"])  # nothing yet: the hold
    early = (joined.member_epoch, frozenset[TopicPartition]())  # a heartbeat sent now, delivered late
    granted = beat(group, joined, meta, now=10)
    assert granted.partitions == tps("a", 0) | tps("b", 0) and granted.member_epoch > joined.member_epoch

    two = join(group, "m2", meta, now=10, topics=["a"])  # the target moves a/0 to m2
    told = beat(group, granted, meta, now=11)  # m1 still owns both; told to let a/0 go
    assert told.partitions == tps("b", 0) and TopicPartition("a", 0) in group.members["m1"].revoking

    late = group.heartbeat("m1", early[0], early[1], now_ms=12, partition_counts=meta)
    assert late.member_epoch == granted.member_epoch and late.partitions == tps("b", 0)
    assert TopicPartition("a", 0) in group.members["m1"].revoking, "a late old heartbeat released a/0"
    assert beat(group, two, meta, now=12).partitions == frozenset()

    beat(group, told, meta, now=13)  # the current epoch, without a/0: a real confirmation
    assert beat(group, two, meta, now=13).partitions == tps("a", 0)
    group.check_invariants()


@pytest.mark.parametrize("epoch_shift", [-2, 1, 100])
def test_any_other_epoch_is_fenced(epoch_shift: int) -> None:
    meta = Metadata(a=2)
    group = Group(CONFIG)
    join(group, "m1", meta)
    two = join(group, "m2", meta)
    epoch = group.members["m2"].epoch + epoch_shift
    with pytest.raises(FencedMemberError):
        group.heartbeat("m2", epoch, [], now_ms=0, partition_counts=meta)
    assert two.member_epoch == group.members["m2"].epoch, "a refused heartbeat changes nothing"


def test_an_unknown_member_is_told_so() -> None:
    group = Group(CONFIG)
    with pytest.raises(UnknownMemberError):
        group.heartbeat("ghost", 1, [], now_ms=0, partition_counts=Metadata())
    with pytest.raises(UnknownMemberError):
        group.check_commit("ghost", 1, [])


def test_a_silent_member_expires_and_its_partitions_move() -> None:
    meta = Metadata(a=2)
    group = Group(CONFIG)
    one = join(group, "m1", meta, now=0)
    two = join(group, "m2", meta, now=0)
    assert group.next_deadline_ms() == 3_000
    assert group.expire(2_999, meta) == []
    beat(group, two, meta, now=2_000)
    assert group.expire(3_000, meta) == ["m1"]
    assert beat(group, two, meta, now=3_000).partitions == tps("a", 0, 1)
    with pytest.raises(UnknownMemberError):
        beat(group, one, meta, now=3_000)
    group.check_invariants()


def test_a_member_that_does_not_revoke_in_time_is_fenced_until_its_session_ends() -> None:
    """Fenced at its revocation deadline, but its partitions stay put until
    its session runs out: it may be consuming them until it hears of it."""
    meta = Metadata(a=2)
    group = Group(CONFIG)
    one = join(group, "m1", meta, now=0)
    two = join(group, "m2", meta, now=0)
    one = beat(group, one, meta, now=1_000, owned=tps("a", 0, 1))  # told to revoke at t=1000
    assert group.members["m1"].revoke_deadline_ms == 6_000
    for now in (2_000, 4_000, 5_999):  # keeps heartbeating, keeps holding
        one = beat(group, one, meta, now=now, owned=tps("a", 0, 1))
        two = beat(group, two, meta, now=now)
    assert group.next_deadline_ms() == 6_000
    assert group.expire(6_000, meta) == []
    assert group.members["m1"].fenced and group.target("m2") == tps("a", 0, 1)
    with pytest.raises(FencedMemberError):
        beat(group, one, meta, now=6_000, owned=tps("a", 0, 1))
    with pytest.raises(FencedMemberError):
        group.check_commit("m1", one.member_epoch, tps("a", 0, 1))
    assert beat(group, two, meta, now=8_000).partitions == frozenset()
    assert group.next_deadline_ms() == 8_999  # m1's session: its last accepted heartbeat + 3 s
    assert group.expire(8_998, meta) == []
    assert group.expire(8_999, meta) == ["m1"]
    assert beat(group, two, meta, now=8_999).partitions == tps("a", 0, 1)
    group.check_invariants()


def test_leave_frees_partitions_at_once_and_is_idempotent() -> None:
    meta = Metadata(a=2)
    group = Group(CONFIG)
    one = join(group, "m1", meta)
    two = join(group, "m2", meta)
    assert group.leave("m1", one.member_epoch, partition_counts=meta)
    assert not group.leave("m1", one.member_epoch, partition_counts=meta)
    assert beat(group, two, meta).partitions == tps("a", 0, 1)


def test_rejoining_starts_a_new_incarnation_that_fences_the_old() -> None:
    meta = Metadata(a=2)
    group = Group(CONFIG)
    old = join(group, "m1", meta)
    new = join(group, "m1", meta)
    assert new.member_epoch > old.member_epoch
    assert new.partitions == tps("a", 0, 1)
    for call in (
        lambda: beat(group, old, meta),
        lambda: group.leave("m1", old.member_epoch, partition_counts=meta),
        lambda: group.check_commit("m1", old.member_epoch, []),
    ):
        with pytest.raises(FencedMemberError):
            call()
    assert group.members["m1"].epoch == new.member_epoch


def test_commits_follow_the_assignment_epochs() -> None:
    """KIP-1251: given-at epoch <= commit epoch <= member epoch, for held partitions."""
    meta = Metadata(a=2)
    group = Group(CONFIG)
    one = join(group, "m1", meta)  # holds a/0 and a/1 from one.member_epoch
    group.check_commit("m1", one.member_epoch, tps("a", 0, 1))
    two = join(group, "m2", meta)
    one = beat(group, one, meta, owned=tps("a", 0, 1))
    moving = next(iter(group.members["m1"].revoking))
    group.check_commit("m1", one.member_epoch, [moving])  # still allowed while revoking
    one = beat(group, one, meta)  # lets it go
    with pytest.raises(StaleMemberEpochError):
        group.check_commit("m1", one.member_epoch, [moving])
    two = beat(group, two, meta)
    assert two.partitions == {moving}
    group.check_commit("m2", two.member_epoch, [moving])
    with pytest.raises(StaleMemberEpochError):  # m2 did not own it at its join epoch
        group.check_commit("m2", group.members["m2"].join_epoch, [moving])
    with pytest.raises(FencedMemberError):  # an epoch never given
        group.check_commit("m2", two.member_epoch + 1, [moving])


def test_a_subscription_change_reassigns() -> None:
    meta = Metadata(a=1, b=1)
    group = Group(CONFIG)
    one = join(group, "m1", meta, topics=["a"])
    assert one.partitions == tps("a", 0)
    epoch = group.assignment_epoch
    one = group.heartbeat(
        "m1", one.member_epoch, one.partitions, now_ms=0, partition_counts=meta, topics=frozenset({"b"})
    )
    assert group.assignment_epoch > epoch
    assert one.partitions == frozenset(), "a/0 must be let go before b/0 comes"
    one = beat(group, one, meta)
    assert one.partitions == tps("b", 0)


def test_new_partitions_of_a_subscribed_topic_are_assigned() -> None:
    meta = Metadata(a=1)
    group = Group(CONFIG)
    one = join(group, "m1", meta, topics=["a", "later"])
    meta.counts.update(a=3, later=1)
    one = beat(group, one, meta)
    assert one.partitions == tps("a", 0, 1, 2) | tps("later", 0)


def test_nothing_is_granted_during_the_failover_hold() -> None:
    meta = Metadata(a=2)
    group = Group(CONFIG, first_epoch=1 << 32, grants_from_ms=10_000)
    one = join(group, "m1", meta, now=9_000)
    assert one.partitions == frozenset() and one.member_epoch > 1 << 32
    assert beat(group, one, meta, now=9_999).partitions == frozenset()
    assert beat(group, one, meta, now=10_000).partitions == tps("a", 0, 1)


def test_limits_are_enforced_without_side_effects() -> None:
    meta = Metadata(a=1)
    group = Group(CONFIG)
    for member in ("m1", "m2", "m3"):
        join(group, member, meta)
    epoch = group.epoch
    with pytest.raises(GroupFullError):
        join(group, "m4", meta)
    assert "m4" not in group.members and group.epoch == epoch
    join(group, "m3", meta)  # a rejoin is not a new member
    epoch, m1 = group.epoch, group.members["m1"]
    for session, rebalance, reason in (
        (999, 0, "INVALID_SESSION_TIMEOUT"),
        (0, 1_800_001, "INVALID_REBALANCE_TIMEOUT"),
    ):
        with pytest.raises(InvalidGroupRequest) as caught:
            group.join(
                "m1",
                client_id="",
                topics=frozenset({"a"}),
                session_timeout_ms=session,
                rebalance_timeout_ms=rebalance,
                now_ms=0,
                partition_counts=meta,
            )
        assert caught.value.reason == reason
    assert group.members["m1"] is m1 and group.epoch == epoch, "a refused rejoin left the member as it was"
    group.check_invariants()
