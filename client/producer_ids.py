"""Producer ids and sequence numbers: what makes a ``Producer``'s writes
idempotent (client/producer.py sends the batches; this numbers them).

A partition drops a batch it already appended when the batch carries the
same producer id, epoch and base sequence (its dedup window), and answers
it with the original offsets. ``ProducerIds`` fixes those three in a
batch's bytes (``encode``) and keeps each partition's numbering
(``PartitionQueue.producer_id``, ``epoch``, ``next_sequence``) as batches
commit or fail.

Invariants:

- A batch's bytes are fixed once, at its first ``encode``; the producer
  resends exactly those bytes, so a retry of a batch that did commit is
  recognised as a duplicate. Only ``renumber`` (the partition forgot this
  producer and nothing of the batch was written) clears them.
- Records are numbered per partition from 0, and the sequence advances
  only when a batch commits (``committed``): a batch refused without being
  written gives its sequence numbers to the next batch.
- A partition whose sequence state is unknown - a batch that may have
  committed was given up on, or the partition reported an out-of-order or
  duplicate sequence (``failed``) - switches to a fresh producer id from
  ``InitProducer``, starting at sequence 0, so a later batch can never be
  mistaken for a duplicate of an earlier one.
- Every partition starts with the same id, from the producer's first
  ``InitProducer`` (one per producer, asked once however many partitions
  wait for it). ``InitProducer`` is one attempt on the next candidate node;
  a failure is raised as the ``RaftlogError`` it maps to, and the caller's
  retry loop decides what then.
- Without idempotence (``idempotent=False``) batches carry no id and none
  of this applies: a retry may write a batch twice.
"""

from __future__ import annotations

import asyncio

import grpc

from client.batches import SEQUENCE_MODULUS, Batch, PartitionQueue
from client.errors import (
    DuplicateSequenceError,
    OutOfOrderSequenceError,
    RaftlogError,
    from_rpc_error,
)
from client.metadata import ChannelPool, MetadataCache
from raftlog.v1 import log_pb2
from raftlog.v1.record_batch import encode_batch

__all__ = ["ProducerIds"]


class ProducerIds:
    """The producer ids and sequence numbers of one producer's partitions."""

    def __init__(
        self, pool: ChannelPool, metadata: MetadataCache, *, idempotent: bool, timeout_s: float
    ) -> None:
        """``timeout_s``: the deadline of one ``InitProducer`` attempt."""
        self._pool = pool
        self._metadata = metadata
        self._idempotent = idempotent
        self._timeout_s = timeout_s
        self._identity: tuple[int, int] | None = None
        self._identity_lock = asyncio.Lock()
        self._init_attempt = 0

    async def encode(self, q: PartitionQueue, batch: Batch) -> None:
        """Fix the batch's bytes: producer id, epoch and base sequence."""
        topic, partition = q.tp
        if not self._idempotent:
            data = encode_batch(batch.records)
        else:
            if q.producer_id < 0 or q.needs_new_identity:
                if q.needs_new_identity:
                    pid, epoch = await self._init_producer()
                else:
                    pid, epoch = await self._shared_identity()
                q.producer_id, q.epoch, q.next_sequence = pid, epoch, 0
                q.needs_new_identity = False
            batch.base_sequence = q.next_sequence
            data = encode_batch(
                batch.records,
                producer_id=q.producer_id,
                producer_epoch=q.epoch,
                base_sequence=batch.base_sequence,
            )
        batch.request = log_pb2.ProduceRequest(topic=topic, partition=partition, batch=data)

    def renumber(self, q: PartitionQueue, batch: Batch) -> None:
        """The partition forgot this producer (expiry) and nothing of
        ``batch`` was written: encode it again under a fresh id."""
        q.needs_new_identity = True
        batch.request = None

    def committed(self, q: PartitionQueue, batch: Batch) -> None:
        """``batch`` committed: the partition's next batch follows it."""
        if self._idempotent:
            q.next_sequence = (batch.base_sequence + len(batch.records)) % SEQUENCE_MODULUS

    def failed(self, q: PartitionQueue, batch: Batch, error: RaftlogError) -> None:
        """The producer gave up on ``batch`` with ``error``."""
        if self._idempotent and (
            batch.maybe_committed or isinstance(error, OutOfOrderSequenceError | DuplicateSequenceError)
        ):
            # This partition's sequence state is unknown from here on.
            q.needs_new_identity = True

    async def _shared_identity(self) -> tuple[int, int]:
        """The producer id and epoch every partition starts with (one
        ``InitProducer`` per producer)."""
        async with self._identity_lock:
            if self._identity is None:
                self._identity = await self._init_producer()
            return self._identity

    async def _init_producer(self) -> tuple[int, int]:
        """A new producer id from any node (one attempt; the caller's retry
        loop handles failures)."""
        candidates = self._metadata.candidates()
        address = candidates[self._init_attempt % len(candidates)]
        self._init_attempt += 1
        try:
            response: log_pb2.InitProducerResponse = await self._pool.log(address).InitProducer(
                log_pb2.InitProducerRequest(), timeout=self._timeout_s
            )
        except grpc.aio.AioRpcError as exc:
            raise from_rpc_error(exc) from None
        return int(response.producer_id), int(response.producer_epoch)
