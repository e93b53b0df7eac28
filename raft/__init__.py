"""The Raft consensus algorithm as a pure, deterministic state machine.

Start at ``raft.node.RaftNode``; the storage contract is in
``raft.storage``; the simulator that checks it is ``python -m raft.sim``.
This package imports nothing but the standard library and does no I/O.
"""
