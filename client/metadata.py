"""Reaching partitions: channels, the metadata cache, and retry timing.

- ``ChannelPool``: one ``grpc.aio`` channel per node address, created on
  first use and closed together. Channels allow 64 MiB messages (a fetch may
  return that much) and an 8 MiB HTTP/2 lookahead, reconnect within a
  second of a node coming back (gRPC's default reconnect backoff grows to two
  minutes, far longer than a node restart; until it expires every call on
  the channel fails at once), and send an HTTP/2 keepalive ping every
  second, with or without calls in flight: a paused or cut-off node that
  does not acknowledge one within a second has its connection closed, so
  the calls waiting on it fail with UNAVAILABLE in about two seconds
  instead of at their deadlines (the nodes accept pings down to one per
  500 ms: ``raftlog.v1.channel_options``).
- ``MetadataCache``: nodes, topics and partition leaders, learnt from
  ``MetadataService.GetMetadata`` on any node. Leaders are hints: callers
  report ``NOT_LEADER`` answers and ``raftlog-leader`` trailers
  (``leader_moved``), failures (``forget_leader``) and silent nodes
  (``node_failed``), and the next lookup of a forgotten leader asks the
  cluster again.
- ``Backoff``: capped exponential backoff with jitter.
- ``client_transport``: the three together, as a producer or consumer
  sets them up.

Invariants:

- At most one ``GetMetadata`` round is in flight per cache; callers that
  arrive while one runs wait for it and use its answer (no thundering herd
  when a leader dies under many partitions).
- The cache never raises ``UnknownTopicOrPartitionError`` for a topic
  unless a node answered and did not list it.
- When no node answered, the ``UnavailableError`` raised carries the
  longest ``retry_after_ms`` a refusing node asked for (``QUOTA_EXCEEDED``,
  ``BACKPRESSURE``), so the caller's wait honours it.
- A cached leader address is whichever was written last: a
  ``NOT_LEADER`` hint replaces it at once; a ``GetMetadata`` round, when it
  completes, replaces the leaders of every known topic with the ones it
  learnt and forgets those it learnt none for. Their ages are not compared,
  so a round that started before a hint may overwrite it (the next
  ``NOT_LEADER`` answer corrects that).
- A node that timed out or could not be reached is *suspect* for
  ``SUSPECT_S``: ``candidates()`` lists it after every other node, so a
  metadata round asks the nodes that answer first, and the leaderships
  cached at its address are forgotten at once. An answer from it clears
  the mark.
"""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import grpc

from client.auth import call_metadata, channel_credentials, credentials_interceptors, open_channel
from client.errors import (
    CALLER_ERRORS,
    LeaderNotAvailableError,
    RaftlogError,
    RequestTimeoutError,
    UnavailableError,
    UnknownTopicOrPartitionError,
    from_rpc_error,
)
from raftlog.v1 import (
    admin_pb2_grpc,
    channel_options,
    groups_pb2_grpc,
    log_pb2_grpc,
    metadata_pb2,
    metadata_pb2_grpc,
)

__all__ = [
    "CHANNEL_OPTIONS",
    "SUSPECT_S",
    "Backoff",
    "ChannelPool",
    "ClientTransport",
    "MetadataCache",
    "PartitionMetadata",
    "TopicMetadata",
    "TopicPartition",
    "client_transport",
    "is_silent",
    "parse_bootstrap",
]

CHANNEL_OPTIONS = channel_options.CHANNEL_OPTIONS
"""64 MiB messages, fast reconnects, keepalive pings every second
(``raftlog.v1.channel_options`` says why each is there)."""

SUSPECT_S = 5.0
"""How long a node that timed out or was unreachable is asked last for
metadata (long enough for an election to finish elsewhere, short enough
for a restarted node to be used again soon)."""


class TopicPartition(NamedTuple):
    """A partition of a topic; a plain ``(topic, partition)`` tuple works
    wherever one is expected."""

    topic: str
    partition: int


def parse_bootstrap(bootstrap: str | Sequence[str]) -> list[str]:
    """``"h1:p1,h2:p2"`` or a sequence of ``"host:port"`` → addresses, in
    order, without duplicates. Raises ``ValueError`` when there are none."""
    items = bootstrap.split(",") if isinstance(bootstrap, str) else list(bootstrap)
    addresses: list[str] = []
    for item in items:
        address = item.strip()
        if address and address not in addresses:
            addresses.append(address)
    if not addresses:
        raise ValueError("bootstrap needs at least one 'host:port' address")
    return addresses


class Backoff:
    """Delays for retry ``attempt`` (0, 1, 2...): ``initial_s * 2**attempt``
    capped at ``max_s``, times a random factor in [0.5, 1] so that clients
    that failed together do not retry together."""

    def __init__(self, initial_s: float = 0.02, max_s: float = 1.0, *, rng: random.Random | None = None):
        if not 0 < initial_s <= max_s:
            raise ValueError(f"need 0 < initial_s <= max_s, got {initial_s} and {max_s}")
        self.initial_s = initial_s
        self.max_s = max_s
        self._rng = rng or random.Random()

    def delay(self, attempt: int) -> float:
        base = min(self.max_s, self.initial_s * float(1 << min(attempt, 30)))
        return base * self._rng.uniform(0.5, 1.0)


class ChannelPool:
    """One ``grpc.aio`` channel per address. Use from one event loop."""

    def __init__(
        self,
        options: Sequence[tuple[str, int]] = CHANNEL_OPTIONS,
        *,
        api_key: str | None = None,
        tenant: str | None = None,
        address_map: Mapping[str, str] | None = None,
        tls_ca: str | os.PathLike[str] | None = None,
    ) -> None:
        """``api_key`` and ``tenant`` go with every call (client/auth.py);
        ``tls_ca``: the cluster CA to connect with TLS (None:
        ``$RAFTLOG_TLS_CA`` or plaintext; client/auth.py ``channel_credentials``);
        ``address_map`` maps a node's advertised address to the one actually
        dialled (a proxy in failover drills, a port-forward); addresses not
        in it are dialled as they are."""
        self._options = list(options)
        headers = call_metadata(api_key, tenant)
        self._interceptors = credentials_interceptors(headers)
        self._credentials = channel_credentials(tls_ca)
        self._address_map = dict(address_map or {})
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._log: dict[str, log_pb2_grpc.LogServiceStub] = {}
        self._metadata: dict[str, metadata_pb2_grpc.MetadataServiceStub] = {}
        self._admin: dict[str, admin_pb2_grpc.AdminServiceStub] = {}
        self._groups: dict[str, groups_pb2_grpc.GroupServiceStub] = {}
        self._closed = False

    def channel(self, address: str) -> grpc.aio.Channel:
        if self._closed:
            raise RuntimeError("channel pool is closed")
        channel = self._channels.get(address)
        if channel is None:
            channel = self._channels[address] = open_channel(
                self._address_map.get(address, address), self._credentials, self._options, self._interceptors
            )
        return channel

    # The generated stub classes carry no annotations, hence the ignores.

    def log(self, address: str) -> log_pb2_grpc.LogServiceStub:
        stub = self._log.get(address)
        if stub is None:
            stub = self._log[address] = log_pb2_grpc.LogServiceStub(self.channel(address))  # type: ignore[no-untyped-call]
        return stub

    def metadata(self, address: str) -> metadata_pb2_grpc.MetadataServiceStub:
        stub = self._metadata.get(address)
        if stub is None:
            channel = self.channel(address)
            stub = self._metadata[address] = metadata_pb2_grpc.MetadataServiceStub(channel)  # type: ignore[no-untyped-call]
        return stub

    def admin(self, address: str) -> admin_pb2_grpc.AdminServiceStub:
        stub = self._admin.get(address)
        if stub is None:
            stub = self._admin[address] = admin_pb2_grpc.AdminServiceStub(self.channel(address))  # type: ignore[no-untyped-call]
        return stub

    def groups(self, address: str) -> groups_pb2_grpc.GroupServiceStub:
        stub = self._groups.get(address)
        if stub is None:
            stub = self._groups[address] = groups_pb2_grpc.GroupServiceStub(self.channel(address))  # type: ignore[no-untyped-call]
        return stub

    async def close(self) -> None:
        """Close every channel (calls still running on them fail)."""
        self._closed = True
        channels = list(self._channels.values())
        self._channels.clear()
        for stubs in (self._log, self._metadata, self._admin, self._groups):
            stubs.clear()
        for channel in channels:
            await channel.close()


@dataclass(frozen=True, slots=True)
class PartitionMetadata:
    topic: str
    partition: int
    leader: int
    """Node id of the leader as the answering node knew it; 0: unknown."""
    replicas: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class TopicMetadata:
    name: str
    partitions: tuple[PartitionMetadata, ...]
    revision: int


class MetadataCache:
    """What the client knows about the cluster. See the module docstring.

    ``bootstrap`` addresses are asked first; once a node has answered, the
    nodes it listed are asked too. ``request_timeout_s`` bounds each
    ``GetMetadata`` call, ``max_age_s`` how long a topic's partition list is
    trusted without asking again.
    """

    def __init__(
        self,
        bootstrap: str | Sequence[str],
        pool: ChannelPool,
        *,
        request_timeout_s: float = 3.0,
        max_age_s: float = 300.0,
    ) -> None:
        self._bootstrap = parse_bootstrap(bootstrap)
        self._pool = pool
        self._request_timeout_s = request_timeout_s
        self._max_age_s = max_age_s
        self.nodes: dict[int, str] = {}
        self._topics: dict[str, TopicMetadata] = {}
        self._leaders: dict[TopicPartition, str] = {}
        self._wanted: set[str] = set()
        self._refreshed_at: float | None = None
        self._preferred: str | None = None  # the last node that answered
        self._suspects: dict[str, float] = {}  # address -> event-loop time the mark ends
        self._lock = asyncio.Lock()
        self._generation = 0  # completed refresh rounds

    # --- lookups ---------------------------------------------------------------

    def cached_topic(self, topic: str) -> TopicMetadata | None:
        return self._topics.get(topic)

    def cached_leader(self, topic: str, partition: int) -> str | None:
        """The leader address the cache holds, without asking anyone."""
        return self._leaders.get(TopicPartition(topic, partition))

    def leader_node(self, topic: str, partition: int) -> int | None:
        """Node id of the cached leader, when it is a known node."""
        address = self.cached_leader(topic, partition)
        for node, node_address in self.nodes.items():
            if node_address == address:
                return node
        return None

    async def topic(self, topic: str) -> TopicMetadata:
        """The topic's metadata, asking the cluster when it is not cached or
        too old. Raises ``UnknownTopicOrPartitionError`` when a node answered
        without it, ``UnavailableError`` when no node answered."""
        cached = self._topics.get(topic)
        if cached is not None and not self._too_old():
            return cached
        try:
            await self.refresh([topic])
        except UnavailableError:
            if cached is not None:
                return cached  # old but usable: partition counts rarely change
            raise
        found = self._topics.get(topic)
        if found is None:
            raise UnknownTopicOrPartitionError(
                f"topic {topic!r} does not exist (or is not visible to this client); "
                "check the name or create the topic",
                metadata={"topic": topic},
            )
        return found

    async def partition_count(self, topic: str) -> int:
        return len((await self.topic(topic)).partitions)

    def fresh_partition_count(self, topic: str) -> int | None:
        """The topic's partition count when it is cached and not too old
        (what ``partition_count`` would return without asking anyone); None
        otherwise."""
        cached = self._topics.get(topic)
        if cached is None or self._too_old():
            return None
        return len(cached.partitions)

    async def leader(self, topic: str, partition: int) -> str | None:
        """The leader's address; asks the cluster when none is cached.
        None when no node knows a leader yet (the caller backs off)."""
        tp = TopicPartition(topic, partition)
        address = self._leaders.get(tp)
        if address is not None:
            return address
        await self.refresh([topic])
        return self._leaders.get(tp)

    async def require_leader(self, topic: str, partition: int) -> str:
        """Like ``leader``, but raises ``LeaderNotAvailableError`` when no
        node knows a leader yet."""
        address = await self.leader(topic, partition)
        if address is None:
            raise LeaderNotAvailableError(f"no node knows a leader for {topic}/{partition} yet")
        return address

    # --- what callers learnt -----------------------------------------------------

    def leader_moved(self, topic: str, partition: int, address: str) -> None:
        """A ``NOT_LEADER`` answer named ``address`` as the leader."""
        if address:
            self._leaders[TopicPartition(topic, partition)] = address

    def forget_leader(self, topic: str, partition: int, address: str | None = None) -> None:
        """The leader did not answer (or said it is not the leader without a
        hint). Only forgets ``address`` if given, so a late failure from an
        old leader does not erase a newer hint."""
        tp = TopicPartition(topic, partition)
        if address is None or self._leaders.get(tp) == address:
            self._leaders.pop(tp, None)

    def node_failed(self, address: str) -> None:
        """``address`` timed out or could not be reached: forget every
        leadership cached there and ask it last for metadata for
        ``SUSPECT_S`` (module invariant)."""
        for tp in [tp for tp, leader in self._leaders.items() if leader == address]:
            del self._leaders[tp]
        self._suspects[address] = asyncio.get_running_loop().time() + SUSPECT_S
        if self._preferred == address:
            self._preferred = None

    def is_suspect(self, address: str) -> bool:
        until = self._suspects.get(address)
        if until is None:
            return False
        if asyncio.get_running_loop().time() >= until:
            del self._suspects[address]
            return False
        return True

    # --- refreshing ------------------------------------------------------------

    def _too_old(self) -> bool:
        if self._refreshed_at is None:
            return True
        return asyncio.get_running_loop().time() - self._refreshed_at > self._max_age_s

    def candidates(self) -> list[str]:
        """Addresses to ask, best first: the node that answered last, then
        the known nodes, then the bootstrap list; suspect nodes after all
        of them (module invariant)."""
        order: list[str] = []
        for address in [self._preferred, *self.nodes.values(), *self._bootstrap]:
            if address and address not in order:
                order.append(address)
        healthy = [a for a in order if not self.is_suspect(a)]
        return healthy + [a for a in order if a not in healthy]

    async def refresh(self, topics: Iterable[str] = ()) -> None:
        """Ask the cluster for nodes and for ``topics`` (plus every topic
        asked for before). One round at a time: a caller that waited for
        another's round uses it instead of starting its own."""
        wanted = set(topics)
        seen = self._generation
        async with self._lock:
            if self._generation != seen and wanted <= self._wanted:
                return  # a round finished while we waited, for these topics too
            self._wanted |= wanted
            await self._refresh_round(sorted(self._wanted))
            self._generation += 1

    async def _refresh_round(self, topics: list[str]) -> None:
        """Ask nodes in turn until one answers; keep asking further nodes
        while some partition's leader is still unknown (a node that has just
        restarted, or is cut off, may not know the leader when others do)."""
        last_error: RaftlogError | None = None
        retry_after_ms = 0  # the longest a refusing node asked for
        answered = False
        leaders: dict[TopicPartition, str] = {}
        request = metadata_pb2.GetMetadataRequest(topics=topics)
        for address in self.candidates():
            try:
                response: metadata_pb2.GetMetadataResponse = await self._pool.metadata(address).GetMetadata(
                    request, timeout=self._request_timeout_s
                )
            except grpc.aio.AioRpcError as exc:
                last_error = from_rpc_error(exc)
                if isinstance(last_error, CALLER_ERRORS):
                    raise last_error from None  # every node would say the same
                retry_after_ms = max(retry_after_ms, last_error.retry_after_ms)
                if is_silent(last_error):
                    self.node_failed(address)
                elif self._preferred == address:
                    self._preferred = None
                continue
            self._suspects.pop(address, None)
            if not answered:
                self._apply(response)
                self._preferred = address
                answered = True
            nodes = {n.node_id: n.address for n in response.nodes}
            unknown = False
            for topic in response.topics:
                for p in topic.partitions:
                    tp = TopicPartition(topic.name, p.partition)
                    leader = nodes.get(p.leader) if p.leader else None
                    if leader and tp not in leaders:
                        leaders[tp] = leader
                    elif not leader and tp not in leaders:
                        unknown = True
            if not unknown:
                break
        if not answered:
            raise UnavailableError(
                f"no node answered GetMetadata (asked {', '.join(self.candidates())}); "
                f"last error: {last_error}",
                code=last_error.code if last_error else None,
                retry_after_ms=retry_after_ms,
            )
        # Known leaders replace what we had; partitions nobody knows a
        # leader for are forgotten (they were most likely the dead node).
        for tp in [tp for tp in self._leaders if tp.topic in self._topics]:
            if tp not in leaders:
                del self._leaders[tp]
        self._leaders.update(leaders)
        self._refreshed_at = asyncio.get_running_loop().time()

    def _apply(self, response: metadata_pb2.GetMetadataResponse) -> None:
        self.nodes = {n.node_id: n.address for n in response.nodes}
        for topic in response.topics:
            self._topics[topic.name] = TopicMetadata(
                name=topic.name,
                partitions=tuple(
                    PartitionMetadata(topic.name, p.partition, p.leader, tuple(p.replicas))
                    for p in sorted(topic.partitions, key=lambda p: p.partition)
                ),
                revision=topic.revision,
            )


class ClientTransport(NamedTuple):
    """What a producer or consumer reaches partitions with."""

    pool: ChannelPool
    metadata: MetadataCache
    backoff: Backoff


def is_silent(error: RaftlogError) -> bool:
    """Whether ``error`` says the node did not answer at all (the
    connection failed, or the attempt's deadline passed), as opposed to an
    answer the server chose (its reasons, ``REPLICA_STOPPED`` say, come
    with their own names)."""
    return isinstance(error, UnavailableError | RequestTimeoutError) and error.reason in _SILENT_REASONS


_SILENT_REASONS = frozenset({"UNAVAILABLE", "DEADLINE_EXCEEDED", "STREAM_SILENT"})


def client_transport(
    bootstrap: str | Sequence[str],
    *,
    request_timeout_s: float,
    retry_backoff_ms: float,
    retry_backoff_max_ms: float,
    api_key: str | None = None,
    tenant: str | None = None,
    address_map: Mapping[str, str] | None = None,
    tls_ca: str | os.PathLike[str] | None = None,
) -> ClientTransport:
    """A fresh channel pool, a metadata cache over it (``bootstrap`` parsed
    there, once; each ``GetMetadata`` call gets ``request_timeout_s``, which
    callers pass as their per-attempt timeout) and a backoff from
    ``retry_backoff_ms`` up to ``retry_backoff_max_ms`` (never below the
    first)."""
    pool = ChannelPool(api_key=api_key, tenant=tenant, address_map=address_map, tls_ca=tls_ca)
    metadata = MetadataCache(bootstrap, pool, request_timeout_s=request_timeout_s)
    backoff = Backoff(retry_backoff_ms / 1000, max(retry_backoff_ms, retry_backoff_max_ms) / 1000)
    return ClientTransport(pool, metadata, backoff)
