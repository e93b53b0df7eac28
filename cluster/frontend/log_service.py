"""``raftlog.v1.LogService`` on one node: produce, fetch (long poll and
stream), offsets, producer ids.

Every call reaches a handler through the front door (front_door.py), which
authenticated the caller and maps every error raised here to a status with
a reason. A request names a topic and partition of the caller's tenant
(``current_caller()``); the handler only locates it: the local replica when
this node leads it, a forward to the leader it knows of otherwise
(forwarding.py), ``NOT_LEADER`` with the leader's address when it cannot.
Where the leader is comes from ``leader_of`` (Raft group -> node id, 0
unknown) when this node holds no replica of the partition, and from the
replica's own ``NotLeaderError`` when it does. ``StreamFetch`` is never
forwarded (it answers ``NOT_LEADER``): a relayed stream would pin two nodes
for its whole life and break on every leader move anyway.

Invariants: topics are looked up only under the caller's tenant; a client
key reaches only the topics its prefixes cover (key_scope.py: produce
prefixes for ``Produce``, consume prefixes for ``Fetch``, ``StreamFetch``
and ``ListOffsets``, some produce prefix for ``InitProducer``), checked with
the lookup, so a topic of another tenant or none is ``NOT_FOUND`` as before;
no key produces to an internal topic (internal_topics.py: the system tenant's
topics and ``__``-named ones), while an operator may fetch them; a handler
never holds a partition's state across an ``await`` (it asks the replica
again after waiting); a produce response is sent only for a batch that
committed.

Tracing (cluster/telemetry/tracing.py): a sampled ``Produce`` served by the
leader gets child spans for the proposal's steps (``raft.propose`` ->
``raft.commit``, ``raft.apply``, ``group_commit.sync``) from the marks the
replica fills in a ``ProposalTiming`` (partitions/proposal_timing.py).

Stages (``metrics``: the node's, cluster/telemetry/node_metrics.py): every
successful ``Produce`` this node's replica served has its time split into
stages (``raftlog_produce_stage_seconds{stage}``) from the same marks, plus
two of the handler's own: ``received_ns`` (the handler began) and the
moment it resumed after the replica answered. One ``ProposalTiming`` serves
both: made when the span is sampled or metrics are on; with neither, the
call asks for no marks and reads no clock.

``Fetch`` and ``StreamFetch`` read through one path (``_read``: locate,
read, wait for commits, look up and read again). A stream adds:

- each response starts where the previous one ended (the offset after its
  last batch), so a stream never skips or repeats a batch;
- one response is in hand at a time: the next read happens only once gRPC
  has taken the previous response (``context.write`` returned), so a client
  that stops reading stops the server at gRPC's flow-control window;
- an idle stream is one waiter on the replica's commits, woken by a
  commit, a heartbeat the client asked for, or every ``CALLER_CHECK_S``;
- the key, tenant, topic and leadership are checked again before every
  response, whenever this node's metadata changes while it waits
  (``metadata``: a ``MetadataWatch`` cuts the wait short, so a revoked key
  or a deleted topic ends it milliseconds after this node applies the
  entry), and at least every ``CALLER_CHECK_S`` while idle
  (``confirm_caller``), which bounds what no metadata entry announces: a
  key's expiry, a replica stepping down or stopping (replicas do not wake
  waiters then). A long-poll ``Fetch`` waits the same way, so a revoked
  key's poll ends too. The check is one HMAC and a few lookups: cheap at
  two a second per open stream, and metadata changes are rare.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

import grpc

from cluster.controller import Assignment
from cluster.frontend.auth import Caller
from cluster.frontend.forwarding import Forwarder, may_forward
from cluster.frontend.front_door import confirm_caller, current_caller
from cluster.frontend.grpc_errors import ServiceError, shown
from cluster.frontend.internal_topics import check_writable
from cluster.frontend.key_scope import TopicAction, check_may_produce_somewhere, check_topic
from cluster.frontend.metadata_watch import MetadataWatch, VersionedMetadata
from cluster.telemetry.tracing import proposal_timing, record_proposal_spans
from partitions.proposal_timing import ProposalTiming, next_proposal_timing, observe_stages
from partitions.replica import ReadResult, Replica
from partitions.replica_errors import NotLeaderError
from raftlog.v1 import log_pb2, log_pb2_grpc
from raftlog.v1.reasons import Reason
from raftlog.v1.record_batch import parse_header

if TYPE_CHECKING:  # only its type: a LogService without metrics needs no Prometheus
    from cluster.telemetry.node_metrics import NodeMetrics

T = TypeVar("T")

DEFAULT_FETCH_BYTES = 1 << 20
MAX_FETCH_BYTES = 64 << 20
MAX_WAIT_MS = 30_000
CALLER_CHECK_S = 0.5
"""The longest a waiting fetch or an idle stream goes without checking its
caller (an expired key), topic and replica (a lost leadership) again; a
metadata change (a revocation) wakes it at once when the service has a
``metadata`` to watch. The issue asks that a revoked key fail on every node
within a second."""


PartitionLocator = Callable[[str, str, int], Assignment | None]
"""``(tenant, topic, partition)`` -> the partition's assignment, if it exists."""


# The stub method a forwarded call uses (built once, not per call).
def _produce_on(channel: grpc.aio.Channel) -> Callable[..., Awaitable[log_pb2.ProduceResponse]]:
    return log_pb2_grpc.LogServiceStub(channel).Produce


def _fetch_on(channel: grpc.aio.Channel) -> Callable[..., Awaitable[log_pb2.FetchResponse]]:
    return log_pb2_grpc.LogServiceStub(channel).Fetch


def _list_offsets_on(channel: grpc.aio.Channel) -> Callable[..., Awaitable[log_pb2.ListOffsetsResponse]]:
    return log_pb2_grpc.LogServiceStub(channel).ListOffsets


class LogService(log_pb2_grpc.LogServiceServicer):
    def __init__(
        self,
        locate: PartitionLocator,
        replica_of: Callable[[int], Replica | None],
        leader_of: Callable[[int], int],
        address_of: Callable[[int], str],
        forwarder: Forwarder | None = None,
        metadata: VersionedMetadata | None = None,
        metrics: NodeMetrics | None = None,
    ) -> None:
        """``metadata``: this node's (the controller replica), whose changes
        wake waiting fetches and streams to check their caller again; None:
        only the ``CALLER_CHECK_S`` period does. ``metrics``: the node's,
        where produce stages are observed; None: metrics are off."""
        self._locate = locate
        self._replica_of = replica_of
        self._leader_of = leader_of
        self._address_of = address_of
        self._forwarder = forwarder
        self._watch = MetadataWatch(metadata) if metadata is not None else None
        # The stage observers, resolved once (not a labels() lookup per call).
        self._stages = metrics.produce_stages if metrics is not None else None

    def _replica(self, caller: Caller, topic: str, partition: int, action: TopicAction) -> Replica:
        """This node's replica of the partition, or the error that says
        where to go: ``KEY_SCOPE`` for an existing topic outside a client
        key's prefixes for ``action``, ``UNKNOWN_TOPIC_OR_PARTITION``, or
        ``NotLeaderError`` naming the leader as ``leader_of`` knows it."""
        assignment = self._locate(caller.tenant, topic, partition)
        # Partition 0 exists in every topic: the scope answer depends on the
        # topic, not on the partition asked for.
        exists = assignment is not None or self._locate(caller.tenant, topic, 0) is not None
        check_topic(caller.principal, topic, action, exists=exists)
        if assignment is None:
            raise ServiceError(
                grpc.StatusCode.NOT_FOUND,
                Reason.UNKNOWN_TOPIC_OR_PARTITION,
                f"topic {shown(topic)} partition {partition} does not exist; list topics to see what does",
                metadata={"topic": shown(topic), "partition": str(partition)},
            )
        replica = self._replica_of(assignment.group)
        if replica is None:
            raise NotLeaderError(assignment.group, self._leader_of(assignment.group))
        return replica

    async def _answer(
        self,
        context: grpc.aio.ServicerContext,
        work: Awaitable[T],
        forward: Callable[[grpc.aio.Channel], Callable[..., Awaitable[T]]],
        request: object,
    ) -> T:
        """``work``'s result; when it finds this node is not the leader and
        the leader is known, the answer of ``forward(channel)``, the stub
        method that re-sends ``request`` there (forwarding.py: at most one
        hop). Every other error goes on to the front door."""
        try:
            return await work
        except NotLeaderError as error:
            address = self._address_of(error.leader) if error.leader else ""
            forwarder = self._forwarder
            if not address or forwarder is None or not may_forward(context):
                raise
            return await forwarder.forward(context, address, forward, request)

    async def Produce(
        self, request: log_pb2.ProduceRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.ProduceResponse:
        return await self._answer(
            context,
            self._produce(request, context),
            _produce_on,
            request,
        )

    async def Fetch(
        self, request: log_pb2.FetchRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.FetchResponse:
        return await self._answer(
            context,
            self._fetch(request, context),
            _fetch_on,
            request,
        )

    async def StreamFetch(
        self, request: log_pb2.StreamFetchRequest, context: grpc.aio.ServicerContext
    ) -> None:
        # No forward: a stream ends with NOT_LEADER and the client reopens
        # it on the leader (module docstring).
        await self._stream_fetch(request, context)

    async def ListOffsets(
        self, request: log_pb2.ListOffsetsRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.ListOffsetsResponse:
        return await self._answer(
            context,
            self._list_offsets(request, context),
            _list_offsets_on,
            request,
        )

    async def _produce(
        self, request: log_pb2.ProduceRequest, context: grpc.aio.ServicerContext
    ) -> log_pb2.ProduceResponse:
        stages = self._stages
        received_ns = time.monotonic_ns() if stages is not None else 0
        caller = current_caller()
        check_writable(caller.tenant, request.topic, caller.is_operator)  # internal_topics.py
        replica = self._replica(caller, request.topic, request.partition, TopicAction.PRODUCE)
        timing = proposal_timing()  # None unless this call's span is sampled
        traced = timing is not None
        if timing is None and stages is not None:
            timing = ProposalTiming()
        if timing is None:
            result = await replica.produce(request.batch)
        else:
            # The replica fills the marks; the spans and the stages are made
            # from them after the fact (cluster/telemetry/tracing.py: spans
            # failed or not; stages only for an answer).
            timing.received_ns = received_ns
            token = next_proposal_timing.set(timing)
            failure: BaseException | None = None
            try:
                result = await replica.produce(request.batch)
                resumed_ns = time.monotonic_ns()  # first thing: the reply stage ends here
            except BaseException as exc:
                failure = exc
                raise
            finally:
                next_proposal_timing.reset(token)
                if traced:
                    record_proposal_spans(timing, replica.group, failure)
            if stages is not None:
                observe_stages(timing, resumed_ns, stages)
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
        up to ``wait_s`` for data, in slices of at most ``CALLER_CHECK_S``:
        after each (or a commit) it checks the caller again and reads from
        the replica as found again (it may have stopped, or lost leadership
        meanwhile). Raises ``ServiceError``, ``NotLeaderError``,
        ``OffsetOutOfRange`` or another ``ReplicaError``."""
        consume = TopicAction.CONSUME
        replica = self._replica(current_caller(), topic, partition, consume)
        result = replica.read(offset, max_bytes)
        if result.batches or wait_s <= 0:
            return result
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            # Returns early on any commit, also one that brings nothing at
            # `offset` (a new leader's first entry): the read below then
            # says whether this node still leads.
            waiting = replica.wait_for_data(offset, max(0.0, min(CALLER_CHECK_S, deadline - loop.time())))
            if self._watch is None:
                await waiting
            else:  # a metadata change (a revocation, a deleted topic) ends the wait early
                await self._watch.wait_cut_short(waiting)
            # The key may have been revoked, the topic deleted while waiting.
            replica = self._replica(await confirm_caller(context), topic, partition, consume)
            result = replica.read(offset, max_bytes)
            if result.batches or loop.time() >= deadline:
                return result

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
        the stream (raised, for the front door) or the call is cancelled or
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
                await confirm_caller(context)  # the key may be revoked, the tenant gone
                if heartbeat_s is None:
                    wait_s = MAX_WAIT_MS / 1000  # _read checks the caller every CALLER_CHECK_S
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
        replica = self._replica(current_caller(), request.topic, request.partition, TopicAction.CONSUME)
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
        check_may_produce_somewhere(current_caller().principal)
        return log_pb2.InitProducerResponse(producer_id=secrets.randbits(62), producer_epoch=0)


def _response(result: ReadResult) -> log_pb2.FetchResponse:
    return log_pb2.FetchResponse(
        batches=result.batches,
        high_watermark=result.high_watermark,
        log_start_offset=result.log_start_offset,
    )
