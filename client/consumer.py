"""``Consumer``: reads assigned partitions from their leaders, in order.

The consumer keeps, per assigned partition, a *position* (the offset of the
next record ``poll`` returns) and a fetcher task that reads from the
partition's leader from its *fetch offset* and buffers the decoded records.
``poll`` hands buffered records over, up to ``max_poll_records``, taking
partitions in turn.

This module is the façade; the work is done by:

- client/fetcher.py: per-partition fetch state and fetcher tasks (long-poll
  and stream modes, offset resets, ``ListOffsets``); its docstring has the
  fetch modes, the buffer bounds and the out-of-range rules.
- client/group_binding.py: consumer groups (``subscribe``, ``commit``,
  ``committed``, what a rebalance does to the partitions); its docstring
  has the commit rules and the group invariant.
- client/offset_lookup.py: ``ListOffsets`` and timestamp lookups (seeks).
- client/leader_calls.py: the call path every request takes (leader
  lookup, per-attempt timeout, retries, redirects, silent nodes).

Invariants:

- Per partition, records are returned in offset order, each once, with no
  gap: the fetch offset only advances past records appended to the buffer,
  the position only past records returned, and ``seek`` (or a reset) drops
  the buffer and restarts the fetcher from the new position.
- ``assign`` and ``subscribe`` are exclusive.
- The consumer owns its tasks: fetchers (client/fetcher.py), the member
  task and committed-offset lookups (client/group_binding.py); ``close``
  cancels and awaits all of them, then closes the channels.

Leader moves: ``NOT_LEADER`` answers, ``raftlog-leader`` trailers,
unreachable nodes and timeouts make the fetcher look the leader up again
(or go where it was told) and retry from the same offset.
``auto_offset_reset`` decides where a partition without a valid position
starts: ``"earliest"``, ``"latest"`` or ``"error"`` (``poll`` raises
``OffsetOutOfRangeError`` once and the partition waits for a ``seek``).

Consumer groups. With ``group_id``, ``subscribe(topics)`` makes the
consumer a member of the group: the group's coordinator splits the
subscribed topics' partitions among the members and moves them when
members come and go. ``commit()`` commits the positions of owned
partitions; auto commit (``enable_auto_commit``) commits the *processed*
positions (what earlier polls returned) on a timer, on revocation and on
close. A committed offset never passes a record that ``poll`` has not
returned; the price is duplicates after a rebalance or a crash.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Literal

from client.errors import ClientClosedError
from client.fetcher import ConsumerRecord, Fetcher, FetchMode, OffsetReset, PartitionState
from client.group_binding import GroupBinding, RebalanceCallback
from client.group_member import GroupRpc
from client.leader_calls import ATTEMPT_TIMEOUT_S, LeaderCalls
from client.metadata import MetadataCache, TopicPartition, client_transport

__all__ = ["Consumer", "ConsumerRecord", "FetchMode", "OffsetReset", "RebalanceCallback"]


class Consumer:
    """Reads records from assigned partitions; see the module docstring.

    ``bootstrap``: node addresses. ``max_poll_records``: most records one
    ``poll`` returns. ``fetch_max_bytes``: soft limit of one fetch (and of
    a partition's buffer). ``fetch_max_wait_ms``: how long the leader holds
    a fetch that has no data yet. ``fetch_mode``: ``"poll"`` (long polls)
    or ``"stream"`` (one server stream per partition); see
    client/fetcher.py. ``stream_heartbeat_ms``: in stream mode, how long
    the leader may stay silent before it sends an empty response (0:
    never); a stream silent for this plus the attempt timeout is taken for
    dead and opened again (with 0, only a failed connection ends it).
    ``auto_offset_reset``: see the module docstring. ``attempt_timeout_s``:
    how long one call waits for a node (beyond the long-poll wait) before
    it is tried again; ``request_timeout_s`` caps it and bounds group calls.
    ``api_timeout_s``: how long ``seek_to_*``, ``commit`` and ``committed``
    keep retrying. ``api_key``, ``tenant``: who is calling
    (``client.auth``). ``address_map``: advertised node address -> address
    to dial. ``tls_ca``: the cluster's CA certificate file for TLS (None:
    ``$RAFTLOG_TLS_CA``, else plaintext; ``client.auth``).

    Consumer groups (client/group_binding.py): ``group_id`` names the
    group (needed by ``subscribe``, ``commit`` and ``committed``).
    ``enable_auto_commit``, ``auto_commit_interval_ms``: commit processed
    positions on a timer, on revocation and on close (subscribed consumers
    only). ``session_timeout_ms``: how long the coordinator keeps this
    member without a heartbeat (the server bounds it; it answers with the
    heartbeat interval). ``rebalance_timeout_ms``: how long the member may
    take to release revoked partitions (0: the server's default).
    ``client_id``: shown by ``DescribeGroup``. ``on_assigned``,
    ``on_revoked``, ``on_lost`` (``RebalanceCallback``): run on the member
    task; an exception they raise is raised by the next ``poll``. With
    ``SyncConsumer`` they run on its loop thread and must not call the
    facade.
    """

    def __init__(
        self,
        bootstrap: str | Sequence[str],
        *,
        max_poll_records: int = 500,
        fetch_max_bytes: int = 1 << 20,
        fetch_max_wait_ms: int = 500,
        fetch_mode: FetchMode | Literal["poll", "stream"] = FetchMode.POLL,
        stream_heartbeat_ms: int = 5000,
        auto_offset_reset: OffsetReset | str = OffsetReset.EARLIEST,
        request_timeout_s: float = 10.0,
        attempt_timeout_s: float = ATTEMPT_TIMEOUT_S,
        api_timeout_s: float = 60.0,
        retry_backoff_ms: float = 20.0,
        retry_backoff_max_ms: float = 1000.0,
        api_key: str | None = None,
        tenant: str | None = None,
        address_map: Mapping[str, str] | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
        group_id: str | None = None,
        enable_auto_commit: bool = True,
        auto_commit_interval_ms: int = 5000,
        session_timeout_ms: int = 10_000,
        rebalance_timeout_ms: int = 0,
        client_id: str | None = None,
        on_assigned: RebalanceCallback | None = None,
        on_revoked: RebalanceCallback | None = None,
        on_lost: RebalanceCallback | None = None,
    ) -> None:
        if max_poll_records < 1 or fetch_max_bytes < 1 or fetch_max_wait_ms < 0:
            raise ValueError("max_poll_records and fetch_max_bytes must be >= 1, fetch_max_wait_ms >= 0")
        if not 0 <= stream_heartbeat_ms <= 30_000:
            raise ValueError(f"stream_heartbeat_ms must be in [0, 30000], got {stream_heartbeat_ms}")
        if group_id is not None and not group_id:
            raise ValueError("group_id must not be empty (None: no group)")
        if auto_commit_interval_ms < 1 or session_timeout_ms < 1 or rebalance_timeout_ms < 0:
            raise ValueError(
                "auto_commit_interval_ms and session_timeout_ms must be >= 1, rebalance_timeout_ms >= 0"
            )
        if min(request_timeout_s, attempt_timeout_s, api_timeout_s) <= 0:
            raise ValueError("timeouts must be > 0")
        attempt_timeout_s = min(attempt_timeout_s, request_timeout_s)
        self._pool, self._metadata, self._backoff = client_transport(
            bootstrap,
            request_timeout_s=attempt_timeout_s,
            retry_backoff_ms=retry_backoff_ms,
            retry_backoff_max_ms=retry_backoff_max_ms,
            api_key=api_key,
            tenant=tenant,
            address_map=address_map,
            tls_ca=tls_ca,
        )
        calls = LeaderCalls(self._metadata, self._backoff, attempt_timeout_s=attempt_timeout_s)
        self._max_poll_records = max_poll_records
        self._member_id = str(uuid.uuid4())  # kept for the life of the consumer
        self._closed = False
        self._fetcher = Fetcher(
            self._pool,
            calls,
            mode=FetchMode(fetch_mode),
            max_bytes=fetch_max_bytes,
            max_wait_ms=fetch_max_wait_ms,
            stream_heartbeat_ms=stream_heartbeat_ms,
            reset=OffsetReset(auto_offset_reset),
            api_timeout_s=api_timeout_s,
            check_open=self._check_open,
        )
        self._group: GroupBinding | None = None
        if group_id is not None:
            self._group = GroupBinding(
                self._fetcher,
                GroupRpc(self._pool, calls),
                group_id=group_id,
                member_id=self._member_id,
                client_id=client_id or f"raftlog-python/{socket.gethostname()}/{os.getpid()}",
                auto_commit=enable_auto_commit,
                auto_commit_interval_s=auto_commit_interval_ms / 1000,
                session_timeout_ms=session_timeout_ms,
                rebalance_timeout_ms=rebalance_timeout_ms,
                backoff=self._backoff,
                request_timeout_s=request_timeout_s,
                api_timeout_s=api_timeout_s,
                on_assigned=on_assigned,
                on_revoked=on_revoked,
                on_lost=on_lost,
            )

    # --- context manager and iteration ------------------------------------------

    async def __aenter__(self) -> Consumer:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # On an exception the records of the last poll may be unprocessed:
        # commit only what earlier polls returned.
        await self._close(commit_returned=exc is None)

    async def __aiter__(self) -> AsyncIterator[ConsumerRecord]:
        """Records as they arrive, until the consumer is closed. The
        position advances per record handed out, so leaving the loop early
        loses nothing."""
        while not self._closed:
            for record in await self.poll(1.0, max_records=1):
                yield record

    @property
    def metadata(self) -> MetadataCache:
        return self._metadata

    @property
    def group_id(self) -> str | None:
        return self._group.group_id if self._group is not None else None

    @property
    def member_id(self) -> str:
        """This consumer's member id in its group (the same across rejoins)."""
        return self._group.member_id if self._group is not None else self._member_id

    @property
    def member_epoch(self) -> int | None:
        """The member's current epoch; None when not a member right now."""
        return self._group.member_epoch if self._group is not None else None

    def subscription(self) -> frozenset[str] | None:
        """The subscribed topics; None when not subscribed."""
        return self._group.subscription if self._group is not None else None

    # --- assignment and positions -------------------------------------------------

    def subscribe(self, topics: Iterable[str] | str) -> None:
        """Consume ``topics`` as a member of ``group_id``: the group's
        coordinator assigns this consumer its share of their partitions
        (``assignment()`` follows it). Calling it again changes the
        subscription. Raises ``ValueError`` without a ``group_id``, without
        topics, or after ``assign`` (they are exclusive). The membership
        starts here when an event loop runs, else at the first ``poll``."""
        self._check_open()
        if self._group is None:
            raise ValueError(
                "subscribe() needs a consumer group: create the consumer with group_id='...' "
                "(or use assign() to pick partitions yourself)"
            )
        wanted = frozenset([topics] if isinstance(topics, str) else topics)
        if not wanted or not all(isinstance(t, str) and t for t in wanted):
            raise ValueError("subscribe() needs at least one topic name; unsubscribe() leaves the group")
        if self._group.subscription is None and self._fetcher.states:
            raise ValueError(
                "assign() and subscribe() are exclusive: this consumer has assigned partitions; "
                "assign([]) first"
            )
        self._group.subscribe(wanted)

    async def unsubscribe(self) -> None:
        """Leave the group: stop fetching, commit the positions (auto
        commit), tell ``on_revoked``, send ``LeaveGroup``. The consumer
        stays open (``assign`` or ``subscribe`` again). No-op when not
        subscribed."""
        self._check_open()
        if self._group is not None and self._group.subscription is not None:
            await self._group.leave(commit_returned=True)

    def assign(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Read exactly these partitions from now on. Partitions kept from
        the previous assignment keep their positions; new ones start where
        ``auto_offset_reset`` says unless you ``seek`` them. Raises
        ``ValueError`` while subscribed (``assign`` and ``subscribe`` are
        exclusive)."""
        self._check_open()
        subscription = self.subscription()
        if subscription is not None:
            raise ValueError(
                "assign() and subscribe() are exclusive: this consumer is subscribed to "
                f"{sorted(subscription)}; unsubscribe() first"
            )
        wanted = [TopicPartition(t, p) for t, p in partitions]
        states = self._fetcher.states
        self._fetcher.detach([tp for tp in states if tp not in wanted])
        for tp in wanted:
            if tp not in states:
                self._fetcher.add(tp)

    def assignment(self) -> set[TopicPartition]:
        """The partitions read now (assigned, or granted by the group)."""
        return set(self._fetcher.states)

    def position(self, tp: tuple[str, int]) -> int | None:
        """The offset of the next record ``poll`` returns for ``tp``; None
        until it is known (a fresh assignment before the first fetch)."""
        return self._state(tp).position

    def seek(self, topic: str, partition: int, offset: int) -> None:
        """Read ``topic``/``partition`` from ``offset`` on. An offset outside
        the log is handled by ``auto_offset_reset`` at the next fetch."""
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        state = self._state((topic, partition))
        self._fetcher.retire(state)
        state.reposition(offset, confirmed=False)

    async def seek_to_beginning(self, *partitions: tuple[str, int]) -> None:
        """Move ``partitions`` (default: all assigned) to their log start."""
        for tp in self._targets(partitions):
            response = await self._fetcher.offsets.list_offsets(tp)
            self._fetcher.seek_confirmed(tp, int(response.log_start_offset))

    async def seek_to_end(self, *partitions: tuple[str, int]) -> None:
        """Move ``partitions`` (default: all assigned) to their high
        watermark: only records written from now on are read."""
        for tp in self._targets(partitions):
            response = await self._fetcher.offsets.list_offsets(tp)
            self._fetcher.seek_confirmed(tp, int(response.high_watermark))

    async def seek_to_timestamp(
        self, timestamp_ms: int, *partitions: tuple[str, int]
    ) -> dict[TopicPartition, int | None]:
        """Move ``partitions`` (default: all assigned) to the first record
        whose timestamp is at or after ``timestamp_ms``. A partition with no
        such record moves to its end; its entry in the answer is None
        (the others give the new position)."""
        found: dict[TopicPartition, int | None] = {}
        for tp in self._targets(partitions):
            response = await self._fetcher.offsets.list_offsets(tp, timestamp_ms)
            if not response.HasField("offset_for_timestamp"):
                self._fetcher.seek_confirmed(tp, int(response.high_watermark))
                found[tp] = None
                continue
            offset = await self._fetcher.offsets.first_at_or_after(
                tp, int(response.offset_for_timestamp), timestamp_ms
            )
            self._fetcher.seek_confirmed(tp, offset)
            found[tp] = offset
        return found

    # --- polling -----------------------------------------------------------------

    async def poll(self, timeout_s: float = 1.0, *, max_records: int | None = None) -> list[ConsumerRecord]:
        """Records from the assigned partitions, waiting up to ``timeout_s``
        for some to arrive; an empty list when none did. Raises a partition's
        non-retriable error (``OffsetOutOfRangeError`` under the ``"error"``
        policy, ``UnknownTopicOrPartitionError``...) once; that partition
        then stays idle until it is sought."""
        self._check_open()
        fetcher = self._fetcher
        if self._group is not None:
            self._group.raise_error()
            self._group.start_member()
        for state in fetcher.states.values():
            state.processed = state.position  # the application is done with earlier records
        limit = max_records or self._max_poll_records
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout_s)
        while True:
            if fetcher.dirty:
                fetcher.start_fetchers()
            records = fetcher.take(limit)
            if records:
                return records
            fetcher.raise_error()
            remaining = deadline - loop.time()
            if remaining <= 0:
                return []
            fetcher.data.clear()
            try:
                async with asyncio.timeout(remaining):
                    await fetcher.data.wait()
            except TimeoutError:
                return []
            self._check_open()

    # --- committed offsets ---------------------------------------------------------

    async def commit(self, offsets: Mapping[tuple[str, int], int] | None = None) -> dict[TopicPartition, int]:
        """Commit, for the group, the position (last record ``poll``
        returned + 1) of every owned partition, or the given ``offsets``
        (each the offset of the next record to read) of owned partitions.
        Partitions whose offset the group already holds are left out.
        Returns what was committed (nothing while the member is between
        memberships: it owns nothing then). Retries for ``api_timeout_s``, then
        raises ``DeliveryTimeoutError``; ``FencedMemberError``/
        ``UnknownMemberIdError`` mean the partitions were lost (the member
        joins again), ``StaleMemberEpochError`` that one was revoked
        meanwhile. A consumer using ``assign()`` commits without membership
        (the server allows it only while the group has no members)."""
        group = self._require_group("commit()")
        if self._closed and not group.leaving:  # on_revoked may commit while closing
            raise ClientClosedError("the consumer is closed")
        given: dict[TopicPartition, int] | None = None
        if offsets is not None:
            given = {}
            for tp, offset in offsets.items():
                if offset < 0:
                    raise ValueError(f"offset must be >= 0, got {offset} for {tp[0]}/{tp[1]}")
                if not group.owns(TopicPartition(*tp)):
                    raise ValueError(f"{tp[0]}/{tp[1]} is not owned by this consumer")
                given[TopicPartition(*tp)] = int(offset)
        return await group.commit(given)

    async def committed(
        self, partitions: Iterable[tuple[str, int]] | None = None
    ) -> dict[TopicPartition, int | None]:
        """The group's committed offsets of ``partitions`` (default: the
        assigned ones); None for a partition without one."""
        self._check_open()
        group = self._require_group("committed()")
        wanted = sorted(
            {TopicPartition(*tp) for tp in partitions} if partitions is not None else self._fetcher.states
        )
        if not wanted:
            return {}
        return await group.committed(wanted)

    async def close(self) -> None:
        """Stop every fetcher; when subscribed, commit the positions (auto
        commit: every record ``poll`` returned counts as processed), tell
        ``on_revoked`` and leave the group; close the channels. Idempotent."""
        await self._close(commit_returned=True)

    async def _close(self, *, commit_returned: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._fetcher.data.set()  # wake a poll() waiting in another task
        try:
            if self._group is not None and self._group.member is not None:
                await self._group.leave(commit_returned=commit_returned)
        finally:
            if self._group is not None:
                await self._group.close()
            await self._fetcher.close()
            await self._pool.close()

    # --- internals ----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ClientClosedError("the consumer is closed")

    def _require_group(self, what: str) -> GroupBinding:
        if self._group is None:
            raise ValueError(f"{what} needs a consumer group: create the consumer with group_id='...'")
        return self._group

    def _state(self, tp: tuple[str, int]) -> PartitionState:
        state = self._fetcher.states.get(TopicPartition(*tp))
        if state is None:
            raise ValueError(f"{tp[0]}/{tp[1]} is not assigned to this consumer; assign() it first")
        return state

    def _targets(self, partitions: Sequence[tuple[str, int]]) -> list[TopicPartition]:
        self._check_open()
        targets = [TopicPartition(*tp) for tp in partitions] if partitions else list(self._fetcher.states)
        for tp in targets:
            self._state(tp)
        return targets
