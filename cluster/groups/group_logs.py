"""The consumer-group coordinator's logs: partitions of the internal topic
``__consumer_offsets`` (tenant ``__system``), replicated through Raft like
any partition.

Each entry is stored as a keyed record (``offsets.stored_form``: a group's
deletion as a tombstone) so that the topic can be compacted, and read back
as the entry (``offsets.entry_of``).

``RaftCoordinatorLogs`` is ``cluster.groups.service.CoordinatorLogs`` over
this node's replicas: coordinator partition ``p`` is the offsets topic's
partition ``p``, and this node coordinates the groups that hash to ``p``
while it leads that partition. Each ``OffsetsLog.append`` is one record
batch, so a commit of several offsets is one Raft entry: all or nothing.

Invariants:

- ``log(p)`` answers only while the local replica of ``p`` leads; a
  replica that stops leading (check-quorum steps a partitioned leader down
  within an election timeout) makes it raise ``NotCoordinatorError`` with
  the leader it knows.
- ``read_all`` starts only once the leader has applied an entry of its own
  term, so it sees every record committed under earlier leaders.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

from cluster.controller_replica import ControllerReplica
from cluster.groups.offsets import entry_of, stored_form
from cluster.groups.service import NotCoordinatorError
from partitions.replica import Replica
from partitions.replica_errors import NotLeaderError
from raftlog.v1.record_batch import Record, decode_records, encode_batch

SYSTEM_TENANT = "__system"
OFFSETS_TOPIC = "__consumer_offsets"
READ_BYTES = 1 << 20
TERM_WAIT_S = 5.0


class ReplicaOffsetsLog:
    """One coordinator partition, through its local leader replica."""

    def __init__(self, partition: int, replica: Replica, leader_address: Callable[[int], str]) -> None:
        self._partition = partition
        self._replica = replica
        self._leader_address = leader_address

    @property
    def leader_term(self) -> int:
        return self._replica.term

    def _not_coordinator(self) -> NotCoordinatorError:
        return _not_coordinator(self._partition, self._replica, self._leader_address)

    async def append(self, records: Sequence[bytes]) -> int:
        stored = [stored_form(entry) for entry in records]
        batch = encode_batch([Record(key=key, value=value) for key, value in stored])
        try:
            result = await self._replica.produce(batch)
        except NotLeaderError:
            raise self._not_coordinator() from None
        return result.base_offset

    async def read_all(self) -> AsyncIterator[tuple[int, bytes]]:
        replica = self._replica
        deadline = asyncio.get_running_loop().time() + TERM_WAIT_S
        while not replica.serves_its_term:
            if not replica.is_leader or asyncio.get_running_loop().time() > deadline:
                raise self._not_coordinator()
            await asyncio.sleep(0.01)
        offset = 0
        while True:
            try:
                result = replica.read(offset, READ_BYTES)
            except NotLeaderError:
                raise self._not_coordinator() from None
            offset = max(offset, result.log_start_offset)
            if not result.batches:
                return
            for batch in result.batches:
                for record in decode_records(batch):
                    if record.offset >= offset:
                        yield record.offset, entry_of(record.key, record.value)
                        offset = record.offset + 1
            if offset >= result.high_watermark:
                return


class RaftCoordinatorLogs:
    def __init__(
        self,
        controller: ControllerReplica,
        replica_of: Callable[[int], Replica | None],
        address_of: Callable[[int], str],
    ) -> None:
        self._controller = controller
        self._replica_of = replica_of
        self._address_of = address_of

    @property
    def partition_count(self) -> int:
        topic = self._controller.state.topic(SYSTEM_TENANT, OFFSETS_TOPIC)
        return topic.partitions if topic is not None else 0

    def _replica(self, partition: int) -> Replica | None:
        """This node's replica of the offsets topic's ``partition``, if any."""
        assignment = self._controller.state.partition(SYSTEM_TENANT, OFFSETS_TOPIC, partition)
        return self._replica_of(assignment.group) if assignment is not None else None

    def log(self, partition: int) -> ReplicaOffsetsLog:
        replica = self._replica(partition)
        if replica is None or not replica.is_leader:
            raise _not_coordinator(partition, replica, self._address_of)
        return ReplicaOffsetsLog(partition, replica, self._address_of)

    def led_partitions(self) -> Sequence[int]:
        return [
            partition
            for partition in range(self.partition_count)
            if (replica := self._replica(partition)) is not None and replica.is_leader
        ]


def _not_coordinator(
    partition: int, replica: Replica | None, address_of: Callable[[int], str]
) -> NotCoordinatorError:
    """Not served here; names the leader this node's replica knows, if any."""
    leader = replica.leader if replica is not None else 0
    return NotCoordinatorError(partition, address_of(leader) if leader else "")
