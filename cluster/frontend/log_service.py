"""``raftlog.v1.LogService`` on one node: produce, fetch (long poll and
stream), offsets, producer ids.

A request names a topic and partition of the caller's tenant (cluster/frontend/auth.py
says which); the node serves it when it hosts the partition's leader,
forwards it to the leader it knows of otherwise (forwarding.py), and answers
``NOT_LEADER`` with the leader's address when it cannot. ``StreamFetch`` is
never forwarded (it answers ``NOT_LEADER``): a relayed stream would pin two
nodes for its whole life and break on every leader move anyway.

Invariants: every call is authenticated before anything else, and topics are
looked up only under the caller's tenant; a handler never holds a
partition's state across an ``await`` (it asks the replica again after
waiting); every failure leaves through ``grpc_errors`` with a reason; a
produce response is sent only for a batch that committed.

``Fetch`` and ``StreamFetch`` read through one path (``_read``: auth,
locate, read, wait for commits, look up and read again). A stream adds:

- each response starts where the previous one ended (the offset after its
  last batch), so a stream never skips or repeats a batch;
- one response is in hand at a time: the next read happens only once gRPC
  has taken the previous response (``context.write`` returned), so a client
  that stops reading stops the server at gRPC's flow-control window;
- an idle stream is one waiter on the replica's commits (no loop runs until
  a commit, a heartbeat the client asked for, or the ``LEADERSHIP_CHECK_S``
  guard: replicas do not wake waiters when they step down or stop, so the
  guard bounds how long a stream can sit on a replica that no longer leads);
- the key, tenant, topic and leadership are checked again before every
  response, so a revoked key, a deleted topic or a leader move ends it.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc

from cluster.controller import Assignment
from cluster.frontend.auth import Authenticator
from cluster.frontend.forwarding import Forwarder, may_forward
from cluster.frontend.grpc_errors import ServiceError, abort, from_offset_error, from_replica_error
from partitions.replica import ReadResult, Replica
from partitions.replica_errors import NotLeaderError, ReplicaError
from partitions.state_machine import OffsetOutOfRange
from raftlog.v1 import log_pb2, log_pb2_grpc
from raftlog.v1.record_batch import parse_header

T = TypeVar("T")

DEFAULT_FETCH_BYTES = 1 << 20
MAX_FETCH_BYTES = 64 << 20
MAX_WAIT_MS = 30_000
LEADERSHIP_CHECK_S = MAX_WAIT_MS / 1000
"""The longest an idle stream waits without looking at its replica again."""


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
        forward: Callable[[grpc.aio.Channel], Callable[..., Awaitable[T]]] | None = None,
        request: object = None,
    ) -> T:
        """``work``'s result, or the call aborted with the error's status.
        ``forward(channel)`` is the stub method that re-sends ``request`` to
        a known leader when this node is not it (forwarding.py: at most one
        hop)."""
        try:
            return await work
        except ServiceError as error:
            await abort(context, error)
        except OffsetOutOfRange as error:
            await abort(context, from_offset_error(error))
        except NotLeaderError as error:
            address = self._address_of(error.leader) if error.leader else ""
            if forward is not None and address and self._forwarder is not None and may_forward(context):
                return await self._forwarder.forward(context, address, forward, request)
            await abort(context, self._replica_error(error))
        except ReplicaError as error:
            await abort(context, self._replica_error(error))

    async def Produce(
        self, request: log_pb2.ProduceRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.ProduceResponse:
        return await self._answer(
            context,
            self._produce(request, context),
            lambda ch: log_pb2_grpc.LogServiceStub(ch).Produce,
            request,
        )

    async def Fetch(
        self, request: log_pb2.FetchRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.FetchResponse:
        return await self._answer(
            context,
            self._fetch(request, context),
            lambda ch: log_pb2_grpc.LogServiceStub(ch).Fetch,
            request,
        )

    async def StreamFetch(
        self, request: log_pb2.StreamFetchRequest, context: grpc.aio.ServicerContext
    ) -> None:
        # No forward: a stream ends with NOT_LEADER and the client reopens
        # it on the leader (module docstring).
        await self._answer(context, self._stream_fetch(request, context))

    async def ListOffsets(
        self, request: log_pb2.ListOffsetsRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.ListOffsetsResponse:
        return await self._answer(
            context,
            self._list_offsets(request, context),
            lambda ch: log_pb2_grpc.LogServiceStub(ch).ListOffsets,
            request,
        )

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

    async def _read(
        self,
        context: grpc.aio.ServicerContext,
        topic: str,
        partition: int,
        offset: int,
        max_bytes: int,
        wait_s: float,
    ) -> ReadResult:
        """What the leader holds from ``offset`` (at most about ``max_bytes``,
        at least one batch). With nothing there yet and ``wait_s`` > 0, waits
        up to ``wait_s`` for a commit, then reads again from the replica as
        found again (it may have stopped, or lost leadership meanwhile).
        Raises ``ServiceError``, ``NotLeaderError``, ``OffsetOutOfRange`` or
        another ``ReplicaError``."""
        replica = await self._replica(context, topic, partition)
        result = replica.read(offset, max_bytes)
        if result.batches or wait_s <= 0:
            return result
        # Returns early on any commit, also one that brings nothing at
        # `offset` (a new leader's first entry): the read below then says
        # whether this node still leads.
        await replica.wait_for_data(offset, wait_s)
        replica = await self._replica(context, topic, partition)
        return replica.read(offset, max_bytes)

    async def _fetch(
        self, request: log_pb2.FetchRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.FetchResponse:
        max_bytes = min(request.max_bytes or DEFAULT_FETCH_BYTES, MAX_FETCH_BYTES)
        wait_s = min(request.max_wait_ms, MAX_WAIT_MS) / 1000
        time_remaining = context.time_remaining()
        if wait_s and time_remaining is not None:  # answer before the caller's deadline
            wait_s = max(0.0, min(wait_s, time_remaining - 0.05))
        result = await self._read(
            context, request.topic, request.partition, request.offset, max_bytes, wait_s
        )
        return _response(result)

    async def _stream_fetch(
        self, request: log_pb2.StreamFetchRequest, context: grpc.aio.ServicerContext
    ) -> None:
        """Send what commits from ``request.offset`` on until an error ends
        the stream (raised, for ``_answer``) or the call is cancelled or
        times out (gRPC cancels this coroutine; the replica's waiter goes
        with it). Never returns normally."""
        topic, partition = request.topic, request.partition
        max_bytes = min(request.max_bytes or DEFAULT_FETCH_BYTES, MAX_FETCH_BYTES)
        heartbeat_s = min(request.max_wait_ms, MAX_WAIT_MS) / 1000 if request.max_wait_ms else None
        loop = asyncio.get_running_loop()
        offset = request.offset
        # The first response goes out at once, data or not: it tells the
        # client the stream is open (and where the log ends).
        result = await self._read(context, topic, partition, offset, max_bytes, 0.0)
        while True:
            # Returns once gRPC has taken the response: with the client's
            # window full it does not, and nothing more is read meanwhile.
            await context.write(_response(result))
            sent_at = loop.time()
            if result.batches:
                offset = parse_header(result.batches[-1]).last_offset + 1
            while True:
                if heartbeat_s is None:
                    wait_s = LEADERSHIP_CHECK_S
                else:
                    wait_s = max(0.0, heartbeat_s - (loop.time() - sent_at))
                result = await self._read(context, topic, partition, offset, max_bytes, wait_s)
                if result.batches:
                    break
                if heartbeat_s is not None and loop.time() - sent_at >= heartbeat_s:
                    break  # a heartbeat: no batches, the current watermarks

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


def _response(result: ReadResult) -> log_pb2.FetchResponse:
    return log_pb2.FetchResponse(
        batches=result.batches,
        high_watermark=result.high_watermark,
        log_start_offset=result.log_start_offset,
    )
