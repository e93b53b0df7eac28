"""Test tools as first-class code: real raftlog processes on loopback, for
tests, drills (``chaos``) and benchmarks (``bench``).

- ``local_cluster``: ``LocalCluster`` and ``TopicSpec``: writes a cluster
  file, starts and stops ``raftlog serve`` node processes, kills, pauses
  and restarts them.
- ``ack_gaps``: a producer workload that records when each partition's
  writes were acknowledged, the longest gap between acknowledgements, and
  a read-back check that nothing acknowledged was lost, duplicated or
  reordered (the pause drill).

May import: ``client`` and the generated protos (``raftlog``). It starts
the server as a process and never imports it (DESIGN.md, checked by
tests/test_layout.py).
"""
