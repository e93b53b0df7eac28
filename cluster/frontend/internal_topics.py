"""Internal topics: written only by the node itself.

A topic is internal when it belongs to the system tenant
(``cluster.groups.group_logs.SYSTEM_TENANT``: the consumer-offsets topic
lives there) or its name starts with ``__`` in any tenant (Kafka's
convention for internal topics; a tenant cannot create such a name, the
admin service refuses it).

Invariants:

- No public call writes an internal topic, whatever the key, operator
  included: ``Produce`` is refused with ``PERMISSION_DENIED
  INTERNAL_TOPIC``, and so are ``CreateTopic`` and ``DeleteTopic`` (an
  operator acting in the system tenant could otherwise delete the offsets
  topic from under the group coordinators). The node's own writers (the
  group coordinator, cluster/groups/group_logs.py) append through the local
  replica and never pass the front door.
- Service topics (``SERVICE_TOPICS``: the flag service's per-tenant
  topics — ``__flags``, its change log, and ``__exposures`` and
  ``__tracking``, what SDKs were served and what users did) are the one exception: in a tenant (never the
  system tenant) an *operator* key may create, write, alter and delete
  them, because the flag server (a client with the operator key, acting in
  each tenant) is their only writer and validates every change before it
  appends it. A tenant key still cannot write them: a tenant reads its
  flag history (``consume __flags``) and its exposures, but never bypasses
  that validation.
- Reads stay open to whoever may act in the tenant: only an operator key
  can name the system tenant (``raftlog-tenant: __system``), and fetching
  ``__consumer_offsets`` is how an operator debugs the groups. The records
  hold group names and offsets, nothing a key grants.
"""

from __future__ import annotations

import grpc

from cluster.frontend.grpc_errors import ServiceError, shown
from cluster.groups.group_logs import SYSTEM_TENANT
from raftlog.v1.reasons import Reason

__all__ = ["INTERNAL_PREFIX", "SERVICE_TOPICS", "check_writable", "is_internal"]

INTERNAL_PREFIX = "__"
SERVICE_TOPICS = frozenset({"__flags", "__exposures", "__tracking"})
"""Internal names an operator key may write in a tenant (module docstring)."""


def is_internal(tenant: str, topic: str) -> bool:
    """Whether ``tenant``'s ``topic`` is internal (module docstring)."""
    return tenant == SYSTEM_TENANT or topic.startswith(INTERNAL_PREFIX)


def check_writable(tenant: str, topic: str, operator: bool) -> None:
    """Raise ``PERMISSION_DENIED INTERNAL_TOPIC`` unless the caller (an
    ``operator`` key or not) may write ``tenant``'s ``topic``."""
    if not is_internal(tenant, topic):
        return
    if topic in SERVICE_TOPICS and tenant != SYSTEM_TENANT:
        if operator:
            return
        message = f"topic {shown(topic)} is written only by the flag server: use `raftlog flags` (reading it is fine)"
    else:
        message = f"topic {shown(topic)} is internal: only the cluster writes it (no API key may)"
    raise ServiceError(
        grpc.StatusCode.PERMISSION_DENIED, Reason.INTERNAL_TOPIC, message, metadata={"topic": shown(topic)}
    )
