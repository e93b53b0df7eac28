"""Offset lookups on a partition's leader: ``ListOffsets`` (log start, high
watermark, the batch for a timestamp) and the first record at or after a
timestamp, for the consumer's seeks and offset resets.

Each lookup goes through the SDK's call path (client/leader_calls.py) for
at most ``api_timeout_s``, then raises ``DeliveryTimeoutError`` (its
``cause`` the last error); a non-retriable error is raised at once.
``check_open`` runs before every attempt, so a closed consumer stops
retrying.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from client.errors import DeliveryTimeoutError, RaftlogError
from client.leader_calls import LeaderCalls, PartitionRoute, UnaryCall
from client.metadata import ChannelPool, TopicPartition
from raftlog.v1 import log_pb2
from raftlog.v1.record_batch import InvalidBatch, decode_records, parse_header

__all__ = ["OffsetLookup"]

T = TypeVar("T")


class OffsetLookup:
    """See the module docstring."""

    def __init__(
        self, pool: ChannelPool, calls: LeaderCalls, *, api_timeout_s: float, check_open: Callable[[], None]
    ) -> None:
        self._pool = pool
        self._calls = calls
        self._api_timeout_s = api_timeout_s
        self._check_open = check_open

    async def list_offsets(
        self, tp: TopicPartition, timestamp_ms: int | None = None
    ) -> log_pb2.ListOffsetsResponse:
        """``ListOffsets`` on the leader, retried for ``api_timeout_s``."""
        request = log_pb2.ListOffsetsRequest(topic=tp.topic, partition=tp.partition)
        if timestamp_ms is not None:
            request.timestamp_ms = timestamp_ms

        def invoke(address: str, timeout: float) -> UnaryCall[log_pb2.ListOffsetsResponse]:
            call: UnaryCall[log_pb2.ListOffsetsResponse] = self._pool.log(address).ListOffsets(
                request, timeout=timeout
            )
            return call

        return await self._on_leader(tp, invoke)

    async def first_at_or_after(self, tp: TopicPartition, base_offset: int, timestamp_ms: int) -> int:
        """The server names the first batch whose newest record is recent
        enough; the answer is the first record in it that is."""
        request = log_pb2.FetchRequest(
            topic=tp.topic, partition=tp.partition, offset=base_offset, max_bytes=1
        )

        def invoke(address: str, timeout: float) -> UnaryCall[log_pb2.FetchResponse]:
            call: UnaryCall[log_pb2.FetchResponse] = self._pool.log(address).Fetch(request, timeout=timeout)
            return call

        response = await self._on_leader(tp, invoke)
        for batch in response.batches[:1]:
            try:
                records = decode_records(batch)
            except InvalidBatch:
                return base_offset
            for record in records:
                if record.offset >= base_offset and record.timestamp_ms >= timestamp_ms:
                    return record.offset
            return parse_header(batch).last_offset + 1
        return base_offset

    async def _on_leader(self, tp: TopicPartition, invoke: Callable[[str, float], UnaryCall[T]]) -> T:
        """``invoke`` on the leader through the call path, for at most
        ``api_timeout_s``."""
        loop = asyncio.get_running_loop()

        async def prepare() -> None:
            self._check_open()

        try:
            return await self._calls.call(
                PartitionRoute(self._calls.metadata, *tp),
                invoke,
                deadline=loop.time() + self._api_timeout_s,
                prepare=prepare,
            )
        except RaftlogError as error:
            if not error.retriable:
                raise
            raise DeliveryTimeoutError(
                f"{tp.topic}/{tp.partition}: no answer within {self._api_timeout_s:g} s; last error: {error}",
                cause=error,
            ) from None
