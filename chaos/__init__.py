"""Failover drills against real node processes.

What will live here: the launcher (starts and kills local node processes),
nemeses (crash, pause, partition), the workload, the checker (no lost or
duplicated acknowledged records) and the report behind ``make chaos``.

May import: ``client`` and the generated protos (``raftlog``), plus stdlib and
third-party libraries. Nodes are driven as separate processes, never imported
(DESIGN.md, checked by tests/test_layout.py).
"""
