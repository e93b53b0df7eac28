"""Test tools for the controller state machine: a log that numbers entries,
cluster builders, and hypothesis strategies for commands."""

from __future__ import annotations

from collections.abc import Sequence

from hypothesis import strategies as st

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
    PromoteLearner,
    RegisterNode,
    RemoveNode,
    RemoveReplica,
    RevokeApiKey,
    SetApiKeyExpiry,
    SetNodeLiveness,
    SetQuota,
    encode_command,
)
from cluster.controller.model import CLEANUP_POLICIES, ROLES, KeyScope, TopicConfig, default_scope
from cluster.controller.placement import Plan, place_partitions
from cluster.controller.quotas import QuotaLimits
from cluster.controller.results import ApplyResult, Rejected
from cluster.controller.state import ControllerState


class Log:
    """Applies commands to a ``ControllerState`` at consecutive indexes,
    checking the invariants after each one."""

    def __init__(self, state: ControllerState | None = None) -> None:
        self.state = state if state is not None else ControllerState()

    @property
    def next_index(self) -> int:
        return self.state.applied_index + 1

    def apply(self, command: Command) -> ApplyResult:
        result = self.state.apply(self.next_index, encode_command(command))
        self.state.check_invariants()
        return result

    def ok(self, command: Command) -> ApplyResult:
        result = self.apply(command)
        assert not isinstance(result, Rejected), f"{command} was rejected: {result}"
        return result

    def noop(self) -> None:
        self.state.apply_noop(self.next_index)

    def run(self, plan: Plan) -> None:
        """Apply every step of every move, move by move."""
        for move in plan.moves:
            for step in move.steps:
                self.ok(step)


def address(node_id: int) -> str:
    return f"10.0.0.{node_id}:7000"


def cluster(nodes: int, zones: Sequence[str] = ("",), tenants: Sequence[str] = ()) -> Log:
    """Nodes ``1..nodes``, zones dealt round-robin, and the given tenants."""
    log = Log()
    for node_id in range(1, nodes + 1):
        log.ok(RegisterNode(node_id, address(node_id), zones[(node_id - 1) % len(zones)], node_id <= 3))
    for tenant in tenants:
        log.ok(CreateTenant(tenant))
    return log


def create_topic(
    log: Log,
    tenant: str,
    name: str,
    partitions: int = 3,
    replication_factor: int = 1,
    retention_ms: int | None = None,
    retention_bytes: int | None = None,
    **compaction: object,
) -> ApplyResult:
    """``compaction``: ``cleanup_policy`` and the other compaction settings."""
    assignment = place_partitions(log.state, partitions, replication_factor)
    return log.ok(
        CreateTopic(
            tenant,
            name,
            partitions,
            replication_factor,
            retention_ms,
            retention_bytes,
            assignment,
            **compaction,  # type: ignore[arg-type]
        )
    )


# --- strategies ---------------------------------------------------------------------

any_text = st.text(max_size=20)
ids = st.integers(min_value=0, max_value=2**64 - 1)
small_ids = st.integers(min_value=0, max_value=8)
opt_i64 = st.none() | st.integers(min_value=-(2**63), max_value=2**63 - 1)
node_lists = st.lists(small_ids, max_size=5).map(tuple)
policies = st.sampled_from(CLEANUP_POLICIES) | any_text
i64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)
topic_configs = st.builds(TopicConfig, opt_i64, opt_i64, policies, i64, i64, opt_i64)
prefix_lists = st.lists(st.sampled_from(["", "a", "orders.", "b-"]) | any_text, max_size=3).map(tuple)
key_scopes = st.builds(KeyScope, st.sampled_from(ROLES) | any_text, prefix_lists, prefix_lists, prefix_lists)
quota_limits = st.builds(QuotaLimits, *[opt_i64] * 8)


def _api_key(
    key_id: str, tenant: str | None, salt: bytes, digest: bytes, scope: KeyScope | None, expires_at_ms: int
) -> CreateApiKey:
    """A key command; ``scope`` None: its tenant's default (a version 1 key)."""
    return CreateApiKey(
        key_id, tenant, salt, digest, default_scope(tenant) if scope is None else scope, expires_at_ms
    )


def commands() -> st.SearchStrategy[Command]:
    """Any command with field values that fit their encoding."""
    texts, numbers = any_text, ids
    return st.one_of(
        st.builds(CreateTenant, texts),
        st.builds(DeleteTenant, texts),
        st.builds(
            _api_key,
            texts,
            st.none() | texts,
            st.binary(max_size=20),
            st.binary(max_size=40),
            st.none() | key_scopes,
            st.just(0) | i64,
        ),
        st.builds(SetApiKeyExpiry, texts, i64),
        st.builds(SetQuota, texts, quota_limits),
        st.builds(RevokeApiKey, texts),
        st.builds(
            CreateTopic,
            texts,
            texts,
            st.integers(0, 2**32 - 1),
            st.integers(0, 2**16 - 1),
            opt_i64,
            opt_i64,
            st.lists(node_lists, max_size=4).map(tuple),
            policies,
            i64,
            i64,
            opt_i64,
        ),
        st.builds(AlterTopicConfig, texts, texts, numbers, numbers, topic_configs),
        st.builds(DeleteTopic, texts, texts),
        st.builds(RegisterNode, numbers, texts, texts, st.booleans()),
        st.builds(SetNodeLiveness, numbers, st.booleans()),
        st.builds(DecommissionNode, numbers),
        st.builds(RemoveNode, numbers),
        st.builds(AddLearner, numbers, numbers, numbers),
        st.builds(PromoteLearner, numbers, numbers, numbers, st.integers(0, 2**16 - 1)),
        st.builds(RemoveReplica, numbers, numbers, numbers),
    )
