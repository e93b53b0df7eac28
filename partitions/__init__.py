"""One partition of a topic, replicated by its own Raft group.

What will live here: the record-batch format (header with base offset, count,
CRC32C, timestamps, producer id/epoch/sequence), the partition state machine
(offsets, idempotent-producer dedup, retention, compaction), the RocksDB
(``rocksdict``) implementation of ``raft.storage.Storage`` with the
group-commit writer, and the asyncio replica driver around ``raft.RaftNode``.

The storage, as built so far (one job per module):

- ``keys`` / ``codec``: the RocksDB key layout (column families, big-endian
  ``(group, index)`` keys) and the value encodings;
- ``node_store.NodeStore``: the node's one RocksDB, its options, reads, and
  write sets turned into one ``WriteBatch``;
- ``raft_storage.GroupStorage``: ``raft.storage.Storage`` for one group, with
  cached state and two-phase writes (``prepare`` → write → ``apply_prepared``);
- ``group_commit.GroupCommitWriter``: the node's single writer thread, one
  synced batch per cycle for every replica;
- ``write_set``, ``term_index``, ``storage_errors``: the pieces they share.

May import: ``raft`` and the generated protos (``raftlog``), plus stdlib and
third-party libraries. Never ``cluster``, ``client``, ``chaos``, ``bench`` or
``flags`` (DESIGN.md, checked by tests/test_layout.py). Type-checked with
mypy in strict mode.
"""
