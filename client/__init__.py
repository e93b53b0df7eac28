"""The Python SDK that users import. Async first, with a thin synchronous
facade; talks to any node over the public ``raftlog.v1`` gRPC API.

Modules by job:

- Producing: ``client.producer`` (``Producer``: send, flush, close, the
  per-partition sender and its retry rules) over ``client.batches``
  (``RecordMetadata``, ``ProducerStats``, batches, partition queues, the
  byte budget), ``client.producer_ids`` (``ProducerIds``: producer ids and
  sequence numbers) and ``client.partitioner`` (``DefaultPartitioner``,
  ``RoundRobinPartitioner``, ``Partitioner``, ``murmur2``,
  ``key_partition``).
- Consuming: ``client.consumer`` (the ``Consumer`` façade: ``assign``,
  ``seek*``, ``poll``, ``async for``, ``position``, ``commit``,
  ``committed``, ``subscribe``, ``close``) over ``client.fetcher``
  (``ConsumerRecord``, ``FetchMode``, ``OffsetReset``; per-partition fetch
  state, long-poll and stream fetchers), ``client.offset_lookup``
  (``ListOffsets``, timestamps) and ``client.group_binding``
  (``RebalanceCallback``; the consumer's side of a group), which drives
  ``client.group_member`` (the membership protocol, ``GroupRpc``).
- Administering: ``client.admin`` (``Admin``: tenants, API keys, topics,
  nodes, cluster status, a look at consumer groups; import it from its
  module).
- Blocking use: ``client.sync`` (``SyncProducer``, ``SyncConsumer``).
- Reaching nodes: ``client.leader_calls`` (the one call path every request
  takes: locate, call, map the error, wait ``max(backoff, retry_after)``,
  follow redirects, per-attempt timeouts), ``client.metadata``
  (``TopicPartition``, ``MetadataCache``, ``ChannelPool`` with keepalive
  pings, ``Backoff``) and ``client.auth`` (the API key and tenant headers).
- Errors: ``client.errors`` (``RaftlogError`` and its subclasses, see that
  module for the tree, ``from_rpc_error``); ``client.rpc_status`` reads a
  failed call's status and ``ErrorInfo`` for it.

May import: the generated protos (``raftlog``), stdlib and third-party
libraries only. Never ``cluster``, ``partitions``, ``raft`` or any other
project package: users install the client without the server (DESIGN.md,
checked by tests/test_layout.py).
"""

from client.consumer import Consumer, ConsumerRecord, FetchMode, OffsetReset, RebalanceCallback
from client.errors import (
    AlreadyExistsError,
    AuthenticationError,
    AuthorizationError,
    BackpressureError,
    ClientClosedError,
    DeliveryTimeoutError,
    DuplicateSequenceError,
    FencedMemberError,
    GroupFullError,
    GroupMembershipError,
    GroupNotFoundError,
    InvalidBatchError,
    InvalidRequestError,
    LeaderNotAvailableError,
    NotCoordinatorError,
    NotFoundError,
    NotLeaderError,
    OffsetOutOfRangeError,
    OutcomeUnknownError,
    OutOfOrderSequenceError,
    PreconditionFailedError,
    ProducerFencedError,
    ProducerStateError,
    QuotaExceededError,
    RaftlogError,
    RecordTooLargeError,
    RequestTimeoutError,
    RetriableError,
    ServerError,
    StaleMemberEpochError,
    StorageFullError,
    UnavailableError,
    UnknownMemberIdError,
    UnknownProducerIdError,
    UnknownTenantError,
    UnknownTopicOrPartitionError,
    from_rpc_error,
)
from client.metadata import ChannelPool, MetadataCache, TopicPartition
from client.partitioner import DefaultPartitioner, Partitioner, RoundRobinPartitioner, key_partition, murmur2
from client.producer import Producer, ProducerStats, Record, RecordMetadata, RecordRun
from client.sync import SyncConsumer, SyncProducer

__all__ = [
    "AlreadyExistsError",
    "AuthenticationError",
    "AuthorizationError",
    "BackpressureError",
    "ChannelPool",
    "ClientClosedError",
    "Consumer",
    "ConsumerRecord",
    "DefaultPartitioner",
    "DeliveryTimeoutError",
    "DuplicateSequenceError",
    "FencedMemberError",
    "FetchMode",
    "GroupFullError",
    "GroupMembershipError",
    "GroupNotFoundError",
    "InvalidBatchError",
    "InvalidRequestError",
    "LeaderNotAvailableError",
    "MetadataCache",
    "NotCoordinatorError",
    "NotFoundError",
    "NotLeaderError",
    "OffsetOutOfRangeError",
    "OffsetReset",
    "OutOfOrderSequenceError",
    "OutcomeUnknownError",
    "Partitioner",
    "PreconditionFailedError",
    "Producer",
    "ProducerFencedError",
    "ProducerStateError",
    "ProducerStats",
    "QuotaExceededError",
    "RaftlogError",
    "RebalanceCallback",
    "Record",
    "RecordMetadata",
    "RecordRun",
    "RecordTooLargeError",
    "RequestTimeoutError",
    "RetriableError",
    "RoundRobinPartitioner",
    "ServerError",
    "StaleMemberEpochError",
    "StorageFullError",
    "SyncConsumer",
    "SyncProducer",
    "TopicPartition",
    "UnavailableError",
    "UnknownMemberIdError",
    "UnknownProducerIdError",
    "UnknownTenantError",
    "UnknownTopicOrPartitionError",
    "from_rpc_error",
    "key_partition",
    "murmur2",
]
