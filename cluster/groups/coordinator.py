"""Every consumer group of one coordinator partition: membership (soft state
in memory) and committed offsets (a table rebuilt from the partition's log).

Pure like ``membership``: callers pass ``now_ms``; topic metadata comes from
``topic_metadata(tenant, topic) -> partition count`` (0: no such topic),
given at construction because it lives elsewhere (the controller).

Durability split (as in Kafka):

- Committed offsets are durable. A commit is validated here
  (``prepare_commit``), appended to the log by the caller, and applied here
  (``apply``) once the log has it. A new leader of the partition builds a
  fresh coordinator and ``replay``s the log before serving.
- Membership is recorded too (``takeover``): every change a successor must
  know appends the group's metadata, durable before any answer that
  depends on it (``unrecorded_change``, ``metadata_records``,
  ``metadata_recorded``); a new coordinator ``start``s with the recorded
  groups, so members keep their partitions across a failover and what
  nobody holds is granted at once.

Failover fence, for logs of older versions only (``takeover``, invariant
4): members of a previous coordinator that recorded no group may still be
consuming their partitions, unknown to the new one, until their sessions
run out. So the log records how long a session may be: each coordinator, before
serving, appends a ``CoordinatorStarted`` record with the longest session
the log already allows, and before it admits a member with a longer one
(``prepare_join``) it appends another with that session. A coordinator
grants no partition until the longest session in the log (plus a margin
for a deposed leader still answering) after it ``start``s (``membership``,
invariant 5). So a failover holds a group for the longest session ever
admitted on its partition (by any group that hashes there: with 6 s
sessions throughout, 6 s plus the margin), not the longest the
configuration would allow. The first coordinator of a partition, or one
whose predecessors admitted nobody, grants at once.

Epochs: each coordinator's start at ``epoch_base``; pass a value above any
an earlier coordinator used (the service derives it from the Raft term), so
no request of an old incarnation ever matches a new epoch.

Invariants:

- Every request is checked before it changes anything: a refused request
  leaves the state as it was.
- No join is admitted with a session longer than the log allows (the
  records of ``start`` and ``prepare_join``, durable before ``record_sessions``
  is called with them). A coordinator never ``start``ed (no log behind it:
  tests, tools) admits any session the configuration allows.
- Expiry is lazy and exact: every call on a group first expires that group's
  members at ``now_ms``, so no member is served past its deadline even if
  nobody calls ``expire``. ``expire`` (all groups) is for a periodic tick;
  the service runs none and relies on the lazy expiry.
- A group exists while it has members or committed offsets. An empty group
  is forgotten, but the epochs of a group created later under the same name
  continue above every epoch this coordinator has handed out.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from cluster.controller.model import TOPIC_NAME_MAX, check_topic_name
from cluster.groups import (
    GroupNotFoundError,
    InvalidGroupRequest,
    TopicPartition,
    UnknownMemberError,
    UnknownPartitionError,
)
from cluster.groups.membership import (
    Assignment,
    Group,
    GroupConfig,
    GroupState,
    MemberState,
)
from cluster.groups.offsets import (
    CommittedOffset,
    CommittedOffsets,
    CoordinatorStarted,
    GroupMetadataDeleted,
    GroupMetadataRecord,
    OffsetCommitRecord,
    decode_at,
)
from cluster.groups.takeover import TakeoverState

__all__ = [
    "CLIENT_ID_MAX",
    "GROUP_NAME_MAX",
    "MAX_METADATA_BYTES",
    "MAX_SUBSCRIBED_TOPICS",
    "MEMBER_ID_MAX",
    "GroupCoordinator",
    "GroupDescription",
    "GroupSummary",
    "MemberDescription",
    "OffsetCommit",
    "TopicMetadata",
]

GROUP_NAME_MAX = TOPIC_NAME_MAX
MEMBER_ID_MAX = 64
CLIENT_ID_MAX = 255
MAX_METADATA_BYTES = 4096
"""Kafka's offset.metadata.max.bytes default."""
MAX_SUBSCRIBED_TOPICS = 1000

_NAME = re.compile(r"[A-Za-z0-9._-]+")

TopicMetadata = Callable[[str, str], int]
"""(tenant, topic) → number of partitions; 0 when the tenant has no such topic."""


@dataclass(frozen=True, slots=True)
class OffsetCommit:
    """One partition's offset in a commit request."""

    topic: str
    partition: int
    offset: int
    metadata: str = ""


@dataclass(frozen=True, slots=True)
class MemberDescription:
    member_id: str
    client_id: str
    member_epoch: int
    state: MemberState
    topics: tuple[str, ...]
    assigned: tuple[TopicPartition, ...]
    revoking: tuple[TopicPartition, ...]
    target: tuple[TopicPartition, ...]
    session_timeout_ms: int
    rebalance_timeout_ms: int
    fenced: bool
    """It missed its revocation deadline and leaves when its session ends."""


@dataclass(frozen=True, slots=True)
class GroupDescription:
    group: str
    state: GroupState
    group_epoch: int
    assignment_epoch: int
    members: tuple[MemberDescription, ...]
    """Sorted by member id."""


@dataclass(frozen=True, slots=True)
class GroupSummary:
    group: str
    state: GroupState
    member_count: int


def _check_name(what: str, value: str, limit: int) -> None:
    if not 1 <= len(value) <= limit or not _NAME.fullmatch(value) or value in (".", ".."):
        raise InvalidGroupRequest(
            "INVALID_NAME",
            f"{what} {value!r}: use 1-{limit} letters, digits, '.', '_' or '-' (not '.' or '..')",
        )


def _check_topics(topics: Collection[str]) -> frozenset[str]:
    if not 1 <= len(topics) <= MAX_SUBSCRIBED_TOPICS:
        raise InvalidGroupRequest(
            "INVALID_SUBSCRIPTION",
            f"subscribe to 1-{MAX_SUBSCRIBED_TOPICS} topics, not {len(topics)}",
        )
    for topic in topics:
        problem = check_topic_name(topic)
        if problem is not None:
            raise InvalidGroupRequest("INVALID_NAME", problem)
    return frozenset(topics)


class GroupCoordinator:
    """``grants_from_ms`` holds grants until then (``start`` sets it from the
    log instead); ``epoch_base`` is where epochs start."""

    def __init__(
        self,
        topic_metadata: TopicMetadata,
        config: GroupConfig | None = None,
        *,
        epoch_base: int = 0,
        grants_from_ms: int = 0,
    ) -> None:
        self._topic_metadata = topic_metadata
        self._config = config or GroupConfig()
        self._config.validate()
        self._grants_from_ms = grants_from_ms
        self._fence_ms = 0
        """The longest session any ``CoordinatorStarted`` record in the log allows."""
        self._term = 0
        self._session_bound_ms = self._config.max_session_timeout_ms
        """The longest session a join may have: what the log allows once started."""
        self._epoch_floor = epoch_base
        self._groups: dict[tuple[str, str], Group] = {}
        self._offsets = CommittedOffsets()
        self._takeover = TakeoverState()
        self._unrecorded_holders = False
        """The fence of ``takeover`` invariant 4 is (or was) needed and no
        record says it passed."""
        self._noted: dict[tuple[str, str], int] = {}
        """Group → ``Group.changes`` when last seen (absent: no group)."""
        self._change_seq = 0
        self._unrecorded: dict[tuple[str, str], int] = {}
        """Group → the ``_change_seq`` of its latest change the log may lack."""
        self._recorded_seq = 0
        """Every change up to this one is in the log."""

    @property
    def offsets(self) -> CommittedOffsets:
        return self._offsets

    # --- membership ------------------------------------------------------------

    def prepare_join(
        self,
        tenant: str,
        group: str,
        *,
        member_id: str,
        client_id: str,
        topics: Collection[str],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
    ) -> CoordinatorStarted | None:
        """Check a join without changing anything; return the record the log
        must hold (durably, then ``record_sessions``) before the join may be
        made, or None when the log already allows its session."""
        self._check_join(group, member_id, client_id, topics)
        session = self._config.session_timeout(session_timeout_ms)
        self._config.rebalance_timeout(rebalance_timeout_ms)
        if session <= self._session_bound_ms:
            return None
        return CoordinatorStarted(self._term, session, self._unrecorded_holders)

    def record_sessions(self, record: CoordinatorStarted) -> None:
        """``record`` (from ``start`` or ``prepare_join``) is in the log:
        sessions up to its length may be admitted."""
        self._fence_ms = max(self._fence_ms, record.max_session_timeout_ms)
        self._session_bound_ms = max(self._session_bound_ms, record.max_session_timeout_ms)
        self._unrecorded_holders = record.unrecorded_holders

    def join(
        self,
        tenant: str,
        group: str,
        *,
        member_id: str,
        client_id: str,
        topics: Collection[str],
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        now_ms: int,
    ) -> Assignment:
        subscription = self._check_join(group, member_id, client_id, topics)
        session = self._config.session_timeout(session_timeout_ms)
        if session > self._session_bound_ms:
            raise RuntimeError(
                f"a session of {session} ms is longer than the log allows "
                f"({self._session_bound_ms} ms): append prepare_join's record first"
            )
        state = self._live_group(tenant, group, now_ms)
        created = state is None
        if state is None:
            state = Group(self._config, first_epoch=self._epoch_floor, grants_from_ms=self._grants_from_ms)
        answer = state.join(
            member_id,
            client_id=client_id,
            topics=subscription,
            session_timeout_ms=session_timeout_ms,
            rebalance_timeout_ms=rebalance_timeout_ms,
            now_ms=now_ms,
            partition_counts=self._counts(tenant),
        )
        if created:  # only once the join succeeded: a refused join creates nothing
            self._groups[(tenant, group)] = state
        self._note(tenant, group)
        return answer

    def heartbeat(
        self,
        tenant: str,
        group: str,
        *,
        member_id: str,
        member_epoch: int,
        owned: Iterable[TopicPartition],
        now_ms: int,
        topics: Collection[str] | None = None,
    ) -> Assignment:
        subscription = None if topics is None else _check_topics(topics)
        state = self._member_group(tenant, group, member_id, now_ms)
        answer = state.heartbeat(
            member_id,
            member_epoch,
            owned,
            now_ms=now_ms,
            partition_counts=self._counts(tenant),
            topics=subscription,
        )
        self._note(tenant, group)
        return answer

    def leave(self, tenant: str, group: str, *, member_id: str, member_epoch: int, now_ms: int) -> None:
        state = self._live_group(tenant, group, now_ms)
        if state is not None:
            state.leave(member_id, member_epoch, partition_counts=self._counts(tenant))
            self._forget_if_empty(tenant, group)
            self._note(tenant, group)

    def expire(self, now_ms: int) -> list[tuple[str, str, str]]:
        """Expire every group's members; returns ``(tenant, group, member)``."""
        gone: list[tuple[str, str, str]] = []
        for tenant, group in sorted(self._groups):
            state = self._groups[(tenant, group)]
            gone += [(tenant, group, m) for m in state.expire(now_ms, self._counts(tenant))]
            self._forget_if_empty(tenant, group)
            self._note(tenant, group)
        return gone

    def membership(self, tenant: str, group: str) -> Group | None:
        """The group's membership as it stands (nothing expired), or None when
        it has no members; for inspection, never for changing it."""
        return self._groups.get((tenant, group))

    def next_deadline_ms(self) -> int | None:
        deadlines = [d for g in self._groups.values() if (d := g.next_deadline_ms()) is not None]
        return min(deadlines, default=None)

    # --- offsets -----------------------------------------------------------------

    def prepare_commit(
        self,
        tenant: str,
        group: str,
        *,
        member_id: str,
        member_epoch: int,
        offsets: Sequence[OffsetCommit],
        now_ms: int,
        commit_timestamp_ms: int,
    ) -> list[OffsetCommitRecord]:
        """The records to append for a commit, or the error refusing it.

        With a ``member_id`` the member must hold every partition at
        ``member_epoch`` (``membership``, invariant 4). Without one it is a
        simple commit (Kafka's, for ``assign()`` users and tools), allowed
        only while the group has no members, for partitions that exist."""
        _check_name("group", group, GROUP_NAME_MAX)
        partitions = self._check_offsets(offsets)
        state = self._live_group(tenant, group, now_ms)
        if member_id:
            if state is None:
                raise UnknownMemberError(
                    f"member {member_id!r} is not in group {group!r}; join the group before committing"
                )
            state.check_commit(member_id, member_epoch, partitions)
        else:
            if state is not None and state.members:
                raise UnknownMemberError(
                    f"group {group!r} has {len(state.members)} members: only a member may commit "
                    "(a commit without member_id is for a group with no members)"
                )
            for tp in partitions:
                if not tp.partition < self._topic_metadata(tenant, tp.topic):
                    raise UnknownPartitionError(f"topic {tp.topic!r} has no partition {tp.partition}")
        return [
            OffsetCommitRecord(
                tenant=tenant,
                group=group,
                topic=commit.topic,
                partition=commit.partition,
                offset=commit.offset,
                commit_timestamp_ms=commit_timestamp_ms,
                metadata=commit.metadata,
            )
            for commit in offsets
        ]

    def apply(self, log_offset: int, record: OffsetCommitRecord) -> None:
        """A committed record the log holds at ``log_offset``."""
        self._offsets.apply(log_offset, record)

    def replay(self, records: Iterable[tuple[int, bytes]]) -> None:
        """Apply the log's records ``(log offset, bytes)``, in log order
        (``OffsetRecordError`` on one this version cannot read)."""
        for log_offset, data in records:
            self.replay_record(log_offset, data)

    def replay_record(self, log_offset: int, data: bytes) -> None:
        record = decode_at(log_offset, data)
        if isinstance(record, OffsetCommitRecord):
            self._offsets.apply(log_offset, record)
        else:
            self._takeover.apply(record)
            self._fence_ms = self._takeover.longest_session_ms

    @property
    def failover_fence_ms(self) -> int:
        """How long ``start`` holds grants: the longest session the log
        allows (what earlier coordinators of this partition admitted), plus
        ``failover_margin_ms``; 0 when none ever admitted a member."""
        return self._fence_ms + self._config.failover_margin_ms if self._fence_ms else 0

    def start(self, now_ms: int, term: int) -> CoordinatorStarted:
        """Begin serving after the replay: no grant before ``now_ms +
        failover_fence_ms``. Returns the record to append *before* serving
        (then pass it to ``record_sessions``), so the next coordinator knows
        to wait for this one's members. It allows the sessions the log
        allows already; a join asking for more appends its own record
        (``prepare_join``)."""
        unknown = self._takeover.unrecorded_holders
        self._grants_from_ms = now_ms + (self.failover_fence_ms if unknown else 0)
        self._term = term
        self._session_bound_ms = 0  # nothing is allowed before the record is durable
        for (tenant, group), snapshot in sorted(self._takeover.groups.items()):
            self._groups[(tenant, group)] = Group.restore(
                self._config,
                snapshot,
                now_ms=now_ms,
                sessions_from_ms=now_ms + self._config.failover_margin_ms,
                epoch_floor=self._epoch_floor,
                grants_from_ms=self._grants_from_ms,
            )
            self._noted[(tenant, group)] = 0  # as the log has it
        self._takeover = TakeoverState()
        return CoordinatorStarted(term, self._fence_ms, unknown)

    def holders_known_record(self, now_ms: int) -> CoordinatorStarted | None:
        """Once the old fence has passed, the record saying so (append it,
        then ``record_sessions``), so successors take over at once
        (``takeover``, invariant 4); None when there is nothing to say."""
        if not self._unrecorded_holders or now_ms < self._grants_from_ms:
            return None
        return CoordinatorStarted(self._term, self._session_bound_ms, False)

    # --- group metadata on the log (takeover, invariant 1) ---------------------------

    def unrecorded_change(self, tenant: str, group: str) -> int | None:
        """The latest change of the group the log may lack (its sequence
        number), or None: answer only once ``recorded_seq`` reaches it."""
        return self._unrecorded.get((tenant, group))

    @property
    def recorded_seq(self) -> int:
        return self._recorded_seq

    def metadata_records(self) -> tuple[int, list[GroupMetadataRecord | GroupMetadataDeleted]]:
        """Every group record the log lacks, and the change sequence number
        they cover; append them in one batch, then ``metadata_recorded``."""
        records: list[GroupMetadataRecord | GroupMetadataDeleted] = []
        for tenant, group in sorted(self._unrecorded):
            state = self._groups.get((tenant, group))
            if state is None:
                records.append(GroupMetadataDeleted(tenant, group))
            else:
                records.append(GroupMetadataRecord(tenant, group, state.snapshot()))
        return self._change_seq, records

    def metadata_recorded(self, seq: int) -> None:
        """The records ``metadata_records`` gave with ``seq`` are durable."""
        self._recorded_seq = max(self._recorded_seq, seq)
        for key in [key for key, change in self._unrecorded.items() if change <= seq]:
            del self._unrecorded[key]

    def fetch_offsets(
        self, tenant: str, group: str, partitions: Iterable[TopicPartition] | None = None
    ) -> dict[TopicPartition, CommittedOffset]:
        """Committed offsets (all, or of ``partitions``); none for a group
        that never committed, as Kafka answers "no offset" rather than an error."""
        _check_name("group", group, GROUP_NAME_MAX)
        return self._offsets.fetch(tenant, group, partitions)

    # --- listings ------------------------------------------------------------------

    def describe(self, tenant: str, group: str, *, now_ms: int) -> GroupDescription:
        _check_name("group", group, GROUP_NAME_MAX)
        state = self._live_group(tenant, group, now_ms)
        if state is None:
            if not self._offsets.has_group(tenant, group):
                raise GroupNotFoundError(f"group {group!r} does not exist (no members, no committed offsets)")
            return GroupDescription(group, GroupState.EMPTY, 0, 0, ())
        members = tuple(
            MemberDescription(
                member_id=m.member_id,
                client_id=m.client_id,
                member_epoch=m.epoch,
                state=state.member_state(m.member_id),
                topics=tuple(sorted(m.topics)),
                assigned=tuple(sorted(m.assigned)),
                revoking=tuple(sorted(m.revoking)),
                target=tuple(sorted(state.target(m.member_id))),
                session_timeout_ms=m.session_timeout_ms,
                rebalance_timeout_ms=m.rebalance_timeout_ms,
                fenced=m.fenced,
            )
            for m in sorted(state.members.values(), key=lambda m: m.member_id)
        )
        return GroupDescription(group, state.state, state.epoch, state.assignment_epoch, members)

    def list_groups(self, tenant: str, *, now_ms: int) -> list[GroupSummary]:
        """The tenant's groups (with members or committed offsets), by name."""
        names = {group for (owner, group) in self._groups if owner == tenant}
        names.update(self._offsets.groups(tenant))
        summaries = []
        for name in sorted(names):
            state = self._live_group(tenant, name, now_ms)
            if state is not None:
                summaries.append(GroupSummary(name, state.state, len(state.members)))
            elif self._offsets.has_group(tenant, name):
                summaries.append(GroupSummary(name, GroupState.EMPTY, 0))
        return summaries

    # --- internals -------------------------------------------------------------------

    @staticmethod
    def _check_join(group: str, member_id: str, client_id: str, topics: Collection[str]) -> frozenset[str]:
        _check_name("group", group, GROUP_NAME_MAX)
        _check_name("member id", member_id, MEMBER_ID_MAX)
        if len(client_id) > CLIENT_ID_MAX:
            raise InvalidGroupRequest("INVALID_NAME", f"client id is longer than {CLIENT_ID_MAX} characters")
        return _check_topics(topics)

    def _counts(self, tenant: str) -> Callable[[str], int]:
        return lambda topic: self._topic_metadata(tenant, topic)

    def _live_group(self, tenant: str, group: str, now_ms: int) -> Group | None:
        """The group's membership after expiring it at ``now_ms``; None when
        it has no members."""
        state = self._groups.get((tenant, group))
        if state is None:
            return None
        state.expire(now_ms, self._counts(tenant))
        if self._forget_if_empty(tenant, group):
            return None
        self._note(tenant, group)
        return state

    def _member_group(self, tenant: str, group: str, member_id: str, now_ms: int) -> Group:
        state = self._live_group(tenant, group, now_ms)
        if state is None:
            raise UnknownMemberError(
                f"member {member_id!r} is not in group {group!r} (the group has no members); join again"
            )
        return state

    def _forget_if_empty(self, tenant: str, group: str) -> bool:
        state = self._groups.get((tenant, group))
        if state is None or state.members:
            return state is None
        self._epoch_floor = max(self._epoch_floor, state.epoch)
        del self._groups[(tenant, group)]
        self._note(tenant, group)
        return True

    def _note(self, tenant: str, group: str) -> None:
        """Mark the group unrecorded if it changed since last seen."""
        key = (tenant, group)
        state = self._groups.get(key)
        seen = self._noted.get(key)
        if state is None:
            if seen is None:
                return
            del self._noted[key]
        elif seen == state.changes:
            return
        else:
            self._noted[key] = state.changes
        self._change_seq += 1
        self._unrecorded[key] = self._change_seq

    def _check_offsets(self, offsets: Sequence[OffsetCommit]) -> list[TopicPartition]:
        partitions: list[TopicPartition] = []
        seen: set[TopicPartition] = set()
        for commit in offsets:
            problem = check_topic_name(commit.topic)
            if problem is not None:
                raise InvalidGroupRequest("INVALID_NAME", problem)
            if commit.partition < 0 or commit.offset < 0:
                raise InvalidGroupRequest(
                    "INVALID_OFFSET",
                    f"{commit.topic}/{commit.partition}: partition and offset must not be negative",
                )
            if len(commit.metadata.encode("utf-8")) > MAX_METADATA_BYTES:
                raise InvalidGroupRequest(
                    "OFFSET_METADATA_TOO_LARGE",
                    f"{commit.topic}/{commit.partition}: metadata is over {MAX_METADATA_BYTES} bytes",
                )
            tp = TopicPartition(commit.topic, commit.partition)
            if tp in seen:
                raise InvalidGroupRequest(
                    "DUPLICATE_PARTITION", f"{commit.topic}/{commit.partition} appears twice in one commit"
                )
            seen.add(tp)
            partitions.append(tp)
        return partitions
