"""Failover drills against real node processes (``python -m chaos``; see
chaos/README.md).

- ``drill``: one drill, start to verdict.
- ``cluster``: node processes behind proxies, and the observer.
- ``proxy``: the fault-injecting TCP proxy on every directed link.
- ``nemesis``: the faults (process and network).
- ``schedule``: the seeded order of faults.
- ``workload``: producers and consumers, recording every attempt and read.
- ``history``: what happened, and its JSON-lines file.
- ``replicas``: every replica's log, read offline after the drill.
- ``checker``: lost, duplicated, unexpected, reordered, divergent.
- ``availability``: failover times, gaps, throughput.
- ``report``: the JSON report and the human summary.

May import: ``client`` and the generated protos (``raftlog``), plus stdlib and
third-party libraries. Nodes are driven as separate processes, never imported
(DESIGN.md, checked by tests/test_layout.py).
"""
