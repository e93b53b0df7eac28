"""One partition of a topic, replicated by its own Raft group.

What will live here: the record-batch format (header with base offset, count,
CRC32C, timestamps, producer id/epoch/sequence), the partition state machine
(offsets, idempotent-producer dedup, retention, compaction), the RocksDB
(``rocksdict``) implementation of ``raft.storage.Storage`` with the
group-commit writer, and the asyncio replica driver around ``raft.RaftNode``.

May import: ``raft`` and the generated protos (``raftlog``), plus stdlib and
third-party libraries. Never ``cluster``, ``client``, ``chaos``, ``bench`` or
``flags`` (DESIGN.md, checked by tests/test_layout.py). Type-checked with
mypy in strict mode.
"""
