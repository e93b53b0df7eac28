"""The Python SDK that users import. Async first, with a thin synchronous
facade; talks to any node over the public ``raftlog.v1`` gRPC API.

Public names:

- ``Producer`` (``client.producer``): batched, idempotent, acks=all writes;
  ``send`` returns a future of ``RecordMetadata``; ``flush``, ``close``;
  ``ProducerStats``.
- ``Consumer`` (``client.consumer``): ``assign``, ``seek``,
  ``seek_to_beginning``/``_end``/``_timestamp``, ``poll``, ``async for``,
  ``position``, ``close``; yields ``ConsumerRecord``; ``OffsetReset``;
  ``FetchMode`` (long poll, or one server stream per partition).
  Consumer groups (``group_id=``): ``subscribe``, ``unsubscribe``,
  ``commit``, ``committed``; ``RebalanceCallback`` (the membership itself
  is ``client.group_member``).
- ``SyncProducer``, ``SyncConsumer`` (``client.sync``): blocking facades.
- ``TopicPartition``, ``MetadataCache``, ``ChannelPool``
  (``client.metadata``): routing to partition leaders.
- ``DefaultPartitioner``, ``RoundRobinPartitioner``, ``Partitioner``,
  ``murmur2``, ``key_partition`` (``client.partitioner``).
- Errors (``client.errors``): ``RaftlogError`` and its subclasses (see that
  module for the tree), ``from_rpc_error``.
- ``Admin`` (``client.admin``): tenants, API keys, topics, nodes, cluster
  status, a look at consumer groups (import it from its module).

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
    RaftlogError,
    RecordTooLargeError,
    RequestTimeoutError,
    RetriableError,
    ServerError,
    StaleMemberEpochError,
    UnavailableError,
    UnknownMemberIdError,
    UnknownProducerIdError,
    UnknownTenantError,
    UnknownTopicOrPartitionError,
    from_rpc_error,
)
from client.metadata import ChannelPool, MetadataCache, TopicPartition
from client.partitioner import DefaultPartitioner, Partitioner, RoundRobinPartitioner, key_partition, murmur2
from client.producer import Producer, ProducerStats, RecordMetadata
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
    "RaftlogError",
    "RebalanceCallback",
    "RecordMetadata",
    "RecordTooLargeError",
    "RequestTimeoutError",
    "RetriableError",
    "RoundRobinPartitioner",
    "ServerError",
    "StaleMemberEpochError",
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
