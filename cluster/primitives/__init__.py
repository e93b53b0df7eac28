"""Deterministic building blocks shared by the controller, the consumer
groups and the front end (pure: no I/O, no clock).

- ``wire``: the binary primitives (big-endian, one encoding per value) of
  controller commands, snapshots and offset records;
- ``pagination``: keyset pagination with page tokens bound to their listing.
"""
