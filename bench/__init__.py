"""The benchmark suite behind ``make bench`` / ``make bench-quick``
(``python -m bench``; bench/README.md says what each figure means).

Modules, one job each:

- ``__main__``: the run: profiles (full, quick, smoke), steps in order, the
  JSON report and Markdown table written under ``bench/out/``;
- ``references``, ``grpc_echo``: this machine's limits (fsync/s, synced
  RocksDB MB/s, loopback gRPC echo between two processes);
- ``raft_core``: the Raft core alone, in one process, no I/O;
- ``cluster_figures``: produce, latency, end-to-end and consume figures,
  through the SDK, on a 3-node ``LocalCluster``;
- ``failover``: leader SIGKILL → first acknowledged write;
- ``density``: CPU and memory of idle partitions;
- ``report``: assembling the JSON, targets met or missed, the table;
- ``cluster_access``: starting clusters, the nodes' stats, and the one
  place the benchmark's credentials (API key) are chosen;
- ``percentiles``: latency summaries;
- ``node_runtime``: a diagnostic of the servers alone (raw Produce calls of
  prebuilt batches, no SDK), run by hand.

May import: ``client``, ``raft`` (the core benchmark), the generated protos
(``raftlog``), plus stdlib and third-party libraries. The cluster under
test runs as separate processes (DESIGN.md, checked by
tests/test_layout.py).
"""
