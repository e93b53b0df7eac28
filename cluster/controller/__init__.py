"""The metadata controller's state machine: what Raft group 0 stores.

The controller is Raft group 0 on the controller-eligible nodes. Its log
holds metadata commands; every node applies them, in log order, to the same
pure ``ControllerState`` and asks it questions. Nothing here does I/O, reads
a clock or draws randomness at apply time (the asyncio replica, the admin
gRPC service and the per-node reconciler live elsewhere and drive this).

One job per module:

- ``commands``: the command dataclasses and their versioned encoding;
- ``command_header``: the ``kind | version`` header every command starts
  with, the kind numbers and the versions this code reads;
- ``results``: what applying a command returns (``RejectReason``);
- ``model``: the records of the state and the rules for names and fields
  (key scopes: ``KeyScope``, ``check_key_scope``, ``key_expired``);
- ``quotas``: ``QuotaLimits``, the built-in defaults, overlaying them;
- ``state``: ``ControllerState`` — apply, snapshot/restore, queries;
- ``tenancy``: the tenant, key and quota half of ``ControllerState``;
- ``snapshot``: the versioned, checksummed snapshot layout;
- ``field_codecs``: field encodings commands and the snapshot share;
- ``api_keys``: issuing keys (proposer side, random) and checking them
  (HMAC-SHA256 with a per-key salt, constant-time compare);
- ``placement``: where replicas go and the moves that repair, drain or
  rebalance nodes (used by the proposer, never at apply time).

How a driver uses it::

    state = ControllerState()                  # or ControllerState.restore(data, index=i)
    result = state.apply(entry.index, entry.data)   # NORMAL entries with data
    state.apply_noop(entry.index)                   # every other entry
    data = state.snapshot()                    # bytes at state.applied_index

    # proposing (on the controller leader), e.g. a topic:
    assignment = place_partitions(state, partitions=6, replication_factor=3)
    propose(encode_command(CreateTopic("acme", "events", 6, 3, None, None, assignment)))

``apply`` raises ``UnsupportedCommand`` for an entry written by a newer
version (stop the replica: skipping it would diverge from upgraded peers).
"""

from __future__ import annotations

from cluster.controller.api_keys import IssuedApiKey, issue_api_key
from cluster.controller.commands import (
    AddLearner,
    AlterTopicConfig,
    Command,
    CreateApiKey,
    CreateTenant,
    CreateTopic,
    DecommissionNode,
    DeleteTenant,
    DeleteTopic,
    MalformedCommand,
    PromoteLearner,
    RegisterNode,
    RemoveNode,
    RemoveReplica,
    ReplicaChange,
    RevokeApiKey,
    SetApiKeyExpiry,
    SetNodeLiveness,
    SetQuota,
    UnsupportedCommand,
    decode_command,
    encode_command,
)
from cluster.controller.model import (
    ADMIN_SCOPE,
    OPERATOR_SCOPE,
    ROLES,
    ApiKeyInfo,
    Assignment,
    KeyScope,
    Node,
    Principal,
    Tenant,
    Topic,
    TopicConfig,
    check_key_scope,
    key_expired,
)
from cluster.controller.placement import (
    Move,
    PlacementError,
    Plan,
    place_partitions,
    plan_decommission,
    rebalance_plan,
    replacements_for_dead_node,
)
from cluster.controller.quotas import BUILT_IN_DEFAULTS, QUOTA_FIELDS, QuotaLimits, check_quota, overlay
from cluster.controller.results import (
    Applied,
    ApplyResult,
    AssignmentChanged,
    Rejected,
    RejectReason,
    TopicCreated,
)
from cluster.controller.snapshot import CorruptSnapshot
from cluster.controller.state import ControllerState, InconsistentState
from cluster.primitives.pagination import InvalidPageSize, InvalidPageToken, Page, PageError

__all__ = [
    "ADMIN_SCOPE",
    "BUILT_IN_DEFAULTS",
    "OPERATOR_SCOPE",
    "QUOTA_FIELDS",
    "ROLES",
    "AddLearner",
    "AlterTopicConfig",
    "ApiKeyInfo",
    "Applied",
    "ApplyResult",
    "Assignment",
    "AssignmentChanged",
    "Command",
    "ControllerState",
    "CorruptSnapshot",
    "CreateApiKey",
    "CreateTenant",
    "CreateTopic",
    "DecommissionNode",
    "DeleteTenant",
    "DeleteTopic",
    "InconsistentState",
    "InvalidPageSize",
    "InvalidPageToken",
    "IssuedApiKey",
    "KeyScope",
    "MalformedCommand",
    "Move",
    "Node",
    "Page",
    "PageError",
    "PlacementError",
    "Plan",
    "Principal",
    "PromoteLearner",
    "QuotaLimits",
    "RegisterNode",
    "RejectReason",
    "Rejected",
    "RemoveNode",
    "RemoveReplica",
    "ReplicaChange",
    "RevokeApiKey",
    "SetApiKeyExpiry",
    "SetNodeLiveness",
    "SetQuota",
    "Tenant",
    "Topic",
    "TopicConfig",
    "TopicCreated",
    "UnsupportedCommand",
    "check_key_scope",
    "check_quota",
    "decode_command",
    "encode_command",
    "issue_api_key",
    "key_expired",
    "overlay",
    "place_partitions",
    "plan_decommission",
    "rebalance_plan",
    "replacements_for_dead_node",
]
