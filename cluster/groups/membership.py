"""One consumer group's membership: members, epochs, target assignment and
the revocation handshake (KIP-848's server-side protocol, sans I/O).

Time (``now_ms``) and topic metadata (``partition_counts``: topic → number of
partitions, 0 for a topic that does not exist) are passed into every call;
nothing here reads a clock, does I/O or draws random numbers.

Vocabulary:

- the *target* assignment is what the assignor wants each member to own; it
  is recomputed whenever the membership, a subscription or the metadata of a
  subscribed topic changes, and each recomputation takes a new group epoch;
- a member's *assigned* partitions are what the coordinator lets it own now
  (what the heartbeat answer lists); its *revoking* partitions are ones it
  was told to give up and has not yet confirmed giving up. A partition in
  either set is *held* by that member;
- a member's *epoch* is a group epoch value: the one at which it last
  received partitions (or joined). Epochs come from one counter per group,
  so they only grow, and a member never sees the same epoch twice with
  different partitions added.

Invariants (``check_invariants`` checks the bookkeeping behind 1;
tests/groups/test_properties.py checks 1, 2 and 4 after every step of
random request sequences):

1. No partition is held by two members: ``owners()`` maps each held
   partition to exactly one member, and a member's assigned and revoking
   sets are disjoint.
2. A partition is handed to a member only when nobody holds it. A holder
   stops holding it only when (a) a heartbeat carrying the member's *current*
   epoch no longer lists it as owned, or (b) the member leaves, joins again
   (a joining member owns nothing), or its session expires. So, as far as
   the coordinator can know, two members never own one partition at once.
   A member that misses its revocation deadline (``rebalance_timeout_ms``
   after it was first told to revoke) is *fenced*: its heartbeats and
   commits are refused from then on and it leaves the target assignment,
   but it keeps holding its partitions until its session runs out, because
   it may still be consuming them until it hears it was fenced.
3. While a member has partitions to revoke it receives nothing new and its
   epoch stays put; it gets the rest of its target after confirming.
4. Commits are fenced: ``check_commit`` accepts ``(member, epoch, partitions)``
   only when the member holds every partition and, for each,
   ``epoch it was given at <= epoch <= member's epoch`` (KIP-1251's rule).
5. Nothing is granted before ``grants_from_ms``: a coordinator that took
   over from one that did not record its groups (``takeover``: a log without
   group metadata) does not know what the previous one handed out, so it
   waits until every member of the previous one must have dropped its
   partitions (a member drops everything after ``session_timeout_ms``
   without a successful heartbeat).
6. ``changes`` grows whenever something a successor must know changes
   (``GroupSnapshot``: members, epochs, subscriptions, fencing, the target,
   what each member holds); never for a heartbeat that only refreshes a
   session. ``restore(snapshot())`` gives a group with the same members,
   epochs, holdings and target; only session and revocation clocks restart
   (``cluster/groups/takeover.py`` says why that is safe).

Assumptions about members (the client's half of the contract):

- a member takes every partition of an answer as soon as it reads it, and
  reports in ``owned`` what it owns when it sends the heartbeat;
- a member gives up a partition (committing first) when an answer no longer
  lists it; on ``FENCED_MEMBER`` or ``UNKNOWN_MEMBER_ID`` it drops all of its
  partitions without committing and joins again; when ``session_timeout_ms``
  has passed since it sent its last heartbeat that was answered, it drops
  all of its partitions (so it always stops before the coordinator's
  session deadline, which counts from when that heartbeat arrived);
- a JoinGroup reaches the coordinator once and in order: a late copy would
  start a new incarnation (owning nothing) while the member consumes.
  Heartbeats, commits and leaves may arrive late or twice: epochs sort them
  out (below, and ``tests/groups/sim.py`` delivers such copies).

Why a current-epoch heartbeat can confirm: every grant takes a fresh epoch
(invariant 3 keeps revocations from taking one), so a heartbeat carrying
epoch E was sent after the member read the answer that granted E's
partitions, and lists them unless it let them go. A heartbeat carrying the
member's *previous* epoch (its last answer was lost, or it is a late copy)
is answered, but its ``owned`` list is not taken as a confirmation: it may
have been sent before the member took partitions it now owns.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from cluster.groups import (
    FencedMemberError,
    GroupFullError,
    InvalidGroupRequest,
    StaleMemberEpochError,
    TopicPartition,
    UnknownMemberError,
)
from cluster.groups.assignor import assign

__all__ = [
    "Assignment",
    "Group",
    "GroupConfig",
    "GroupSnapshot",
    "GroupState",
    "Member",
    "MemberSnapshot",
    "MemberState",
    "PartitionCounts",
]

PartitionCounts = Callable[[str], int]
"""Topic name → number of partitions; 0 when the topic does not exist."""


@dataclass(frozen=True, slots=True)
class GroupConfig:
    """Limits of the coordinator. 0 in a request means the default.

    The session bounds follow KIP-848's defaults (45 s, at most 60 s). A new
    coordinator waits before granting partitions (``Group``, invariant 5)
    for the longest session its predecessors admitted (``coordinator``,
    failover fence) plus ``failover_margin_ms``: never more than the
    maximum plus the margin."""

    default_session_timeout_ms: int = 45_000
    min_session_timeout_ms: int = 6_000
    max_session_timeout_ms: int = 60_000
    default_rebalance_timeout_ms: int = 300_000
    min_rebalance_timeout_ms: int = 1_000
    max_rebalance_timeout_ms: int = 1_800_000
    max_heartbeat_interval_ms: int = 5_000
    max_group_size: int = 1_000
    failover_margin_ms: int = 5_000
    """Added to the failover fence (``coordinator``): a deposed leader may
    answer heartbeats from memory until it notices it lost its quorum (Raft
    check-quorum: one to two election timeouts, 0.3-0.6 s with the default
    ``[raft]`` timing; an idle, hibernating leader ticks again only once the
    transport reports its peers down, ``peer_timeout``, 1.5 s by default),
    keeping old members' sessions alive that much past the new leader's
    start."""

    def validate(self) -> None:
        if (
            not 1
            <= self.min_session_timeout_ms
            <= self.default_session_timeout_ms
            <= self.max_session_timeout_ms
        ):
            raise ValueError("session timeouts must satisfy 1 <= min <= default <= max")
        if not (
            1
            <= self.min_rebalance_timeout_ms
            <= self.default_rebalance_timeout_ms
            <= self.max_rebalance_timeout_ms
        ):
            raise ValueError("rebalance timeouts must satisfy 1 <= min <= default <= max")
        if self.max_heartbeat_interval_ms < 1 or self.max_group_size < 1 or self.failover_margin_ms < 0:
            raise ValueError(
                "max_heartbeat_interval_ms and max_group_size must be positive, failover_margin_ms not negative"
            )

    def session_timeout(self, requested_ms: int) -> int:
        value = requested_ms or self.default_session_timeout_ms
        if not self.min_session_timeout_ms <= value <= self.max_session_timeout_ms:
            raise InvalidGroupRequest(
                "INVALID_SESSION_TIMEOUT",
                f"session_timeout_ms {value} is outside [{self.min_session_timeout_ms}, "
                f"{self.max_session_timeout_ms}]; send 0 for the default ({self.default_session_timeout_ms})",
            )
        return value

    def rebalance_timeout(self, requested_ms: int) -> int:
        value = requested_ms or self.default_rebalance_timeout_ms
        if not self.min_rebalance_timeout_ms <= value <= self.max_rebalance_timeout_ms:
            raise InvalidGroupRequest(
                "INVALID_REBALANCE_TIMEOUT",
                f"rebalance_timeout_ms {value} is outside [{self.min_rebalance_timeout_ms}, "
                f"{self.max_rebalance_timeout_ms}]; send 0 for the default ({self.default_rebalance_timeout_ms})",
            )
        return value

    def heartbeat_interval(self, session_timeout_ms: int) -> int:
        # Three heartbeats per session: one lost answer never costs a session.
        return max(1, min(self.max_heartbeat_interval_ms, session_timeout_ms // 3))


class GroupState(enum.Enum):
    EMPTY = "EMPTY"
    RECONCILING = "RECONCILING"
    STABLE = "STABLE"


class MemberState(enum.Enum):
    STABLE = "STABLE"
    UNREVOKED_PARTITIONS = "UNREVOKED_PARTITIONS"
    """It holds partitions its target no longer has and has not let them go."""
    UNRELEASED_PARTITIONS = "UNRELEASED_PARTITIONS"
    """Its target has partitions another member still holds (or the
    coordinator is not granting yet)."""


@dataclass(slots=True)
class Member:
    member_id: str
    client_id: str
    topics: frozenset[str]
    session_timeout_ms: int
    rebalance_timeout_ms: int
    join_epoch: int
    epoch: int
    previous_epoch: int
    """-1 until the member's epoch first changes after joining."""
    last_heartbeat_ms: int
    assigned: dict[TopicPartition, int] = field(default_factory=dict)
    """Partition → the epoch it was given at."""
    revoking: dict[TopicPartition, int] = field(default_factory=dict)
    """Partition → the epoch it was given at (commits stay allowed until the
    member confirms it let go)."""
    revoke_deadline_ms: int | None = None
    fenced: bool = False
    """It missed its revocation deadline (invariant 2)."""

    @property
    def session_deadline_ms(self) -> int:
        return self.last_heartbeat_ms + self.session_timeout_ms


@dataclass(frozen=True, slots=True)
class MemberSnapshot:
    """What a successor must know of one member (no clocks: they restart)."""

    member_id: str
    client_id: str
    topics: frozenset[str]
    session_timeout_ms: int
    rebalance_timeout_ms: int
    join_epoch: int
    epoch: int
    previous_epoch: int
    assigned: Mapping[TopicPartition, int]
    revoking: Mapping[TopicPartition, int]
    fenced: bool


@dataclass(frozen=True, slots=True)
class GroupSnapshot:
    """What a successor must know of one group (invariant 6); members sorted
    by id, so equal groups give equal snapshots (and equal records)."""

    epoch: int
    assignment_epoch: int
    metadata: Mapping[str, int]
    """Subscribed topic → the partition count the target was computed with."""
    target: Mapping[str, frozenset[TopicPartition]]
    members: tuple[MemberSnapshot, ...]


@dataclass(frozen=True, slots=True)
class Assignment:
    """A heartbeat's (or join's) answer to one member."""

    member_id: str
    member_epoch: int
    partitions: frozenset[TopicPartition]
    heartbeat_interval_ms: int


class Group:
    """The membership of one group. Not thread-safe; one owner calls it."""

    def __init__(self, config: GroupConfig, *, first_epoch: int = 0, grants_from_ms: int = 0) -> None:
        self._config = config
        self._epoch = first_epoch
        self._assignment_epoch = first_epoch
        self._grants_from_ms = grants_from_ms
        self._members: dict[str, Member] = {}
        self._target: dict[str, frozenset[TopicPartition]] = {}
        self._metadata: dict[str, int] = {}
        """Subscribed topic → partition count the target was computed with."""
        self._owner: dict[TopicPartition, str] = {}
        self._changes = 0

    @classmethod
    def restore(
        cls,
        config: GroupConfig,
        snapshot: GroupSnapshot,
        *,
        now_ms: int,
        sessions_from_ms: int,
        epoch_floor: int,
        grants_from_ms: int = 0,
    ) -> Group:
        """The group ``snapshot`` describes, taken over at ``now_ms``: every
        member keeps what it holds, its session restarts at
        ``sessions_from_ms`` (not before ``now_ms``) and a pending revocation
        gets a full ``rebalance_timeout_ms`` again; epochs continue above
        ``epoch_floor`` and the snapshot's own."""
        group = cls(config, first_epoch=max(snapshot.epoch, epoch_floor), grants_from_ms=grants_from_ms)
        group._assignment_epoch = snapshot.assignment_epoch
        group._metadata = dict(snapshot.metadata)
        group._target = dict(snapshot.target)
        for saved in snapshot.members:
            member = Member(
                member_id=saved.member_id,
                client_id=saved.client_id,
                topics=saved.topics,
                session_timeout_ms=saved.session_timeout_ms,
                rebalance_timeout_ms=saved.rebalance_timeout_ms,
                join_epoch=saved.join_epoch,
                epoch=saved.epoch,
                previous_epoch=saved.previous_epoch,
                last_heartbeat_ms=max(now_ms, sessions_from_ms),
                assigned=dict(saved.assigned),
                revoking=dict(saved.revoking),
                revoke_deadline_ms=now_ms + saved.rebalance_timeout_ms if saved.revoking else None,
                fenced=saved.fenced,
            )
            group._members[member.member_id] = member
            for tp in (*member.assigned, *member.revoking):
                group._owner[tp] = member.member_id
        return group

    def snapshot(self) -> GroupSnapshot:
        """What a successor needs to take the group over (invariant 6)."""
        return GroupSnapshot(
            epoch=self._epoch,
            assignment_epoch=self._assignment_epoch,
            metadata=MappingProxyType(dict(self._metadata)),
            target=MappingProxyType(dict(self._target)),
            members=tuple(
                MemberSnapshot(
                    member_id=m.member_id,
                    client_id=m.client_id,
                    topics=m.topics,
                    session_timeout_ms=m.session_timeout_ms,
                    rebalance_timeout_ms=m.rebalance_timeout_ms,
                    join_epoch=m.join_epoch,
                    epoch=m.epoch,
                    previous_epoch=m.previous_epoch,
                    assigned=MappingProxyType(dict(m.assigned)),
                    revoking=MappingProxyType(dict(m.revoking)),
                    fenced=m.fenced,
                )
                for m in sorted(self._members.values(), key=lambda m: m.member_id)
            ),
        )

    # --- reads ---------------------------------------------------------------

    @property
    def epoch(self) -> int:
        """The group epoch: the last value handed out (target or member)."""
        return self._epoch

    @property
    def changes(self) -> int:
        """Grows with every change a successor must know (invariant 6)."""
        return self._changes

    @property
    def assignment_epoch(self) -> int:
        """The group epoch at which the current target was computed."""
        return self._assignment_epoch

    @property
    def members(self) -> Mapping[str, Member]:
        return MappingProxyType(self._members)

    def owners(self) -> Mapping[TopicPartition, str]:
        """Every held partition → the member holding it."""
        return MappingProxyType(self._owner)

    def target(self, member_id: str) -> frozenset[TopicPartition]:
        return self._target.get(member_id, frozenset())

    def member_state(self, member_id: str) -> MemberState:
        member = self._members[member_id]
        target = self.target(member_id)
        if member.revoking or any(tp not in target for tp in member.assigned):
            return MemberState.UNREVOKED_PARTITIONS
        if any(tp not in member.assigned for tp in target):
            return MemberState.UNRELEASED_PARTITIONS
        return MemberState.STABLE

    @property
    def state(self) -> GroupState:
        if not self._members:
            return GroupState.EMPTY
        if all(self.member_state(m) is MemberState.STABLE for m in self._members):
            return GroupState.STABLE
        return GroupState.RECONCILING

    def next_deadline_ms(self) -> int | None:
        """The earliest time ``expire`` could remove someone, or None."""
        deadlines = [m.session_deadline_ms for m in self._members.values()]
        deadlines += [
            m.revoke_deadline_ms
            for m in self._members.values()
            if m.revoke_deadline_ms is not None and not m.fenced
        ]
        return min(deadlines, default=None)

    # --- requests ------------------------------------------------------------

    def join(
        self,
        member_id: str,
        *,
        client_id: str,
        topics: frozenset[str],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        now_ms: int,
        partition_counts: PartitionCounts,
    ) -> Assignment:
        """Add a member, or start a new incarnation of one that is already
        here (it was fenced, or its join answer was lost): a member joining
        owns nothing, so whatever the old incarnation held is released."""
        session = self._config.session_timeout(session_timeout_ms)
        rebalance = self._config.rebalance_timeout(rebalance_timeout_ms)
        if member_id in self._members:
            self._remove(member_id)
        elif len(self._members) >= self._config.max_group_size:
            raise GroupFullError(
                f"the group already has {len(self._members)} members, the most a group may have"
            )
        member = Member(
            member_id=member_id,
            client_id=client_id,
            topics=topics,
            session_timeout_ms=session,
            rebalance_timeout_ms=rebalance,
            join_epoch=0,
            epoch=0,
            previous_epoch=-1,
            last_heartbeat_ms=now_ms,
        )
        self._members[member_id] = member
        self._recompute_target(partition_counts)
        # The new epoch fences every request of an earlier incarnation.
        member.join_epoch = member.epoch = self._epoch
        self._reconcile(member, now_ms)
        return self._answer(member)

    def heartbeat(
        self,
        member_id: str,
        member_epoch: int,
        owned: Iterable[TopicPartition],
        *,
        now_ms: int,
        partition_counts: PartitionCounts,
        topics: frozenset[str] | None = None,
    ) -> Assignment:
        """Refresh the member's session, take its confirmations, move it
        towards its target. ``topics`` (when not None) replaces its
        subscription."""
        member = self._member(member_id)
        self._refuse_if_fenced(member)
        if member_epoch == member.epoch:
            confirms = True
        elif member_epoch == member.previous_epoch:
            confirms = False  # its last answer was lost; see the module docstring
        else:
            raise FencedMemberError(
                f"member {member_id!r} sent epoch {member_epoch}, but its epoch is {member.epoch}; "
                "drop every partition and join again"
            )
        # Never earlier than a takeover set it (``restore``).
        member.last_heartbeat_ms = max(member.last_heartbeat_ms, now_ms)
        if confirms and member.revoking:
            still_owned = set(owned)
            released = [tp for tp in member.revoking if tp not in still_owned]
            for tp in released:
                del member.revoking[tp]
                del self._owner[tp]
            if released:
                self._changes += 1
        if topics is not None and topics != member.topics:
            member.topics = topics
            self._recompute_target(partition_counts)
        else:
            self._refresh_metadata(partition_counts)
        self._reconcile(member, now_ms)
        return self._answer(member)

    def leave(self, member_id: str, member_epoch: int, *, partition_counts: PartitionCounts) -> bool:
        """Remove the member (it has stopped consuming and committed). A
        member already gone is not an error (retries are harmless); an epoch
        from an earlier incarnation is, so a delayed leave cannot remove the
        incarnation that replaced it. Returns whether someone was removed."""
        member = self._members.get(member_id)
        if member is None:
            return False
        if not member.join_epoch <= member_epoch <= member.epoch:
            raise FencedMemberError(
                f"member {member_id!r} sent epoch {member_epoch}, which is not one of its current incarnation"
            )
        self._remove(member_id)
        self._recompute_target(partition_counts)
        return True

    def expire(self, now_ms: int, partition_counts: PartitionCounts) -> list[str]:
        """Fence members past their revocation deadline and remove members
        whose session expired; returns the removed ids."""
        late = [
            member
            for member in self._members.values()
            if not member.fenced
            and member.revoke_deadline_ms is not None
            and now_ms >= member.revoke_deadline_ms
        ]
        for member in late:
            member.fenced = True
            self._changes += 1
        gone = sorted(m.member_id for m in self._members.values() if now_ms >= m.session_deadline_ms)
        for member_id in gone:
            self._remove(member_id)
        if gone or late:
            self._recompute_target(partition_counts)
        return gone

    def check_commit(self, member_id: str, member_epoch: int, partitions: Iterable[TopicPartition]) -> None:
        """Raise unless the member may commit offsets for ``partitions`` at
        ``member_epoch`` (invariant 4)."""
        member = self._member(member_id)
        self._refuse_if_fenced(member)
        if not member.join_epoch <= member_epoch <= member.epoch:
            raise FencedMemberError(
                f"member {member_id!r} sent epoch {member_epoch}, which is not one of its current incarnation "
                f"(epochs {member.join_epoch}..{member.epoch}); drop every partition and join again"
            )
        for tp in partitions:
            given_at = member.assigned.get(tp, member.revoking.get(tp))
            if given_at is None or member_epoch < given_at:
                raise StaleMemberEpochError(
                    f"member {member_id!r} does not own {tp.topic}/{tp.partition} at epoch {member_epoch}; "
                    "heartbeat and commit only partitions of the current assignment"
                )

    # --- internals -----------------------------------------------------------

    def _member(self, member_id: str) -> Member:
        member = self._members.get(member_id)
        if member is None:
            raise UnknownMemberError(
                f"member {member_id!r} is not in the group (it left, expired, or the coordinator "
                "moved); drop every partition and join again"
            )
        return member

    @staticmethod
    def _refuse_if_fenced(member: Member) -> None:
        if member.fenced:
            raise FencedMemberError(
                f"member {member.member_id!r} did not give up its revoked partitions within its "
                f"rebalance timeout ({member.rebalance_timeout_ms} ms); drop every partition and join again"
            )

    def _remove(self, member_id: str) -> None:
        self._changes += 1
        member = self._members.pop(member_id)
        for tp in (*member.assigned, *member.revoking):
            del self._owner[tp]
        self._target.pop(member_id, None)

    def _recompute_target(self, partition_counts: PartitionCounts) -> None:
        # A fenced member is leaving: plan without it (it keeps holding what
        # it holds until its session ends, so nobody gets that any sooner).
        subscriptions = {m.member_id: m.topics for m in self._members.values() if not m.fenced}
        topics = sorted({topic for subscribed in subscriptions.values() for topic in subscribed})
        self._metadata = {topic: partition_counts(topic) for topic in topics}
        self._changes += 1
        self._epoch += 1
        self._assignment_epoch = self._epoch
        self._target = assign(subscriptions, self._metadata, self._target)

    def _refresh_metadata(self, partition_counts: PartitionCounts) -> None:
        if any(partition_counts(topic) != count for topic, count in self._metadata.items()):
            self._recompute_target(partition_counts)

    def _reconcile(self, member: Member, now_ms: int) -> None:
        target = self.target(member.member_id)
        to_revoke = [tp for tp in member.assigned if tp not in target]
        for tp in to_revoke:
            member.revoking[tp] = member.assigned.pop(tp)
        if to_revoke:
            self._changes += 1
        if member.revoking:
            # Invariant 3: nothing new until it lets go; the clock starts once.
            if member.revoke_deadline_ms is None:
                member.revoke_deadline_ms = now_ms + member.rebalance_timeout_ms
            return
        member.revoke_deadline_ms = None
        if now_ms < self._grants_from_ms:
            return
        free = sorted(tp for tp in target if tp not in member.assigned and tp not in self._owner)
        if not free:
            return
        # A fresh epoch for every grant: a heartbeat with this epoch was sent
        # after the member saw these partitions, so its `owned` list speaks
        # for them (invariant 2a).
        self._epoch += 1
        self._changes += 1
        member.previous_epoch, member.epoch = member.epoch, self._epoch
        for tp in free:
            member.assigned[tp] = member.epoch
            self._owner[tp] = member.member_id

    def _answer(self, member: Member) -> Assignment:
        return Assignment(
            member_id=member.member_id,
            member_epoch=member.epoch,
            partitions=frozenset(member.assigned),
            heartbeat_interval_ms=self._config.heartbeat_interval(member.session_timeout_ms),
        )

    def check_invariants(self) -> None:
        """Raise AssertionError if the bookkeeping is inconsistent (tests)."""
        held: dict[TopicPartition, str] = {}
        for member in self._members.values():
            assert not (member.assigned.keys() & member.revoking.keys()), member.member_id
            for tp in (*member.assigned, *member.revoking):
                assert tp not in held, f"{tp} held by {held.get(tp)} and {member.member_id}"
                held[tp] = member.member_id
            assert member.join_epoch <= member.epoch <= self._epoch
            assert all(member.join_epoch <= e <= member.epoch for e in member.assigned.values())
            assert all(member.join_epoch <= e <= member.epoch for e in member.revoking.values())
            assert (member.revoke_deadline_ms is not None) == bool(member.revoking), member.member_id
        assert held == self._owner, "the owner index disagrees with the members"
        assert set(self._target) == {m.member_id for m in self._members.values() if not m.fenced}
