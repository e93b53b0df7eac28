"""What a key may do: the method table and the topic and group checks.

Three roles (``cluster.controller.KeyScope.role``): an *operator* key
(no tenant) may call everything; a tenant *admin* key everything in its
tenant except the operator methods; a *client* key only the data path —
produce, fetch, streams, offsets, producer ids, metadata, consumer groups
and ``WhoAmI`` — and only on topics and groups its prefixes cover
(``KeyScope.may_produce`` / ``may_consume`` / ``may_use_group``).

``METHOD_ACCESS`` names every public method by its gRPC path with the
least role that may call it: the one table of who may call what.
``OPERATOR_METHODS`` is derived from it (its ``Access.OPERATOR`` rows;
``front_door`` re-exports it). The front door (front_door.py) asks
``check_method`` once per call, before the handler runs: a tenant key on an
``Access.OPERATOR`` method is refused ``OPERATOR_KEY_REQUIRED``, a client
key on any other method that is not ``Access.CLIENT`` ``KEY_SCOPE``. A test
checks that every method of every public service has a row, so a new
method cannot slip through unlisted; a method missing from the table is
closed to client keys.

The handlers then check names (``check_topic``, ``check_group``):

- A client key naming a topic of its own tenant that its prefixes do not
  cover gets ``PERMISSION_DENIED KEY_SCOPE``, naming the topic and the
  prefixes it has.
- A name that does not exist in the caller's tenant — never created, or
  another tenant's — gets the handler's usual ``NOT_FOUND``, whatever the
  prefixes: ``check_topic`` lets it through to the lookup that refuses it.
  So another tenant's names leak nothing (the same answer as a name nobody
  has). Within its own tenant a client key can tell an existing topic
  outside its prefixes (``PERMISSION_DENIED``) from a missing one
  (``NOT_FOUND``), as the issue asks: it learns that the name exists,
  nothing of its data or settings.
- Groups are named by their users and created by joining, so group
  checks go by the name alone (``KEY_SCOPE`` outside ``group_prefixes``),
  as do the topics of a group subscription or commit: neither depends on
  what exists.
- Listings (metadata, groups) show only what the key may use.

Invariants: every check is a pure function of the principal, the name and
(for topics) whether the name exists, decided with no ``await`` between the
check and the lookup that uses it, so metadata cannot change in between.
Operator and admin keys pass every name check (their scope says so).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

import grpc

from cluster.controller import Principal
from cluster.frontend.grpc_errors import ServiceError, shown
from raftlog.v1.reasons import Reason

__all__ = [
    "METHOD_ACCESS",
    "OPERATOR_METHODS",
    "Access",
    "TopicAction",
    "check_group",
    "check_may_produce_somewhere",
    "check_method",
    "check_topic",
    "check_topics_by_name",
    "may_use_topic",
    "operator_required",
]


class Access(enum.Enum):
    """The least role that may call a method."""

    OPERATOR = "operator"
    """Operator keys only (``OPERATOR_METHODS``)."""
    ADMIN = "admin"
    """Operator and tenant admin keys."""
    CLIENT = "client"
    """Every key; a client key on the topics and groups its prefixes cover."""


_L, _M, _A, _G = (
    "/raftlog.v1.LogService/",
    "/raftlog.v1.MetadataService/",
    "/raftlog.v1.AdminService/",
    "/raftlog.v1.GroupService/",
)
_O, _T, _C = Access.OPERATOR, Access.ADMIN, Access.CLIENT

METHOD_ACCESS: Mapping[str, Access] = {
    # The data path: a client key within its produce / consume prefixes.
    _L + "Produce": _C,
    _L + "Fetch": _C,
    _L + "StreamFetch": _C,
    _L + "ListOffsets": _C,
    _L + "InitProducer": _C,  # needs some produce prefix
    _M + "GetMetadata": _C,  # lists only the topics the key may use
    # Consumer groups: group prefixes, and consume rights on the topics.
    _G + "JoinGroup": _C,
    _G + "Heartbeat": _C,
    _G + "LeaveGroup": _C,
    _G + "CommitOffsets": _C,
    _G + "FetchCommittedOffsets": _C,
    _G + "ListGroups": _C,
    _G + "DescribeGroup": _C,
    _A + "WhoAmI": _C,
    # Topic administration: a tenant admin key in its tenant.
    _A + "CreateTopic": _T,
    _A + "DeleteTopic": _T,
    _A + "ListTopics": _T,
    _A + "DescribeTopic": _T,
    _A + "AlterTopicConfig": _T,
    _A + "CompactTopic": _T,
    # Keys: a tenant admin key manages its own tenant's keys.
    _A + "CreateApiKey": _T,
    _A + "RevokeApiKey": _T,
    _A + "ListApiKeys": _T,
    _A + "RotateApiKey": _T,
    _A + "DescribeTenant": _T,  # its own tenant only (admin service)
    # The cluster: operator keys.
    _A + "CreateTenant": _O,
    _A + "DeleteTenant": _O,
    _A + "ListTenants": _O,
    _A + "SetTenantQuota": _O,
    _A + "ListNodes": _O,
    _A + "DecommissionNode": _O,
    _A + "GetClusterStatus": _O,
    _A + "GetNodeStats": _O,
}
"""Every public method (gRPC path) -> the least role that may call it."""

OPERATOR_METHODS: frozenset[str] = frozenset(m for m, access in METHOD_ACCESS.items() if access is _O)
"""Methods (gRPC paths) that need an operator key: a tenant key is refused
at the door, before the handler (or a forward to the controller leader)."""


class TopicAction(enum.Enum):
    PRODUCE = "produce to"
    CONSUME = "consume from"
    USE = "use"
    """Produce or consume: what metadata about a topic needs."""


def _is_client(principal: Principal) -> bool:
    return not principal.is_operator and principal.scope.role == "client"


def _refused(principal: Principal, what: str, prefixes: Iterable[str], **metadata: str) -> ServiceError:
    listed = ", ".join(shown(p) if p else "'' (every name)" for p in prefixes) or "none"
    return ServiceError(
        grpc.StatusCode.PERMISSION_DENIED,
        Reason.KEY_SCOPE,
        f"API key {principal.key_id} may not {what}: its prefixes for this are {listed}; "
        "use a key whose scope covers it (a tenant admin key creates one with "
        "`raftlog key create --role client --produce PREFIX --consume PREFIX --group PREFIX`)",
        metadata={"key_id": principal.key_id, **metadata},
    )


def operator_required() -> ServiceError:
    """The refusal of a tenant key where only an operator key will do."""
    return ServiceError(
        grpc.StatusCode.PERMISSION_DENIED,
        Reason.OPERATOR_KEY_REQUIRED,
        "this call needs an operator key; tenant keys manage only their own topics",
    )


def check_method(method: str, principal: Principal) -> None:
    """Refuse a tenant key on an operator method (``PERMISSION_DENIED
    OPERATOR_KEY_REQUIRED``) and a client key on any other method that is
    not ``Access.CLIENT`` (``PERMISSION_DENIED KEY_SCOPE``): the front
    door's one check of the method."""
    if principal.is_operator:
        return
    access = METHOD_ACCESS.get(method)
    if access is Access.OPERATOR:
        raise operator_required()
    if _is_client(principal) and access is not Access.CLIENT:
        name = method.rsplit("/", 1)[-1]
        raise ServiceError(
            grpc.StatusCode.PERMISSION_DENIED,
            Reason.KEY_SCOPE,
            f"API key {principal.key_id} is a client key: it may produce, consume and use consumer "
            f"groups, not call {name}; use a tenant admin key",
            metadata={"key_id": principal.key_id, "method": name},
        )


def _may(principal: Principal, topic: str, action: TopicAction) -> bool:
    scope = principal.scope
    if action is TopicAction.PRODUCE:
        return scope.may_produce(topic)
    if action is TopicAction.CONSUME:
        return scope.may_consume(topic)
    return scope.may_produce(topic) or scope.may_consume(topic)


def may_use_topic(principal: Principal, topic: str) -> bool:
    """Whether metadata about ``topic`` is shown to this key."""
    return principal.is_operator or _may(principal, topic, TopicAction.USE)


def _topic_prefixes(principal: Principal, action: TopicAction) -> tuple[str, ...]:
    scope = principal.scope
    if action is TopicAction.PRODUCE:
        return scope.produce_prefixes
    if action is TopicAction.CONSUME:
        return scope.consume_prefixes
    return tuple(dict.fromkeys(scope.produce_prefixes + scope.consume_prefixes))


def check_topic(principal: Principal, topic: str, action: TopicAction, *, exists: bool) -> None:
    """Refuse ``PERMISSION_DENIED KEY_SCOPE`` when the key may not
    ``action`` its tenant's existing ``topic``. A topic that does not exist
    passes: the caller's own lookup answers ``NOT_FOUND`` for it, as for any
    missing or foreign name (module docstring). No ``await`` between this
    and that lookup."""
    if principal.is_operator or not exists or _may(principal, topic, action):
        return
    raise _refused(
        principal,
        f"{action.value} topic {shown(topic)}",
        _topic_prefixes(principal, action),
        topic=shown(topic),
    )


def check_topics_by_name(principal: Principal, topics: Iterable[str], action: TopicAction) -> None:
    """``check_topic`` by the names alone (a subscription or a commit names
    topics that may not exist yet: the answer must not depend on it)."""
    if principal.is_operator:
        return
    for topic in topics:
        if not _may(principal, topic, action):
            raise _refused(
                principal,
                f"{action.value} topic {shown(topic)}",
                _topic_prefixes(principal, action),
                topic=shown(topic),
            )


def check_group(principal: Principal, group: str) -> None:
    """Refuse ``PERMISSION_DENIED KEY_SCOPE`` for a group outside the key's
    group prefixes (by name: joining creates a group)."""
    if principal.is_operator or principal.scope.may_use_group(group):
        return
    raise _refused(
        principal, f"use consumer group {shown(group)}", principal.scope.group_prefixes, group=shown(group)
    )


def check_may_produce_somewhere(principal: Principal) -> None:
    """``InitProducer`` names no topic: a client key needs some produce prefix."""
    if _is_client(principal) and not principal.scope.produce_prefixes:
        raise _refused(principal, "produce (InitProducer)", ())
