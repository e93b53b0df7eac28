"""Random request sequences, honest or not, against one group.

Hypothesis drives joins, heartbeats (with any epoch and any claimed
partitions, so also lies and stale retries), leaves, commits, time passing
and topics growing. After every step:

- the coordinator's bookkeeping is consistent (``Group.check_invariants``:
  above all, no partition held by two members);
- a partition moves straight from one member to another only when the first
  is gone (it expired in that very step);
- a member's partition is released by its own heartbeat only when that
  heartbeat carried its current epoch and did not list the partition;
- an accepted commit comes from a member holding every partition of it,
  at an epoch between the partition's grant and the member's epoch.

Every step's changes go to a log of group metadata records (as the service
appends them before answering), and now and then the coordinator moves: a
successor replays the log and must know the very same members, epochs,
fencing, target and holdings (``cluster/groups/takeover.py``), so the
properties above, checked across the move, say that no partition is owned
by two members at once across coordinator moves either.

At the end, members that follow the protocol honestly for a while end up
owning every subscribed partition exactly once, balanced.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from cluster.groups import GroupError, TopicPartition
from cluster.groups.coordinator import GroupCoordinator, OffsetCommit
from cluster.groups.membership import Group, GroupConfig, GroupState

TENANT, GROUP = "acme", "g"
MEMBERS = [f"m{i}" for i in range(5)]
TOPICS = ("a", "b")
UNIVERSE = [TopicPartition(t, p) for t in TOPICS for p in range(8)]
CONFIG = GroupConfig(
    default_session_timeout_ms=2_000,
    min_session_timeout_ms=1_000,
    max_session_timeout_ms=3_000,
    default_rebalance_timeout_ms=2_500,
    min_rebalance_timeout_ms=1_000,
)

member_st = st.sampled_from(MEMBERS)
topics_st = st.frozensets(st.sampled_from(TOPICS), min_size=1)
claims_st = st.frozensets(st.sampled_from(UNIVERSE), max_size=6)


class GroupMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0
        self.counts = {"a": 3, "b": 2}
        self.coordinator = GroupCoordinator(lambda tenant, topic: self.counts.get(topic, 0), CONFIG)
        self.before: dict[TopicPartition, str] = {}
        self.log: list[bytes] = []
        self.term = 0

    @initialize(grants_from=st.sampled_from([0, 0, 1_500]), a=st.integers(0, 6), b=st.integers(0, 4))
    def setup(self, grants_from: int, a: int, b: int) -> None:
        self.coordinator = GroupCoordinator(
            lambda tenant, topic: self.counts.get(topic, 0), CONFIG, grants_from_ms=grants_from
        )
        self.counts.update(a=a, b=b)

    # --- helpers ---------------------------------------------------------------------

    def group(self) -> Group | None:
        return self.coordinator.membership(TENANT, GROUP)

    def owners(self) -> dict[TopicPartition, str]:
        group = self.group()
        return dict(group.owners()) if group else {}

    def epoch_of(self, member: str, pick: int) -> int:
        """One of the member's plausible epochs (current, previous, join) or
        a random one."""
        group = self.group()
        state = group.members.get(member) if group else None
        if state is None:
            return pick
        return [state.epoch, state.previous_epoch, state.join_epoch, state.epoch + 1, pick][pick % 5]

    # --- rules -------------------------------------------------------------------------

    @rule(member=member_st, topics=topics_st, session=st.sampled_from([1_000, 2_000, 3_000]))
    def join(self, member: str, topics: frozenset[str], session: int) -> None:
        allow = self.coordinator.prepare_join(
            TENANT,
            GROUP,
            member_id=member,
            client_id="",
            topics=topics,
            session_timeout_ms=session,
            rebalance_timeout_ms=0,
        )
        if allow is not None:  # a started coordinator records longer sessions first
            self.log.append(allow.encode())
            self.coordinator.record_sessions(allow)
        self.coordinator.join(
            TENANT,
            GROUP,
            member_id=member,
            client_id="",
            topics=topics,
            session_timeout_ms=session,
            rebalance_timeout_ms=0,
            now_ms=self.now,
        )

    @rule(
        member=member_st,
        pick=st.integers(0, 50),
        claims=claims_st,
        honest=st.booleans(),
        topics=st.none() | topics_st,
    )
    def heartbeat(
        self,
        member: str,
        pick: int,
        claims: frozenset[TopicPartition],
        honest: bool,
        topics: frozenset[str] | None,
    ) -> None:
        group = self.group()
        state = group.members.get(member) if group else None
        epoch = self.epoch_of(member, pick)
        if honest and state is not None:
            claims = frozenset(state.assigned)  # owns what it was given, let go of the rest
            epoch = state.epoch
        held_before = {tp for tp, m in self.owners().items() if m == member}
        epoch_before = state.epoch if state else None
        with contextlib.suppress(GroupError):
            self.coordinator.heartbeat(
                TENANT,
                GROUP,
                member_id=member,
                member_epoch=epoch,
                owned=claims,
                now_ms=self.now,
                topics=topics,
            )
        group = self.group()
        still = group.members.get(member) if group else None
        if still is not None and state is not None and still.join_epoch == state.join_epoch:
            released = held_before - {tp for tp, m in self.owners().items() if m == member}
            for tp in released:
                assert epoch == epoch_before and tp not in claims, (
                    f"{tp} released by a heartbeat with epoch {epoch} (current {epoch_before}) claiming {claims}"
                )

    @rule(member=member_st, pick=st.integers(0, 50))
    def leave(self, member: str, pick: int) -> None:
        with contextlib.suppress(GroupError):
            self.coordinator.leave(
                TENANT, GROUP, member_id=member, member_epoch=self.epoch_of(member, pick), now_ms=self.now
            )

    @rule(member=st.sampled_from(["", *MEMBERS]), pick=st.integers(0, 50), partitions=claims_st)
    def commit(self, member: str, pick: int, partitions: frozenset[TopicPartition]) -> None:
        epoch = self.epoch_of(member, pick)
        offsets = [OffsetCommit(tp.topic, tp.partition, 1) for tp in sorted(partitions)]
        try:
            records = self.coordinator.prepare_commit(
                TENANT,
                GROUP,
                member_id=member,
                member_epoch=epoch,
                offsets=offsets,
                now_ms=self.now,
                commit_timestamp_ms=0,
            )
        except GroupError:
            return
        assert len(records) == len(offsets)
        group = self.group()
        if not member:
            assert group is None, "a simple commit was accepted while the group has members"
            assert all(tp.partition < self.counts[tp.topic] for tp in partitions)
            return
        assert group is not None
        state = group.members[member]
        assert not state.fenced
        for tp in partitions:
            given_at = state.assigned.get(tp, state.revoking.get(tp))
            assert group.owners().get(tp) == member and given_at is not None
            assert given_at <= epoch <= state.epoch

    @rule(ms=st.integers(0, 1_500))
    def time_passes(self, ms: int) -> None:
        self.now += ms

    @rule()
    def expire(self) -> None:
        self.coordinator.expire(self.now)

    @rule()
    def coordinator_moves(self) -> None:
        old = self.group()
        self.term += 1
        successor = GroupCoordinator(
            lambda tenant, topic: self.counts.get(topic, 0), CONFIG, epoch_base=self.term << 32
        )
        successor.replay(enumerate(self.log))
        started = successor.start(self.now, self.term)
        self.log.append(started.encode())
        successor.record_sessions(started)
        self.coordinator = successor
        new = self.group()
        if old is None:
            assert new is None
            return
        assert new is not None
        # Epochs go on above the new term's base; all else is as it was.
        assert new.epoch >= max(old.epoch, self.term << 32)
        assert replace(new.snapshot(), epoch=0) == replace(old.snapshot(), epoch=0), "the group as it was"
        assert dict(new.owners()) == dict(old.owners())
        assert all(m.session_deadline_ms >= self.now + m.session_timeout_ms for m in new.members.values())

    @rule(topic=st.sampled_from(TOPICS), more=st.integers(1, 3))
    def topic_grows(self, topic: str, more: int) -> None:
        self.counts[topic] = min(8, self.counts[topic] + more)

    # --- properties ------------------------------------------------------------------------

    @invariant()
    def changes_are_recorded(self) -> None:
        """As the service does before it answers (takeover, invariant 1)."""
        seq, records = self.coordinator.metadata_records()
        self.log += [record.encode() for record in records]
        self.coordinator.metadata_recorded(seq)
        assert self.coordinator.unrecorded_change(TENANT, GROUP) is None

    @invariant()
    def bookkeeping_is_consistent_and_moves_go_through_nobody(self) -> None:
        group = self.group()
        if group is not None:
            group.check_invariants()
        after = self.owners()
        members = set(group.members) if group else set()
        for tp, was in self.before.items():
            now = after.get(tp)
            if now is not None and now != was:
                assert was not in members, f"{tp} went from {was} to {now} while {was} is still a member"
        self.before = after

    def teardown(self) -> None:
        """Everyone still here follows the protocol for a while: every
        subscribed partition ends up owned exactly once, balanced."""
        for _ in range(20):
            self.now += 400
            self.coordinator.expire(self.now)  # a periodic tick (requests also expire their group)
            self.bookkeeping_is_consistent_and_moves_go_through_nobody()
            group = self.group()
            if group is None:
                return
            for member, state in sorted(group.members.items()):
                if not state.fenced:
                    with contextlib.suppress(GroupError):
                        self.coordinator.heartbeat(
                            TENANT,
                            GROUP,
                            member_id=member,
                            member_epoch=state.epoch,
                            owned=frozenset(state.assigned),
                            now_ms=self.now,
                        )
                    self.bookkeeping_is_consistent_and_moves_go_through_nobody()
        group = self.group()
        if group is None:
            return
        assert group.state is GroupState.STABLE, {m: group.member_state(m) for m in group.members}
        subscribed = set().union(*(m.topics for m in group.members.values()))
        wanted = {TopicPartition(t, p) for t in subscribed for p in range(self.counts[t])}
        assert set(group.owners()) == wanted
        for donor, state in group.members.items():
            for receiver, other in group.members.items():
                if len(state.assigned) - len(other.assigned) >= 2:
                    assert not any(tp.topic in other.topics for tp in state.assigned), (donor, receiver)


GroupMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40)
test_random_request_sequences = GroupMachine.TestCase
