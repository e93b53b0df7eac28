"""``AdminService.WhoAmI``: the caller's key as the front door authenticated it.

Services outside the cluster (the flag server) take a cluster API key from
their own callers and learn its tenant and id with this call, made with that
key; they never see the key table.

Invariants:

- The answer is the front door's ``Caller`` and nothing else: any key may ask
  (no operator check), an unknown or revoked key never gets here
  (``UNAUTHENTICATED`` at the door), and a tenant key naming another tenant
  in ``raftlog-tenant`` was refused there (``NOT_FOUND UNKNOWN_TENANT``).
- Answered by the node that takes the call, from its applied metadata:
  nothing changes, so nothing is forwarded.
- The key itself is never in the answer: its id only.
"""

from __future__ import annotations

from cluster.frontend.front_door import Caller
from raftlog.v1 import admin_pb2

__all__ = ["who_am_i"]


def who_am_i(caller: Caller) -> admin_pb2.WhoAmIResponse:
    return admin_pb2.WhoAmIResponse(
        tenant=caller.tenant, key_id=caller.principal.key_id, operator=caller.is_operator
    )
