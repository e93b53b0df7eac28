"""A consumer's consumer-group side: subscription, commits, and what a
rebalance does to the consumer's partitions.

``GroupBinding`` is the ``PartitionOwner`` its ``GroupMember``
(client/group_member.py) drives. It reaches the consumer's partitions only
through ``ConsumerPartitions`` (the fetcher, client/fetcher.py, is one), and
never imports the consumer.

- A partition granted starts at the group's committed offset
  (``auto_offset_reset`` when there is none); until that offset is known it
  has no fetcher (``awaiting_committed``).
- A partition revoked stops at once: its fetcher is stopped, its buffered
  records dropped, and (auto commit) its processed position committed, all
  before the member reports it released.
- A membership lost (``FENCED_MEMBER``, ``UNKNOWN_MEMBER_ID``, no heartbeat
  answered for the session) drops every partition without committing.
- ``on_assigned``, ``on_revoked`` and ``on_lost`` (default: ``on_revoked``)
  run on the member task; an exception they raise is kept for the next
  ``poll`` (``raise_error``).

Commits name, per partition, the offset of the next record to read:
``commit()`` the *position* (last record ``poll`` returned + 1); auto commit
(on a timer, on revocation) the *processed* position (the position when
``poll`` was last called).

Invariant (at least once): **a committed offset never passes a record that
``poll`` has not returned to the application**. Positions move only as
``poll`` returns records (or on seek/reset), and a commit snapshots
positions and the member epoch in one synchronous step, under a lock that
makes commits land in the order they snapshot.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Protocol

from client.errors import DeliveryTimeoutError, GroupMembershipError, RaftlogError, RetriableError
from client.fetcher import PartitionState
from client.group_member import GroupMember, GroupRpc, MemberIdentity, to_topic_partitions
from client.metadata import Backoff, TopicPartition
from client.trace_context import untraced
from raftlog.v1 import groups_pb2

__all__ = ["ConsumerPartitions", "GroupBinding", "RebalanceCallback"]

logger = logging.getLogger(__name__)

RebalanceCallback = Callable[[frozenset[TopicPartition]], Awaitable[None] | None]
"""``on_assigned``/``on_revoked``/``on_lost``: called with the partitions
(never an empty set); may be a coroutine function."""


class ConsumerPartitions(Protocol):
    """The consumer's partitions as the group binding sees them."""

    def owned(self) -> Mapping[TopicPartition, PartitionState]:
        """The partitions read now, with their states."""
        ...

    def add(self, tp: TopicPartition, *, awaiting_committed: bool = False) -> PartitionState:
        """Start reading ``tp`` (no fetcher while ``awaiting_committed``)."""
        ...

    def detach(self, partitions: Iterable[TopicPartition]) -> list[PartitionState]:
        """Stop reading ``partitions`` and drop their buffers; their states."""
        ...

    def wake(self) -> None:
        """Start fetchers where needed and wake a waiting ``poll``."""
        ...


class GroupBinding:
    """One consumer's side of group ``group_id``; see the module docstring."""

    def __init__(
        self,
        partitions: ConsumerPartitions,
        rpc: GroupRpc,
        *,
        group_id: str,
        member_id: str,
        client_id: str,
        auto_commit: bool,
        auto_commit_interval_s: float,
        session_timeout_ms: int,
        rebalance_timeout_ms: int,
        backoff: Backoff,
        request_timeout_s: float,
        api_timeout_s: float,
        on_assigned: RebalanceCallback | None,
        on_revoked: RebalanceCallback | None,
        on_lost: RebalanceCallback | None,
    ) -> None:
        self._partitions = partitions
        self._rpc = rpc
        self.group_id = group_id
        self._member_id = member_id  # kept for the life of the consumer
        self._client_id = client_id
        self._auto_commit = auto_commit
        self._auto_commit_interval_s = auto_commit_interval_s
        self._session_timeout_ms = session_timeout_ms
        self._rebalance_timeout_ms = rebalance_timeout_ms
        self._backoff = backoff
        self._request_timeout_s = request_timeout_s
        self._api_timeout_s = api_timeout_s
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self._on_lost = on_lost
        self.subscription: frozenset[str] | None = None  # None: not subscribed
        self.member: GroupMember | None = None
        self._member_task: asyncio.Task[None] | None = None
        self._revoking: dict[TopicPartition, PartitionState] = {}  # released, being committed
        self._committed: dict[TopicPartition, int] = {}  # what the group is known to hold
        self._commit_lock = asyncio.Lock()  # commits land in the order they snapshot positions
        self._lookups: set[asyncio.Task[None]] = set()  # committed-offset lookups of grants
        self._callback_error: BaseException | None = None  # raised by the next poll
        self.leaving = False  # close()/unsubscribe() under way: commit() still works

    # --- what the consumer asks -----------------------------------------------------

    @property
    def member_id(self) -> str:
        return self.member.member_id if self.member is not None else self._member_id

    @property
    def member_epoch(self) -> int | None:
        return self.member.member_epoch if self.member is not None else None

    def subscribe(self, topics: frozenset[str]) -> None:
        """Become (or stay) a member subscribed to ``topics``."""
        self.subscription = topics
        if self.member is None:
            self.member = GroupMember(
                self._rpc,
                self,
                group=self.group_id,
                topics=topics,
                member_id=self._member_id,
                client_id=self._client_id,
                session_timeout_ms=self._session_timeout_ms,
                rebalance_timeout_ms=self._rebalance_timeout_ms,
                auto_commit_interval_s=self._auto_commit_interval_s if self._auto_commit else None,
                backoff=self._backoff,
                request_timeout_s=self._request_timeout_s,
            )
        else:
            self.member.set_topics(topics)
        self.start_member()

    def start_member(self) -> None:
        """Start the member task if subscribed and it is not running (it
        needs a running event loop; ``poll`` tries again)."""
        if self.member is None or self._member_task is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        # Outlives the caller's span (client/trace_context.py).
        self._member_task = loop.create_task(
            self.member.run(), name=f"raftlog-group-{self.group_id}", context=untraced()
        )

    def raise_error(self) -> None:
        """Raise a rebalance callback's exception (once) or the error that
        ended the membership (every time)."""
        if self._callback_error is not None:
            error, self._callback_error = self._callback_error, None
            raise error
        if self.member is not None and self.member.error is not None:
            raise self.member.error

    def owns(self, tp: TopicPartition) -> bool:
        return tp in self._partitions.owned() or tp in self._revoking

    async def commit(self, given: Mapping[TopicPartition, int] | None) -> dict[TopicPartition, int]:
        """``Consumer.commit``: ``given`` offsets (of owned partitions), or
        every owned partition's position; retried for ``api_timeout_s``."""

        def pick() -> dict[TopicPartition, int]:
            if given is not None:
                return {tp: offset for tp, offset in given.items() if self.owns(tp)}
            return self._offsets(processed=False)

        deadline = asyncio.get_running_loop().time() + self._api_timeout_s
        try:
            return await self._commit(pick, deadline)
        except RetriableError as error:
            raise DeliveryTimeoutError(
                f"group {self.group_id}: commit not answered within {self._api_timeout_s:g} s; "
                f"last error: {error}",
                cause=error,
            ) from None

    async def committed(self, wanted: list[TopicPartition]) -> dict[TopicPartition, int | None]:
        """``Consumer.committed``, retried for ``api_timeout_s``."""
        deadline = asyncio.get_running_loop().time() + self._api_timeout_s
        try:
            found = await self._fetch_committed(wanted, deadline)
        except RetriableError as error:
            raise DeliveryTimeoutError(
                f"group {self.group_id}: no answer within {self._api_timeout_s:g} s; last error: {error}",
                cause=error,
            ) from None
        return {tp: found.get(tp) for tp in wanted}

    async def leave(self, *, commit_returned: bool) -> None:
        """Stop the membership: cancel the member task, stop fetching,
        commit (auto commit: the positions, or with ``commit_returned``
        False the processed positions only), ``on_revoked``, ``LeaveGroup``;
        every owned partition is dropped."""
        member, task = self.member, self._member_task
        assert member is not None
        if task is not None and task is asyncio.current_task():
            raise RuntimeError("close() and unsubscribe() cannot be called from a rebalance callback")
        self._member_task = None
        self.leaving = True
        try:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            for lookup in self._lookups:
                lookup.cancel()
            owned = frozenset([*self._partitions.owned(), *self._revoking])
            stopped = self._partitions.detach(list(self._partitions.owned()))
            for state in stopped:
                self._revoking[state.tp] = state  # still committed below
            if self._auto_commit and member.identity() is not None:
                loop = asyncio.get_running_loop()
                try:
                    await self._commit(
                        lambda: self._offsets(processed=not commit_returned),
                        loop.time() + self._request_timeout_s,
                    )
                except RaftlogError as error:
                    logger.warning("group %s: the last commit failed: %s", self.group_id, error)
            await self._run_callback("on_revoked", self._on_revoked, owned)
            await member.leave(min(self._request_timeout_s, 5.0))
        finally:
            self.leaving = False
            self.member = None
            self.subscription = None
            self._partitions.detach(list(self._partitions.owned()))
            self._revoking.clear()
            self._committed.clear()

    async def close(self) -> None:
        """Cancel the committed-offset lookups and wait for them."""
        lookups = list(self._lookups)
        for task in lookups:
            task.cancel()
        await asyncio.gather(*lookups, return_exceptions=True)

    # --- the PartitionOwner hooks (run on the member task) ----------------------------

    async def partitions_revoked(self, partitions: frozenset[TopicPartition], deadline: float) -> None:
        states = self._partitions.detach(partitions)
        for state in states:
            self._revoking[state.tp] = state
        try:
            if self._auto_commit and states:
                try:
                    async with asyncio.timeout_at(deadline):
                        await self._commit(lambda: self._offsets(processed=True, only=states), deadline)
                except (RaftlogError, TimeoutError) as error:
                    logger.warning(
                        "group %s: committing revoked partitions failed (%s); their next owner may "
                        "read some records again",
                        self.group_id,
                        str(error) or "timed out",
                    )
            await self._run_callback("on_revoked", self._on_revoked, partitions)
        finally:
            for state in states:
                if self._revoking.get(state.tp) is state:
                    del self._revoking[state.tp]
                self._committed.pop(state.tp, None)

    async def partitions_assigned(self, partitions: frozenset[TopicPartition]) -> None:
        states: list[PartitionState] = []
        for tp in sorted(partitions):
            states.append(self._partitions.add(tp, awaiting_committed=True))
            self._committed.pop(tp, None)
        task = asyncio.get_running_loop().create_task(
            self._load_committed(states), name=f"raftlog-group-{self.group_id}-committed"
        )
        self._lookups.add(task)
        task.add_done_callback(self._lookups.discard)
        await self._run_callback("on_assigned", self._on_assigned, partitions)

    async def partitions_lost(self, partitions: frozenset[TopicPartition]) -> None:
        self._partitions.detach(partitions)
        for tp in partitions:
            self._committed.pop(tp, None)
        await self._run_callback("on_lost", self._on_lost or self._on_revoked, partitions)

    async def auto_commit(self) -> None:
        deadline = asyncio.get_running_loop().time() + min(
            self._request_timeout_s, self._auto_commit_interval_s
        )
        try:
            await self._commit(lambda: self._offsets(processed=True), deadline)
        except RaftlogError as error:
            logger.info("group %s: auto commit failed: %s", self.group_id, error)

    # --- internals ---------------------------------------------------------------------

    def _offsets(
        self, *, processed: bool, only: Iterable[PartitionState] | None = None
    ) -> dict[TopicPartition, int]:
        """Per owned partition (or per state of ``only``), the position or
        the processed position, where known."""
        states = (
            list(only) if only is not None else [*self._partitions.owned().values(), *self._revoking.values()]
        )
        offsets: dict[TopicPartition, int] = {}
        for state in states:
            offset = state.processed if processed else state.position
            if offset is not None:
                offsets[state.tp] = offset
        return offsets

    async def _fetch_committed(
        self, partitions: Iterable[TopicPartition], deadline: float | None
    ) -> dict[TopicPartition, int]:
        """The group's committed offsets of ``partitions`` (those that have one)."""
        request = groups_pb2.FetchCommittedOffsetsRequest(
            group=self.group_id, partitions=to_topic_partitions(partitions)
        )
        response = await self._rpc.fetch_committed(request, deadline=deadline)
        return {TopicPartition(o.topic, int(o.partition)): int(o.offset) for o in response.offsets}

    async def _commit(
        self, pick: Callable[[], dict[TopicPartition, int]], deadline: float
    ) -> dict[TopicPartition, int]:
        """Commit what ``pick()`` returns, minus what the group holds
        already. ``pick`` runs under the commit lock in the same synchronous
        step that reads the member's identity (module invariant)."""
        async with self._commit_lock:
            identity: MemberIdentity | None
            if self.member is not None:
                identity = self.member.identity()
                if identity is None:
                    return {}  # not a member right now: nothing is owned
            else:
                identity = MemberIdentity("", 0)  # assign(): a commit outside membership
            offsets = pick()
            if self.member is not None:  # the group holds what we committed: nobody else commits ours
                offsets = {tp: o for tp, o in offsets.items() if self._committed.get(tp) != o}
            if not offsets:
                return {}
            request = groups_pb2.CommitOffsetsRequest(
                group=self.group_id,
                member_id=identity.member_id,
                member_epoch=identity.member_epoch,
                offsets=[
                    groups_pb2.OffsetToCommit(topic=tp.topic, partition=tp.partition, offset=offset)
                    for tp, offset in sorted(offsets.items())
                ],
            )
            try:
                await self._rpc.commit(request, deadline=deadline)
            except GroupMembershipError:
                if self.member is not None:
                    self.member.wake()  # the heartbeat finds out what happened
                raise
            for tp, offset in offsets.items():
                if self.owns(tp):
                    self._committed[tp] = offset
            return offsets

    async def _load_committed(self, states: list[PartitionState]) -> None:
        """Position granted partitions at their committed offsets (the reset
        policy where there is none), unless they were sought or released
        meanwhile; then start their fetchers."""
        owned = self._partitions.owned()
        try:
            found = await self._fetch_committed([s.tp for s in states], deadline=None)
        except RaftlogError as error:
            for state in states:
                if owned.get(state.tp) is state and state.awaiting_committed:
                    state.awaiting_committed = False
                    state.error = error
            self._partitions.wake()
            return
        for state in states:
            if owned.get(state.tp) is not state or not state.awaiting_committed:
                continue
            offset = found.get(state.tp)
            # A committed offset was reached by reading: at or below a high
            # watermark, so "above the end" later means a lagging leader.
            state.reposition(offset, confirmed=offset is not None)
            if offset is not None:
                self._committed[state.tp] = offset
        self._partitions.wake()  # a waiting poll() starts the fetchers

    async def _run_callback(
        self, name: str, callback: RebalanceCallback | None, partitions: frozenset[TopicPartition]
    ) -> None:
        if callback is None or not partitions:
            return
        try:
            result = callback(partitions)
            if inspect.isawaitable(result):
                await result
        except Exception as error:
            logger.exception("group %s: %s callback failed", self.group_id, name)
            if self._callback_error is None:
                self._callback_error = error
