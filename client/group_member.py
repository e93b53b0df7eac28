"""Consumer-group membership for ``Consumer.subscribe``: the member's side of
the protocol in proto/raftlog/v1/groups.proto (server-side assignment in the
manner of Kafka's KIP-848).

- ``GroupRpc`` sends ``GroupService`` calls to the node serving a group,
  through the SDK's call path (client/leader_calls.py, ``NodeRoute``). Any
  node may be asked; one that does not coordinate the group answers
  ``NOT_COORDINATOR`` (nodes do not forward group calls), with
  ``leader_address`` when it knows the coordinator's node: the call goes
  there at once, otherwise to the next known node after
  ``max(backoff, retry_after)``.
- ``GroupMember`` is one membership: it joins, heartbeats every
  ``heartbeat_interval_ms`` (the coordinator's figure), and turns every
  answer into calls on its ``PartitionOwner`` (the consumer): partitions
  revoked, then partitions assigned; or, when the membership is lost, every
  partition lost. A second loop asks the owner to auto-commit on a timer.
  ``run`` is the body of the one task the consumer owns per membership; the
  consumer cancels it before it commits for the last time and calls
  ``leave``. A join or heartbeat the call path gave up on (its deadline
  came first) is tried again after the call path's own wait,
  ``max(backoff, retry_after)``.

Invariants:

- ``owned`` is exactly what the next heartbeat reports. A partition enters it
  as soon as an answer grants it (the contract: a member takes what an
  answer lists at once, even before its committed offset is known), and
  leaves it only after ``PartitionOwner.partitions_revoked`` returned, i.e.
  after the consumer stopped fetching it, dropped its buffered records and
  (auto commit) committed it. So the coordinator hands a partition to
  another member only after this one stopped reading it and committed.
- The session: an answered heartbeat (or join) sent at ``t`` keeps the
  member until ``t + session_timeout_ms``. If no later heartbeat is answered
  by then, every owned partition is dropped without committing and the
  member joins again. The coordinator counts from the heartbeat's arrival
  (after ``t``), so it gives the partitions away only after this member has
  stopped. Every wait in the loop ends by the session deadline.
- ``FENCED_MEMBER`` / ``UNKNOWN_MEMBER_ID`` (on a heartbeat; a commit that
  gets them wakes the heartbeat): every partition is dropped without
  committing (someone else may own it already), then the member joins again
  with the same member id, as a new incarnation that owns nothing.
- ``identity()`` is None whenever ``owned`` is empty because the membership
  is gone (before a join, after a loss): a commit then has nothing to name.
- Only the member task changes the epoch and ``owned``; every other reader
  (commits) takes ``identity()`` and the offsets in one synchronous step, so
  a commit never names a partition granted at an epoch above the one it
  carries.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from google.protobuf.message import Message

from client.errors import GroupMembershipError, RaftlogError, RetriableError
from client.leader_calls import LeaderCalls, NodeRoute, UnaryCall
from client.metadata import Backoff, ChannelPool, TopicPartition
from raftlog.v1 import groups_pb2

__all__ = [
    "GroupMember",
    "GroupRpc",
    "MemberIdentity",
    "PartitionOwner",
    "from_topic_partitions",
    "to_topic_partitions",
]

logger = logging.getLogger(__name__)


def to_topic_partitions(partitions: Iterable[tuple[str, int]]) -> list[groups_pb2.TopicPartitions]:
    """``(topic, partition)`` pairs → ``TopicPartitions`` messages, sorted."""
    by_topic: dict[str, list[int]] = {}
    for topic, partition in sorted(partitions):
        by_topic.setdefault(topic, []).append(partition)
    return [groups_pb2.TopicPartitions(topic=t, partitions=p) for t, p in by_topic.items()]


def from_topic_partitions(messages: Iterable[groups_pb2.TopicPartitions]) -> frozenset[TopicPartition]:
    return frozenset(TopicPartition(m.topic, int(p)) for m in messages for p in m.partitions)


class GroupRpc:
    """``GroupService`` calls for one client, routed as the module docstring
    says. Each call is retried on retriable errors until its ``deadline``
    (event-loop time; None: until it succeeds or is cancelled), then the
    last error is raised; other errors are raised at once. Use from one
    event loop."""

    def __init__(self, pool: ChannelPool, calls: LeaderCalls) -> None:
        """Each attempt gets ``calls.attempt_timeout_s``."""
        self._pool = pool
        self._calls = calls
        # The last node that answered, or a hint; else the candidates in turn.
        self._route = NodeRoute(calls.metadata)

    async def join(
        self, request: groups_pb2.JoinGroupRequest, *, deadline: float | None
    ) -> groups_pb2.JoinGroupResponse:
        response: groups_pb2.JoinGroupResponse = await self._call("JoinGroup", request, deadline)
        return response

    async def heartbeat(
        self, request: groups_pb2.HeartbeatRequest, *, deadline: float | None
    ) -> groups_pb2.HeartbeatResponse:
        response: groups_pb2.HeartbeatResponse = await self._call("Heartbeat", request, deadline)
        return response

    async def leave(
        self, request: groups_pb2.LeaveGroupRequest, *, deadline: float | None
    ) -> groups_pb2.LeaveGroupResponse:
        response: groups_pb2.LeaveGroupResponse = await self._call("LeaveGroup", request, deadline)
        return response

    async def commit(
        self, request: groups_pb2.CommitOffsetsRequest, *, deadline: float | None
    ) -> groups_pb2.CommitOffsetsResponse:
        response: groups_pb2.CommitOffsetsResponse = await self._call("CommitOffsets", request, deadline)
        return response

    async def fetch_committed(
        self, request: groups_pb2.FetchCommittedOffsetsRequest, *, deadline: float | None
    ) -> groups_pb2.FetchCommittedOffsetsResponse:
        response: groups_pb2.FetchCommittedOffsetsResponse = await self._call(
            "FetchCommittedOffsets", request, deadline
        )
        return response

    async def describe(
        self, request: groups_pb2.DescribeGroupRequest, *, deadline: float | None
    ) -> groups_pb2.DescribeGroupResponse:
        response: groups_pb2.DescribeGroupResponse = await self._call("DescribeGroup", request, deadline)
        return response

    # --- internals ---------------------------------------------------------------

    async def _call(self, method: str, request: Message, deadline: float | None) -> Any:
        stub_method = method

        def invoke(address: str, timeout: float) -> UnaryCall[Any]:
            call: UnaryCall[Any] = getattr(self._pool.groups(address), stub_method)(request, timeout=timeout)
            return call

        return await self._calls.call(self._route, invoke, deadline=deadline)


@dataclass(frozen=True, slots=True)
class MemberIdentity:
    """What a commit carries: who commits, at which epoch."""

    member_id: str
    member_epoch: int


class PartitionOwner(Protocol):
    """What a ``GroupMember`` drives (the consumer). The hooks run on the
    member task, one at a time, and must not raise (they log and carry on):
    the membership goes on whatever the application does."""

    async def partitions_revoked(self, partitions: frozenset[TopicPartition], deadline: float) -> None:
        """Stop fetching ``partitions``, drop their buffered records, commit
        them (auto commit) by ``deadline`` (event-loop time), tell the
        application. They are reported released when this returns."""
        ...

    async def partitions_assigned(self, partitions: frozenset[TopicPartition]) -> None:
        """Start consuming ``partitions`` from their committed offsets."""
        ...

    async def partitions_lost(self, partitions: frozenset[TopicPartition]) -> None:
        """Drop ``partitions`` without committing (the membership is gone)."""
        ...

    async def auto_commit(self) -> None:
        """Commit what the application has processed."""
        ...


class GroupMember:
    """One consumer's membership of ``group``; see the module docstring.

    ``member_id`` is kept across rejoins (a new incarnation replaces the old
    one at the coordinator). ``auto_commit_interval_s`` None: no auto-commit
    loop. ``error`` is set when the membership stopped for good (a refusal
    no retry changes: a bad group name, authentication, a full group)."""

    def __init__(
        self,
        rpc: GroupRpc,
        owner: PartitionOwner,
        *,
        group: str,
        topics: Iterable[str],
        member_id: str,
        client_id: str,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        auto_commit_interval_s: float | None,
        backoff: Backoff,
        request_timeout_s: float,
    ) -> None:
        self._rpc = rpc
        self._owner = owner
        self.group = group
        self.member_id = member_id
        self._client_id = client_id
        self._topics = frozenset(topics)
        self._sent_topics: frozenset[str] | None = None  # the subscription the coordinator has
        self._session_s = session_timeout_ms / 1000
        self._session_timeout_ms = session_timeout_ms
        self._rebalance_timeout_ms = rebalance_timeout_ms
        self._auto_commit_interval_s = auto_commit_interval_s
        self._backoff = backoff
        self._request_timeout_s = request_timeout_s
        self._epoch: int | None = None  # None: not a member (join next)
        self._owned: frozenset[TopicPartition] = frozenset()
        self._interval_s = self._session_s / 3
        self._session_deadline = 0.0
        self._next_heartbeat = 0.0
        self._failures = 0
        self._wake = asyncio.Event()
        self.error: RaftlogError | None = None
        self.joins = 0  # completed joins (a test and debugging aid)

    # --- what others read and ask ---------------------------------------------------

    @property
    def owned(self) -> frozenset[TopicPartition]:
        return self._owned

    @property
    def member_epoch(self) -> int | None:
        return self._epoch

    def identity(self) -> MemberIdentity | None:
        if self._epoch is None:
            return None
        return MemberIdentity(self.member_id, self._epoch)

    def set_topics(self, topics: Iterable[str]) -> None:
        """Change the subscription (sent with the next heartbeat, now)."""
        self._topics = frozenset(topics)
        self.wake()

    def wake(self) -> None:
        """Heartbeat now (a revocation to confirm, a refused commit)."""
        self._next_heartbeat = 0.0
        self._wake.set()

    # --- the member task -------------------------------------------------------------

    async def run(self) -> None:
        """Join and heartbeat until cancelled. A fatal error is stored in
        ``error`` (everything owned is dropped first) and ends the task."""
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._membership(), name=f"raftlog-group-{self.group}-heartbeat")
                if self._auto_commit_interval_s is not None:
                    tasks.create_task(self._auto_commits(), name=f"raftlog-group-{self.group}-autocommit")
        except ExceptionGroup as failed:
            first = failed.exceptions[0]
            if isinstance(first, RaftlogError):
                self.error = first
            else:  # a bug: surface it from poll() instead of hanging
                self.error = RaftlogError(f"the group member failed: {first!r}", reason="CLIENT_BUG")
            await self._lose_all()

    async def leave(self, timeout_s: float) -> None:
        """Leave the group (after the task was cancelled and the consumer
        committed). Failures are logged only: the session runs out anyway."""
        identity = self.identity()
        self._epoch = None
        self._owned = frozenset()
        if identity is None:
            return
        request = groups_pb2.LeaveGroupRequest(
            group=self.group, member_id=identity.member_id, member_epoch=identity.member_epoch
        )
        try:
            await self._rpc.leave(request, deadline=asyncio.get_running_loop().time() + timeout_s)
        except RaftlogError as error:
            logger.info("group %s: leaving failed (%s); the session will expire instead", self.group, error)

    # --- internals ---------------------------------------------------------------------

    async def _membership(self) -> None:
        while True:
            if self._epoch is None:
                await self._join()
            else:
                await self._until_heartbeat_due()
                await self._heartbeat()

    async def _join(self) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while True:
            topics = self._topics
            request = groups_pb2.JoinGroupRequest(
                group=self.group,
                topics=sorted(topics),
                session_timeout_ms=self._session_timeout_ms,
                rebalance_timeout_ms=self._rebalance_timeout_ms,
                member_id=self.member_id,
                client_id=self._client_id,
            )
            sent_at = loop.time()
            try:
                response = await self._rpc.join(request, deadline=sent_at + self._request_timeout_s)
            except (RetriableError, GroupMembershipError) as error:
                # A membership refusal of a join is not expected; it cannot
                # be worse than joining again later.
                logger.debug("group %s: join failed (%s); retrying", self.group, error)
                await asyncio.sleep(self._retry_delay(attempt, error))
                attempt += 1
                continue
            break
        self._sent_topics = topics
        self.member_id = response.member_id or self.member_id
        self._epoch = int(response.member_epoch)
        self.joins += 1
        self._answered(sent_at, int(response.heartbeat_interval_ms))
        await self._reconcile(from_topic_partitions(response.assignment))

    async def _until_heartbeat_due(self) -> None:
        loop = asyncio.get_running_loop()
        while (delay := self._next_heartbeat - loop.time()) > 0:
            self._wake.clear()
            try:
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            except TimeoutError:
                pass

    async def _heartbeat(self) -> None:
        loop = asyncio.get_running_loop()
        epoch = self._epoch
        assert epoch is not None
        topics = self._topics
        request = groups_pb2.HeartbeatRequest(
            group=self.group,
            member_id=self.member_id,
            member_epoch=epoch,
            owned=to_topic_partitions(self._owned),
        )
        if topics != self._sent_topics:
            request.subscription.CopyFrom(groups_pb2.Subscription(topics=sorted(topics)))
        sent_at = loop.time()
        try:
            response = await self._rpc.heartbeat(
                request, deadline=min(sent_at + self._request_timeout_s, self._session_deadline)
            )
        except GroupMembershipError as error:
            if error.rejoin:
                logger.info("group %s: %s; dropping every partition and joining again", self.group, error)
                await self._lose_all()
                return
            await self._heartbeat_failed(error)
            return
        except RetriableError as error:
            await self._heartbeat_failed(error)
            return
        self._sent_topics = topics
        self._epoch = int(response.member_epoch)
        self._answered(sent_at, int(response.heartbeat_interval_ms))
        await self._reconcile(from_topic_partitions(response.assignment))

    async def _heartbeat_failed(self, error: RaftlogError) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now >= self._session_deadline:
            logger.info(
                "group %s: no heartbeat answered for %d ms (last error: %s); dropping every partition",
                self.group,
                self._session_timeout_ms,
                error,
            )
            await self._lose_all()
            return
        self._failures += 1
        self._next_heartbeat = min(now + self._retry_delay(self._failures, error), self._session_deadline)

    def _retry_delay(self, attempt: int, error: RaftlogError) -> float:
        """The wait before calling again after the call path gave up with
        ``error`` (its deadline was too near for the wait): the call path's
        rule, ``max(backoff, retry_after)``."""
        return max(self._backoff.delay(attempt), error.retry_after_ms / 1000)

    def _answered(self, sent_at: float, heartbeat_interval_ms: int) -> None:
        loop = asyncio.get_running_loop()
        self._failures = 0
        self._session_deadline = sent_at + self._session_s
        if heartbeat_interval_ms > 0:
            self._interval_s = heartbeat_interval_ms / 1000
        self._next_heartbeat = loop.time() + self._interval_s

    async def _reconcile(self, assigned: frozenset[TopicPartition]) -> None:
        """Move ``owned`` to ``assigned``: release first (and confirm at
        once), then take the new partitions."""
        revoked = self._owned - assigned
        granted = assigned - self._owned
        if revoked:
            await self._owner.partitions_revoked(revoked, self._session_deadline)
            self._owned -= revoked
            self.wake()
        if granted:
            self._owned |= granted
            await self._owner.partitions_assigned(granted)

    async def _lose_all(self) -> None:
        lost, self._owned = self._owned, frozenset()
        self._epoch = None
        self._sent_topics = None
        if lost:
            await self._owner.partitions_lost(lost)

    async def _auto_commits(self) -> None:
        assert self._auto_commit_interval_s is not None
        while True:
            await asyncio.sleep(self._auto_commit_interval_s)
            if self._epoch is not None and self._owned:
                await self._owner.auto_commit()
