"""``Replica``: one partition replica — a ``RaftReplica`` whose log is the
partition log (partitions/raft_replica.py drives Raft; this adds what a
partition means: produce, read, long poll, retention, key compaction).

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
- Key compaction (partitions/compaction.py has the why): only the leader
  decides (``compact_now``, or on its own when enough is dirty or
  ``max_compaction_lag_ms`` is due) by proposing a compact command; every
  replica then rewrites its own applied entries in bounded housekeeping
  steps (``LogCleaner``), yielding to the event loop between steps, and
  asks RocksDB to compact the rewritten key range at the end of a pass so
  the space goes back to the disk. ``update_config`` changes only what the
  leader decides and checks (policy, lags, retention, keyless refusal);
  apply results never depend on it.
- A leader whose data disk is below its reserve (partitions/disk_space.py)
  refuses every produce with ``DiskFull`` before proposing anything; a
  follower in that state drops incoming entries (``drops_appends_when_disk_low``,
  partitions/raft_replica.py) and tells the leader, which refuses produce
  the same way, naming them, once fewer than a quorum of its voters have
  room (partitions/disk_wait.py). Reads go on either way.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, replace
from typing import Any

from partitions.cleaner import LogCleaner
from partitions.commands import CompactCommand, decode_produce, encode_compact, encode_produce
from partitions.compaction import StoredBatch
from partitions.disk_wait import quorum_full_refusal
from partitions.keys import ColumnFamily, log_key
from partitions.raft_replica import RaftReplica, ReplicaConfig, ReplicaCounters, SendFn
from partitions.replica_errors import DiskFull, NotLeaderError, ProduceRejected
from partitions.state_machine import (
    Appended,
    BatchLocation,
    CompactionScheduled,
    Duplicate,
    OffsetOutOfRange,
    PartitionConfig,
    PartitionStateMachine,
    Rejected,
)
from raft.errors import Compacted
from raft.types import Entry, Role
from raftlog.v1.reasons import Reason
from raftlog.v1.record_batch import InvalidBatch, decode_records_as, validate_batch, with_base_offset

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
    cleaned_offset: int = -1
    """Offset up to which this replica's own copy is key-compacted."""
    compacted_bytes: int = 0
    """Batch bytes key compaction removed from this copy (this process)."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _key_of(
    offset: int,
    timestamp_ms: int,
    key: bytes | None,
    value: bytes | None,
    headers: tuple[tuple[str, bytes], ...],
) -> bytes | None:
    return key


CLEANER_MAX_PAUSE_S = 0.05
"""The longest pause between two compaction steps of a replica (a pause as
long as the step before it, up to this)."""

AUTO_COMPACT_MIN_DIRTY_BYTES = 1 << 20
"""The leader compacts on its own once this many batch bytes are dirty..."""
AUTO_COMPACT_DIRTY_RATIO = 0.5
"""...and they are at least this share of the retained bytes (Kafka's
``min.cleanable.dirty.ratio``)."""


class Replica(RaftReplica[PartitionStateMachine]):
    """One partition replica on this node."""

    drops_appends_when_disk_low = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._hw_waiters: set[asyncio.Future[None]] = set()
        self._retention_now_ms: int | None = None
        self._unsafe_next_offset = 0  # only with unsafe_ack_before_commit
        self._cleaner = LogCleaner()
        self._cleaning = False  # a step is computing or writing its rewrites
        self._auto_compaction: asyncio.Future[Any] | None = None
        self._compacted_at_last_range = 0
        super().__init__(*args, **kwargs)

    def _restore(self, index: int, data: bytes) -> PartitionStateMachine:
        return PartitionStateMachine.restore(self._config.partition, index, data)

    @property
    def high_watermark(self) -> int:
        return self._sm.high_watermark

    @property
    def retained_bytes(self) -> int:
        """Batch bytes this copy holds (what a tenant's storage quota counts)."""
        return self._sm.retained_bytes

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
            hibernating=self.hibernating,
            voters=tuple(sorted(self.voters)),
            learners=tuple(sorted(self.learners)),
            committed_members=tuple(sorted(self.committed_members)),
            cleaned_offset=self._cleaner.cleaned_offset if self._cleaner_current() else -1,
            compacted_bytes=self._cleaner.compacted_bytes,
        )

    def _cleaner_current(self) -> bool:
        """Whether this replica's copy is compacted to the current target, the
        rewrites durable (a step's result is reported only once written)."""
        target = self._sm.compaction_target
        return target is not None and not self._cleaning and not self._cleaner.pending(self._sm)

    def request_retention(self, now_ms: int | None = None) -> None:
        """Apply the retention policy at the next quiet moment."""
        self._retention_now_ms = _now_ms() if now_ms is None else now_ms
        self.request_housekeeping()

    async def produce(self, batch: bytes) -> ProduceResult:
        """Append one record batch; returns its offsets once committed.

        Raises ``ProduceRejected`` (the batch or its producer state is
        wrong: nothing was appended), ``NotLeaderError``, ``DiskFull``
        (nothing was appended), ``Backpressure``, ``OutcomeUnknown`` or
        ``ReplicaStopped``."""
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
        disk = self._disk
        if disk is not None and disk.low:
            disk.refused()
            raise DiskFull(disk.refusal(self.node_id))
        full = self._full_peers.blocking_quorum(self.voters, self.node_id)
        if full:
            raise DiskFull(quorum_full_refusal(self.group, full, len(self.voters)))
        if self._config.partition.compacts:
            self._check_keys(batch)
        rejected = self._sm.check_produce(header)
        if rejected is not None:
            raise ProduceRejected(rejected.reason, rejected.message)
        if self._config.unsafe_ack_before_commit:
            return self._unsafe_ack(encode_produce(batch, _now_ms()), header.record_count)
        result: ProduceResult = await self.propose(encode_produce(batch, _now_ms()))
        return result

    def _check_keys(self, batch: bytes) -> None:
        """A compacted topic refuses records without a key (there would be
        nothing to compact them by). Decodes the batch: compacted topics
        only."""
        try:
            keys = decode_records_as(batch, _key_of, max_uncompressed_bytes=self._config.max_batch_bytes)
        except InvalidBatch as exc:
            raise ProduceRejected(exc.reason, exc.message) from None
        for position, key in enumerate(keys):
            if key is None:
                raise ProduceRejected(
                    Reason.KEY_REQUIRED,
                    f"record {position} of the batch has no key, and the topic is compacted "
                    "(cleanup_policy compact): give every record a key",
                )

    def update_config(self, config: PartitionConfig) -> None:
        """Use ``config`` for the leader's decisions from now on (topic
        alter). The state machine keeps its dedup window and producer
        expiry: those decide apply results and must not change under a
        running replica."""
        config.validate()
        old = self._config.partition
        config = replace(config, dedup_window=old.dedup_window, producer_expiry_ms=old.producer_expiry_ms)
        self._config = replace(self._config, partition=config)
        self._sm.config = config
        if config.compacts:
            self.request_housekeeping()

    def _compact_command(self, now_ms: int) -> CompactCommand:
        config = self._config.partition
        node = self._node
        floor = node.applied_index
        for peer in node.effective_conf_state.all_nodes():
            if peer != self.node_id:
                progress = node.progress(peer)
                floor = min(floor, progress.match if progress is not None else 0)
        return CompactCommand(
            clean_up_to_offset=self._sm.compactable_end(now_ms - config.min_compaction_lag_ms),
            now_ms=now_ms,
            delete_retention_ms=config.delete_retention_ms,
            tombstone_floor_index=floor,
            max_map_entries=config.compaction_map_entries,
        )

    async def compact_now(self, now_ms: int | None = None) -> int:
        """Leader only: propose a compaction of everything older than
        ``min_compaction_lag_ms``; returns the target offset (the last
        offset cleaned) once the command committed and applied here (every
        replica then compacts its copy in the background), -1 when nothing
        was ever old enough to compact (an empty log, or every record
        younger than the lag). Raises ``NotLeaderError``,
        ``OutcomeUnknown``, ``Backpressure`` or ``ReplicaStopped``."""
        self._check_running()
        if self._node.role != Role.LEADER:
            raise NotLeaderError(self.group, self._node.leader)
        command = self._compact_command(_now_ms() if now_ms is None else now_ms)
        result = await self.propose(encode_compact(command))
        assert isinstance(result, CompactionScheduled)
        return result.clean_up_to_offset

    def _unsafe_ack(self, command: bytes, records: int) -> ProduceResult:
        """TEST ONLY: answer at once with the offsets the batch will get if
        everything goes well, and let the proposal run on unobserved."""
        base = max(self._unsafe_next_offset, self._sm.high_watermark)
        self._unsafe_next_offset = base + records
        proposal = asyncio.ensure_future(self.propose(command))
        proposal.add_done_callback(lambda f: f.cancelled() or f.exception())
        return ProduceResult(base, base + records - 1, _now_ms())

    def _settle(self, future: asyncio.Future[Any], result: Any) -> None:
        if isinstance(result, CompactionScheduled):
            future.set_result(result)
        elif isinstance(result, Appended):
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
                batches.append(with_base_offset(decode_produce(entry.data).batch, base))
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
        if self._cleaner.pending(self._sm) or self._auto_compaction_due():
            self.request_housekeeping()
        if not self._hw_waiters:  # the usual case: no long poll is waiting
            return
        waiters, self._hw_waiters = self._hw_waiters, set()
        for future in waiters:
            if not future.done():
                future.set_result(None)

    async def _housekeeping(self) -> None:
        await self._retention()
        if self._auto_compaction_due():
            future = self._submit(encode_compact(self._compact_command(_now_ms())))
            future.add_done_callback(lambda f: f.cancelled() or f.exception())
            self._auto_compaction = future
        if self._cleaner.pending(self._sm):
            started = time.monotonic()
            await self._clean_step()
            if self._cleaner.pending(self._sm):
                # Paced: the next step comes after a pause as long as this
                # one took (at most CLEANER_MAX_PAUSE_S), so the cleaners of
                # a node use at most about half of its CPU and the hot path
                # (produce, fetch, Raft traffic) gets the rest; this replica
                # keeps serving its own inbox meanwhile.
                pause = min(time.monotonic() - started, CLEANER_MAX_PAUSE_S)
                asyncio.get_running_loop().call_later(pause, self.request_housekeeping)

    def _auto_compaction_due(self) -> bool:
        """Whether this leader should propose a compaction on its own: enough
        dirty bytes, or the oldest dirty batch past ``max_compaction_lag_ms``."""
        config = self._config.partition
        if not config.compacts or self._node.role != Role.LEADER:
            return False
        if self._auto_compaction is not None and not self._auto_compaction.done():
            return False
        dirty, oldest_ms = self._sm.dirty_bytes()
        if oldest_ms is None:
            return False
        now = _now_ms()
        if now - oldest_ms < config.min_compaction_lag_ms:
            return False
        if config.max_compaction_lag_ms is not None and now - oldest_ms >= config.max_compaction_lag_ms:
            return True
        return (
            dirty >= AUTO_COMPACT_MIN_DIRTY_BYTES
            and dirty >= AUTO_COMPACT_DIRTY_RATIO * self._sm.retained_bytes
        )

    def _read_stored(self, locations: list[BatchLocation]) -> list[StoredBatch]:
        if not locations:
            return []
        base_by_index = {loc.raft_index: loc.base_offset for loc in locations}
        entries = self._storage.entries(locations[0].raft_index, locations[-1].raft_index + 1)
        stored = []
        for entry in entries:
            base = base_by_index.get(entry.index)
            if base is not None:
                command = decode_produce(entry.data)
                stored.append(StoredBatch(entry.index, base, command.append_time_ms, bytes(command.batch)))
        return stored

    async def _clean_step(self) -> None:
        """One bounded step of key compaction of this replica's own copy.

        The step's CPU work (decoding, the offset map, re-encoding) runs in
        a worker thread: the event loop thread gets the interpreter back at
        every switch interval (5 ms), instead of waiting out a whole step
        (tens of ms for a step of large batches). Nothing else changes the
        state machine or this replica's log meanwhile: this owner task is
        the only one that applies entries, and it is awaiting the step;
        reads (fetches) only read."""
        self._cleaning = True
        try:
            await self._clean_step_unreported()
        finally:
            self._cleaning = False

    async def _clean_step_unreported(self) -> None:
        sm = self._sm
        rewrites, pass_done = await asyncio.to_thread(self._cleaner.step, sm, self._read_stored)
        if rewrites:
            storage = self._storage
            entries = [
                Entry(
                    storage.term(r.raft_index), r.raft_index, data=encode_produce(r.batch, r.append_time_ms)
                )
                for r in rewrites
            ]
            rewrite = storage.rewrite(entries)
            rewrite.write_set.mark_freeing()  # each keeps a subset of the records it replaces
            await self._write(rewrite)
            self._cleaner.compacted_bytes += sm.resize_batches({r.raft_index: len(r.batch) for r in rewrites})
        if pass_done and self._cleaner.compacted_bytes > self._compacted_at_last_range:
            self._compacted_at_last_range = self._cleaner.compacted_bytes
            # Give the space back: RocksDB keeps overwritten values until a
            # compaction of their range (off the event loop: it can be long).
            store = self._storage.store
            first = self._storage.first_index()
            end = self._node.applied_index + 1
            await asyncio.to_thread(
                store.compact_range,
                ColumnFamily.RAFT_LOG,
                log_key(self.group, first),
                log_key(self.group, end),
            )

    async def _retention(self) -> None:
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
