"""One partition of a topic, replicated by its own Raft group.

Modules, one job each:

- record batches: ``raftlog.v1.record_batch`` (shared with the SDK, so it
  lives under proto/); ``commands`` wraps a batch and the leader's append
  time into a Raft entry;
- the partition state machine: ``state_machine`` (offsets, high watermark,
  retention cuts, reads), ``producer_state`` (idempotent producers),
  ``offset_index``, ``partition_snapshot``, ``results``;
- storage: ``keys`` / ``codec`` (key layout, value encodings),
  ``node_store.NodeStore`` (the node's one RocksDB), ``raft_storage.GroupStorage``
  (``raft.storage.Storage`` for one group, two-phase writes),
  ``entry_cache``, ``group_commit.GroupCommitWriter`` (one synced batch per
  cycle for every replica), ``write_set``, ``term_index``, ``storage_errors``,
  ``owner_only`` (data directories 0700 and files 0600 whatever the umask);
- the driver: ``raft_replica.RaftReplica`` (the Ready loop of any group
  member: one owner task; the controller reuses it), ``hibernation`` (when
  a member stops ticking),
  ``replica.Replica`` (a partition's replica on it: produce, read, long
  poll, retention), ``replica_host.ReplicaHost`` (every group member of a
  node, the tick clock, the retention timer), ``replica_errors``.

May import: ``raft`` and the generated protos (``raftlog``), plus stdlib and
third-party libraries. Never ``cluster``, ``client``, ``chaos``, ``bench`` or
``flags`` (DESIGN.md, checked by tests/test_layout.py). Type-checked with
mypy in strict mode.
"""
