"""``raftlog.v1.LogService`` on one node: produce, fetch, offsets, producer ids.

A request names a topic and partition of the caller's tenant (cluster/auth.py
says which); the node serves it when it hosts the partition's leader,
forwards it to the leader it knows of otherwise (forwarding.py), and answers
``NOT_LEADER`` with the leader's address when it cannot.

Invariants: every call is authenticated before anything else, and topics are
looked up only under the caller's tenant; a handler never holds a
partition's state across an ``await`` (it asks the replica again after
waiting); every failure leaves through ``grpc_errors`` with a reason; a
produce response is sent only for a batch that committed.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from cluster.auth import Authenticator
from cluster.controller import Assignment
from cluster.forwarding import Forwarder, may_forward
from cluster.grpc_errors import ServiceError, abort, from_offset_error, from_replica_error
from partitions.replica import Replica
from partitions.replica_errors import NotLeaderError, ReplicaError
from partitions.state_machine import OffsetOutOfRange
from raftlog.v1 import log_pb2, log_pb2_grpc

T = TypeVar("T")

DEFAULT_FETCH_BYTES = 1 << 20
MAX_FETCH_BYTES = 64 << 20
MAX_WAIT_MS = 30_000


PartitionLocator = Callable[[str, str, int], Assignment | None]
"""``(tenant, topic, partition)`` -> the partition's assignment, if it exists."""


class LogService(log_pb2_grpc.LogServiceServicer):
    def __init__(
        self,
        auth: Authenticator,
        locate: PartitionLocator,
        replica_of: Callable[[int], Replica | None],
        address_of: Callable[[int], str],
        forwarder: Forwarder | None = None,
    ) -> None:
        self._auth = auth
        self._locate = locate
        self._replica_of = replica_of
        self._address_of = address_of
        self._forwarder = forwarder

    async def _replica(self, context: grpc.aio.ServicerContext, topic: str, partition: int) -> Replica:
        caller = await self._auth.caller(context)
        assignment = self._locate(caller.tenant, topic, partition)
        replica = self._replica_of(assignment.group) if assignment is not None else None
        if replica is not None:
            return replica
        if assignment is None:
            raise ServiceError(
                grpc.StatusCode.NOT_FOUND,
                "UNKNOWN_TOPIC_OR_PARTITION",
                f"topic {topic!r} partition {partition} does not exist; list topics to see what does",
                metadata={"topic": topic, "partition": str(partition)},
            )
        raise ServiceError(
            grpc.StatusCode.FAILED_PRECONDITION,
            "NOT_LEADER",
            f"this node holds no replica of {topic}/{partition}; ask another node",
        )

    def _replica_error(self, error: ReplicaError) -> ServiceError:
        leader = getattr(error, "leader", 0)
        return from_replica_error(error, self._address_of(leader) if leader else "")

    async def _answer(
        self,
        context: grpc.aio.ServicerContext,
        work: Awaitable[T],
        forward: Callable[[str], Awaitable[T]] | None = None,
    ) -> T:
        """``work``'s result, or the call aborted with the error's status.
        ``forward(address)`` re-sends the request to a known leader when
        this node is not it (forwarding.py: at most one hop)."""
        try:
            return await work
        except ServiceError as error:
            await abort(context, error)
        except OffsetOutOfRange as error:
            await abort(context, from_offset_error(error))
        except NotLeaderError as error:
            address = self._address_of(error.leader) if error.leader else ""
            if forward is not None and address and self._forwarder is not None and may_forward(context):
                return await forward(address)
            await abort(context, self._replica_error(error))
        except ReplicaError as error:
            await abort(context, self._replica_error(error))

    async def Produce(
        self, request: log_pb2.ProduceRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.ProduceResponse:
        return await self._answer(
            context,
            self._produce(request, context),
            lambda address: self._forward(
                context, address, lambda ch: log_pb2_grpc.LogServiceStub(ch).Produce, request
            ),
        )

    async def Fetch(
        self, request: log_pb2.FetchRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.FetchResponse:
        return await self._answer(
            context,
            self._fetch(request, context),
            lambda address: self._forward(
                context, address, lambda ch: log_pb2_grpc.LogServiceStub(ch).Fetch, request
            ),
        )

    async def ListOffsets(
        self, request: log_pb2.ListOffsetsRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.ListOffsetsResponse:
        return await self._answer(
            context,
            self._list_offsets(request, context),
            lambda address: self._forward(
                context, address, lambda ch: log_pb2_grpc.LogServiceStub(ch).ListOffsets, request
            ),
        )

    async def _forward(
        self,
        context: grpc.aio.ServicerContext,
        address: str,
        method: Callable[[grpc.aio.Channel], Callable[..., Awaitable[T]]],
        request: object,
    ) -> T:
        assert self._forwarder is not None
        return await self._forwarder.forward(context, address, method, request)

    async def _produce(
        self, request: log_pb2.ProduceRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.ProduceResponse:
        replica = await self._replica(context, request.topic, request.partition)
        result = await replica.produce(request.batch)
        return log_pb2.ProduceResponse(
            base_offset=result.base_offset,
            last_offset=result.last_offset,
            append_time_ms=result.append_time_ms,
            duplicate=result.duplicate,
        )

    async def _fetch(
        self, request: log_pb2.FetchRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.FetchResponse:
        max_bytes = min(request.max_bytes or DEFAULT_FETCH_BYTES, MAX_FETCH_BYTES)
        replica = await self._replica(context, request.topic, request.partition)
        time_remaining = context.time_remaining()
        result = replica.read(request.offset, max_bytes)
        if not result.batches and request.max_wait_ms:
            wait_s = min(request.max_wait_ms, MAX_WAIT_MS) / 1000
            if time_remaining is not None:  # answer before the caller's deadline
                wait_s = max(0.0, min(wait_s, time_remaining - 0.05))
            if await replica.wait_for_data(request.offset, wait_s):
                result = replica.read(request.offset, max_bytes)
        return log_pb2.FetchResponse(
            batches=result.batches,
            high_watermark=result.high_watermark,
            log_start_offset=result.log_start_offset,
        )

    async def _list_offsets(
        self, request: log_pb2.ListOffsetsRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.ListOffsetsResponse:
        replica = await self._replica(context, request.topic, request.partition)
        if not replica.is_leader:
            raise NotLeaderError(replica.group, replica.leader)
        status = replica.status()
        response = log_pb2.ListOffsetsResponse(
            log_start_offset=status.log_start_offset, high_watermark=status.high_watermark
        )
        if request.HasField("timestamp_ms"):
            found = replica.offset_for_timestamp(request.timestamp_ms)
            if found is not None:
                response.offset_for_timestamp = found
        return response

    async def InitProducer(
        self, request: log_pb2.InitProducerRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.InitProducerResponse:
        # A random 62-bit id collides with another live producer's with
        # probability ~n^2 / 2^63 (n live producers); handing out id blocks
        # through the controller would make it zero (not done yet).
        async def init() -> log_pb2.InitProducerResponse:
            await self._auth.caller(context)
            return log_pb2.InitProducerResponse(producer_id=secrets.randbits(62), producer_epoch=0)

        return await self._answer(context, init())
