"""The deterministic Raft simulator (``python -m raft.sim``).

A seeded event loop drives real ``RaftNode``s over a fake network and fake
disks, injects faults, and checks Raft's safety properties after every step
and liveness after healing. ``run_seed`` is the entry point for tests and
benchmarks; see raft/sim/runner.py.
"""

from raft.sim.checker import Checker, Violation
from raft.sim.runner import DEFAULT_STEPS, PROFILES, SeedResult, run_profiles, run_seed

__all__ = ["DEFAULT_STEPS", "PROFILES", "Checker", "SeedResult", "Violation", "run_profiles", "run_seed"]
