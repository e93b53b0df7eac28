"""``Replica``: one partition replica — a ``RaftReplica`` whose log is the
partition log (partitions/raft_replica.py drives Raft; this adds what a
partition means: produce, read, long poll, retention).

Invariants (on top of the driver's):

- A produce completes only after its entry committed and was applied here,
  with the offsets the state machine assigned. If this replica loses
  leadership (or stops) first, the produce fails with ``OutcomeUnknown``: the
  entry may still commit under the next leader, and an idempotent retry then
  returns its original offsets. (``unsafe_ack_before_commit``, a test-only
  switch for the failover drills' negative control, breaks this on purpose.)
- Reads return only batches at or below the applied index: on this node they
  are committed and durable. ``read`` does not await between locating
  batches and reading them, so it sees one consistent state.
- Long polls wait on the high watermark; every waiter is removed when it
  returns, whether it timed out or not.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from partitions.commands import decode_command, encode_produce
from partitions.raft_replica import RaftReplica, ReplicaConfig, ReplicaCounters, SendFn
from partitions.replica_errors import NotLeaderError, ProduceRejected
from partitions.state_machine import (
    Appended,
    Duplicate,
    OffsetOutOfRange,
    PartitionStateMachine,
    Rejected,
)
from raft.errors import Compacted
from raft.types import Role
from raftlog.v1.record_batch import InvalidBatch, validate_batch, with_base_offset

__all__ = [
    "ProduceResult",
    "ReadResult",
    "Replica",
    "ReplicaConfig",
    "ReplicaCounters",
    "ReplicaStatus",
    "SendFn",
]


@dataclass(frozen=True, slots=True)
class ProduceResult:
    base_offset: int
    last_offset: int
    append_time_ms: int
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class ReadResult:
    batches: list[bytes]
    high_watermark: int
    log_start_offset: int


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    group: int
    role: Role
    leader: int
    term: int
    commit_index: int
    applied_index: int
    last_index: int
    high_watermark: int
    log_start_offset: int
    hibernating: bool
    voters: tuple[int, ...]
    learners: tuple[int, ...]
    committed_members: tuple[int, ...]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Replica(RaftReplica[PartitionStateMachine]):
    """One partition replica on this node."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._hw_waiters: set[asyncio.Future[None]] = set()
        self._retention_now_ms: int | None = None
        self._unsafe_next_offset = 0  # only with unsafe_ack_before_commit
        super().__init__(*args, **kwargs)

    def _restore(self, index: int, data: bytes) -> PartitionStateMachine:
        return PartitionStateMachine.restore(self._config.partition, index, data)

    @property
    def high_watermark(self) -> int:
        return self._sm.high_watermark

    def status(self) -> ReplicaStatus:
        node = self._node
        return ReplicaStatus(
            group=self.group,
            role=node.role,
            leader=node.leader,
            term=node.term,
            commit_index=node.commit_index,
            applied_index=node.applied_index,
            last_index=node.last_index,
            high_watermark=self._sm.high_watermark,
            log_start_offset=self._sm.log_start_offset,
            hibernating=self._hibernating,
            voters=tuple(sorted(self.voters)),
            learners=tuple(sorted(self.learners)),
            committed_members=tuple(sorted(self.committed_members)),
        )

    def request_retention(self, now_ms: int | None = None) -> None:
        """Apply the retention policy at the next quiet moment."""
        self._retention_now_ms = _now_ms() if now_ms is None else now_ms
        self.request_housekeeping()

    async def produce(self, batch: bytes) -> ProduceResult:
        """Append one record batch; returns its offsets once committed.

        Raises ``ProduceRejected`` (the batch or its producer state is
        wrong: nothing was appended), ``NotLeaderError``, ``Backpressure``,
        ``OutcomeUnknown`` or ``ReplicaStopped``."""
        self._check_running()
        try:
            # A gzip batch must also fit max_batch_bytes once decompressed
            # (validate_batch's default), and is inflated no further than
            # that: a small bomb is refused after ~max_batch_bytes of work.
            header = validate_batch(batch, max_batch_bytes=self._config.max_batch_bytes)
        except InvalidBatch as exc:
            raise ProduceRejected(exc.reason, exc.message) from None
        if self._node.role != Role.LEADER:
            raise NotLeaderError(self.group, self._node.leader)
        rejected = self._sm.check_produce(header)
        if rejected is not None:
            raise ProduceRejected(rejected.reason, rejected.message)
        if self._config.unsafe_ack_before_commit:
            return self._unsafe_ack(encode_produce(batch, _now_ms()), header.record_count)
        result: ProduceResult = await self.propose(encode_produce(batch, _now_ms()))
        return result

    def _unsafe_ack(self, command: bytes, records: int) -> ProduceResult:
        """TEST ONLY: answer at once with the offsets the batch will get if
        everything goes well, and let the proposal run on unobserved."""
        base = max(self._unsafe_next_offset, self._sm.high_watermark)
        self._unsafe_next_offset = base + records
        proposal = asyncio.ensure_future(self.propose(command))
        proposal.add_done_callback(lambda f: f.cancelled() or f.exception())
        return ProduceResult(base, base + records - 1, _now_ms())

    def _settle(self, future: asyncio.Future[Any], result: Any) -> None:
        if isinstance(result, Appended):
            future.set_result(ProduceResult(result.base_offset, result.last_offset, result.append_time_ms))
        elif isinstance(result, Duplicate):
            future.set_result(
                ProduceResult(result.base_offset, result.last_offset, result.append_time_ms, duplicate=True)
            )
        else:
            assert isinstance(result, Rejected)
            future.set_exception(ProduceRejected(result.reason, result.message))

    def read(self, offset: int, max_bytes: int) -> ReadResult:
        """Batches from the one containing ``offset`` up to the high
        watermark, at most about ``max_bytes`` (at least one batch). Raises
        ``NotLeaderError`` or ``OffsetOutOfRange``."""
        self._check_running()
        if self._node.role != Role.LEADER:
            raise NotLeaderError(self.group, self._node.leader)
        sm = self._sm
        locations = sm.locate(offset, max_bytes)
        if not locations:
            return ReadResult([], sm.high_watermark, sm.log_start_offset)
        base_by_index = {loc.raft_index: loc.base_offset for loc in locations}
        try:
            entries = self._storage.entries(locations[0].raft_index, locations[-1].raft_index + 1)
        except Compacted:
            raise OffsetOutOfRange(offset, sm.log_start_offset, sm.high_watermark) from None
        batches = []
        for entry in entries:
            base = base_by_index.get(entry.index)
            if base is not None:
                batches.append(with_base_offset(decode_command(entry.data).batch, base))
        return ReadResult(batches, sm.high_watermark, sm.log_start_offset)

    def offset_for_timestamp(self, timestamp_ms: int) -> int | None:
        return self._sm.offset_for_timestamp(timestamp_ms)

    async def wait_for_data(self, offset: int, timeout: float) -> bool:
        """Wait until the high watermark passes ``offset`` (long poll);
        returns whether it did within ``timeout`` seconds."""
        if self._sm.high_watermark > offset:
            return True
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._hw_waiters.add(future)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            pass
        finally:
            # A long poll that times out on an idle partition must not leave
            # its future behind: nothing else would ever remove it.
            self._hw_waiters.discard(future)
        return self._sm.high_watermark > offset

    def _on_applied(self) -> None:
        if not self._hw_waiters:  # the usual case: no long poll is waiting
            return
        waiters, self._hw_waiters = self._hw_waiters, set()
        for future in waiters:
            if not future.done():
                future.set_result(None)

    async def _housekeeping(self) -> None:
        """Drop whole batches the retention policy no longer keeps: a Raft
        snapshot at the cut, then log compaction (the Raft log is the
        partition log). A follower that needs what was dropped gets the
        snapshot (start offset, producer state) instead."""
        if self._retention_now_ms is None:
            return
        now_ms, self._retention_now_ms = self._retention_now_ms, None
        cut = self._sm.retention_cut(now_ms)
        if cut is None:
            return
        await self._snapshot_and_compact(cut.index, cut.data)
        self._sm.compacted(cut.index)
