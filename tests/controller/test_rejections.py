"""Every rejection reason, each from a command that must be refused, and a
refused command changes nothing: the state after it has the same snapshot
bytes as the state after a no-op entry at the same index."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest

from cluster.controller.api_keys import issue_api_key
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
from cluster.controller.model import (
    MAX_CONFIG_MS,
    MAX_PREFIXES,
    MAX_TENANT_PARTITIONS,
    Assignment,
    KeyScope,
    default_scope,
)
from cluster.controller.quotas import QuotaLimits
from cluster.controller.results import Rejected, RejectReason
from cluster.controller.state import ControllerState
from tests.controller.harness import Log, address, cluster, create_topic

R = RejectReason
KEY = issue_api_key("acme")


def base() -> Log:
    """Nodes 1-3 live, 4 dead, 5 decommissioning; tenants acme (topic
    events: 2 partitions of 2 replicas, an API key) and beta (empty); topic
    single (1 partition, 1 replica); group 1 has a learner."""
    log = cluster(5, tenants=["acme", "beta"])
    log.ok(SetNodeLiveness(4, False))
    log.ok(DecommissionNode(5))
    create_topic(log, "acme", "events", partitions=2, replication_factor=2)
    create_topic(log, "acme", "single", partitions=1, replication_factor=1)
    log.ok(KEY.command)
    g1 = group(log, 1)
    log.ok(AddLearner(1, outsider(g1), g1.revision))
    return log


def group(log: Log, group_id: int) -> Assignment:
    a = log.state.assignment(group_id)
    assert a is not None
    return a


def outsider(a: Assignment) -> int:
    """A live node (1-3) that is not in the group."""
    return next(n for n in (1, 2, 3) if n not in a.members)


def topic_command(**changes: object) -> CreateTopic:
    fields: dict[str, object] = {
        "tenant": "acme",
        "name": "new",
        "partitions": 2,
        "replication_factor": 2,
        "retention_ms": None,
        "retention_bytes": None,
        "assignment": ((1, 2), (2, 3)),
    }
    fields.update(changes)
    return CreateTopic(**fields)  # type: ignore[arg-type]


def alter(log: Log, topic: str = "events", tenant: str = "acme", **changes: object) -> AlterTopicConfig:
    """Change acme's ``topic`` from the settings it has now (``stale``:
    expect a config revision it is not at; ``revision``: another
    incarnation's)."""
    found = log.state.topic("acme", "events")
    assert found is not None
    stale = bool(changes.pop("stale", False))
    revision = int(changes.pop("revision", found.revision))  # type: ignore[call-overload]
    config = replace(found.config, **changes)  # type: ignore[arg-type]
    return AlterTopicConfig(tenant, topic, revision, found.config_revision + (1 if stale else 0), config)


@dataclass(frozen=True)
class Case:
    reason: RejectReason
    name: str
    build: Callable[[Log], Command | bytes]


def _promote_dead_learner(log: Log) -> Command:
    learner = group(log, 1).learners[0]
    log.ok(SetNodeLiveness(learner, False))
    return PromoteLearner(1, learner, group(log, 1).revision, 0)


def _after(first: Command, then: Command) -> Callable[[Log], Command]:
    """A case that needs ``first`` applied (accepted) before ``then``."""

    def build(log: Log) -> Command:
        log.ok(first)
        return then

    return build


def _key(
    tenant: str | None,
    scope: KeyScope | None = None,
    expires_at_ms: int = 0,
    *,
    key_id: str = "0" * 16,
    salt: bytes = bytes(16),
    digest: bytes = bytes(32),
) -> CreateApiKey:
    return CreateApiKey(key_id, tenant, salt, digest, scope or default_scope(tenant), expires_at_ms)


def _remove_with_replicas(log: Log) -> Command:
    log.ok(DecommissionNode(1))
    return RemoveNode(1)


def _single_voter(log: Log) -> Command:
    topic = log.state.topic("acme", "single")
    assert topic is not None
    a = group(log, topic.groups[0])
    return RemoveReplica(a.group, a.replicas[0], a.revision)


CASES = [
    Case(R.INVALID_COMMAND, "garbage", lambda log: b"\x05"),
    Case(R.INVALID_NAME, "tenant ..", lambda log: CreateTenant("..")),
    Case(R.INVALID_NAME, "tenant .", lambda log: CreateTenant(".")),
    Case(R.INVALID_NAME, "tenant slash", lambda log: CreateTenant("a/b")),
    Case(R.INVALID_NAME, "tenant newline", lambda log: CreateTenant("a\n")),
    Case(R.INVALID_NAME, "tenant empty", lambda log: CreateTenant("")),
    Case(R.INVALID_NAME, "tenant too long", lambda log: CreateTenant("t" * 64)),
    Case(R.INVALID_NAME, "topic ..", lambda log: topic_command(name="..")),
    Case(R.INVALID_NAME, "topic too long", lambda log: topic_command(name="t" * 250)),
    Case(R.INVALID_NAME, "topic unicode", lambda log: topic_command(name="événement")),
    Case(R.TENANT_EXISTS, "again", lambda log: CreateTenant("acme")),
    Case(R.UNKNOWN_TENANT, "delete", lambda log: DeleteTenant("nope")),
    Case(R.UNKNOWN_TENANT, "topic", lambda log: topic_command(tenant="nope")),
    Case(R.UNKNOWN_TENANT, "delete topic", lambda log: DeleteTopic("nope", "events")),
    Case(R.UNKNOWN_TENANT, "key", lambda log: issue_api_key("nope").command),
    Case(R.TENANT_NOT_EMPTY, "has topics", lambda log: DeleteTenant("acme")),
    Case(R.INVALID_API_KEY, "key id", lambda log: _key("acme", key_id="NOT-HEX")),
    Case(R.INVALID_API_KEY, "salt", lambda log: _key("acme", salt=bytes(15))),
    Case(R.INVALID_API_KEY, "digest", lambda log: _key(None, digest=bytes(31))),
    Case(R.API_KEY_EXISTS, "same id", lambda log: _key("beta", key_id=KEY.key_id)),
    Case(R.UNKNOWN_API_KEY, "revoke", lambda log: RevokeApiKey("0" * 16)),
    Case(R.TOPIC_EXISTS, "again", lambda log: topic_command(name="events")),
    Case(R.UNKNOWN_TOPIC, "delete", lambda log: DeleteTopic("acme", "nope")),
    Case(R.UNKNOWN_TOPIC, "other tenant's", lambda log: DeleteTopic("beta", "events")),
    Case(R.INVALID_PARTITIONS, "zero", lambda log: topic_command(partitions=0, assignment=())),
    Case(R.INVALID_PARTITIONS, "too many", lambda log: topic_command(partitions=10_001)),
    # acme has 3 partitions (2 topics) already: one more than its quota leaves room for.
    Case(
        R.QUOTA_EXCEEDED,
        "built-in partition quota",
        lambda log: topic_command(partitions=MAX_TENANT_PARTITIONS - 2),
    ),
    Case(
        R.QUOTA_EXCEEDED,
        "tenant's partition quota",
        _after(SetQuota("acme", QuotaLimits(partitions=4)), topic_command(partitions=2)),
    ),
    Case(R.QUOTA_EXCEEDED, "topic quota", _after(SetQuota("acme", QuotaLimits(topics=2)), topic_command())),
    Case(
        R.QUOTA_EXCEEDED, "default topic quota", _after(SetQuota("", QuotaLimits(topics=2)), topic_command())
    ),
    Case(
        R.QUOTA_EXCEEDED,
        "zero topics",
        _after(SetQuota("beta", QuotaLimits(topics=0)), topic_command(tenant="beta")),
    ),
    Case(
        R.TOO_MANY_PARTITIONS,
        "cluster cap",
        _after(SetQuota("acme", QuotaLimits(partitions=20_000)), topic_command(partitions=9_998)),
    ),
    Case(R.INVALID_QUOTA, "negative", lambda log: SetQuota("acme", QuotaLimits(storage_bytes=-1))),
    Case(R.INVALID_QUOTA, "negative default", lambda log: SetQuota("", QuotaLimits(requests_s=-5))),
    Case(R.UNKNOWN_TENANT, "quota", lambda log: SetQuota("nope", QuotaLimits(topics=1))),
    Case(R.INVALID_KEY_SCOPE, "client without prefixes", lambda log: _key("acme", KeyScope("client"))),
    Case(R.INVALID_KEY_SCOPE, "operator with a tenant", lambda log: _key("acme", KeyScope("operator"))),
    Case(R.INVALID_KEY_SCOPE, "admin of no tenant", lambda log: _key(None, KeyScope("admin"))),
    Case(R.INVALID_KEY_SCOPE, "unknown role", lambda log: _key("acme", KeyScope("root"))),
    Case(R.INVALID_KEY_SCOPE, "admin with prefixes", lambda log: _key("acme", KeyScope("admin", ("a",)))),
    Case(R.INVALID_KEY_SCOPE, "bad prefix", lambda log: _key("acme", KeyScope("client", ("a/b",)))),
    Case(
        R.INVALID_KEY_SCOPE,
        "too many prefixes",
        lambda log: _key("acme", KeyScope("client", (), tuple(f"p{i}" for i in range(MAX_PREFIXES + 1)))),
    ),
    Case(R.INVALID_KEY_SCOPE, "negative expiry", lambda log: _key("acme", expires_at_ms=-1)),
    Case(R.INVALID_KEY_SCOPE, "set negative expiry", lambda log: SetApiKeyExpiry(KEY.key_id, -1)),
    Case(R.UNKNOWN_API_KEY, "expiry", lambda log: SetApiKeyExpiry("0" * 16, 5)),
    Case(R.INVALID_REPLICATION_FACTOR, "zero", lambda log: topic_command(replication_factor=0)),
    Case(R.INVALID_REPLICATION_FACTOR, "too many", lambda log: topic_command(replication_factor=16)),
    Case(R.REPLICATION_FACTOR_TOO_LARGE, "4 of 3 live", lambda log: topic_command(replication_factor=4)),
    Case(R.INVALID_RETENTION, "zero ms", lambda log: topic_command(retention_ms=0)),
    Case(R.INVALID_RETENTION, "negative bytes", lambda log: topic_command(retention_bytes=-1)),
    Case(R.INVALID_TOPIC_CONFIG, "policy", lambda log: topic_command(cleanup_policy="compact,delete,")),
    Case(R.INVALID_TOPIC_CONFIG, "policy case", lambda log: topic_command(cleanup_policy="Compact")),
    Case(R.INVALID_TOPIC_CONFIG, "negative lag", lambda log: topic_command(min_compaction_lag_ms=-1)),
    Case(
        R.INVALID_TOPIC_CONFIG,
        "tombstones kept a millennium",
        lambda log: topic_command(cleanup_policy="compact", delete_retention_ms=MAX_CONFIG_MS + 1),
    ),
    Case(
        R.INVALID_TOPIC_CONFIG,
        "max lag below min lag",
        lambda log: topic_command(min_compaction_lag_ms=10, max_compaction_lag_ms=9),
    ),
    Case(R.INVALID_TOPIC_CONFIG, "max lag zero", lambda log: topic_command(max_compaction_lag_ms=0)),
    Case(R.INVALID_TOPIC_CONFIG, "alter policy", lambda log: alter(log, cleanup_policy="")),
    Case(R.INVALID_TOPIC_CONFIG, "alter lag", lambda log: alter(log, delete_retention_ms=-5)),
    Case(R.INVALID_RETENTION, "alter retention", lambda log: alter(log, retention_ms=0)),
    Case(R.STALE_REVISION, "alter raced", lambda log: alter(log, cleanup_policy="compact", stale=True)),
    Case(R.UNKNOWN_TOPIC, "alter missing", lambda log: alter(log, topic="nope", cleanup_policy="compact")),
    Case(
        R.UNKNOWN_TOPIC,
        "alter re-created",
        lambda log: alter(log, cleanup_policy="compact", revision=log.state.applied_index + 7),
    ),
    Case(R.UNKNOWN_TENANT, "alter", lambda log: alter(log, tenant="nobody", cleanup_policy="compact")),
    Case(R.INVALID_ASSIGNMENT, "count", lambda log: topic_command(assignment=((1, 2),))),
    Case(R.INVALID_ASSIGNMENT, "width", lambda log: topic_command(assignment=((1, 2), (3,)))),
    Case(R.INVALID_ASSIGNMENT, "repeat", lambda log: topic_command(assignment=((1, 2), (3, 3)))),
    Case(R.INVALID_ASSIGNMENT, "unknown node", lambda log: topic_command(assignment=((1, 2), (3, 99)))),
    Case(R.NODE_UNAVAILABLE, "dead in topic", lambda log: topic_command(assignment=((1, 2), (3, 4)))),
    Case(R.NODE_UNAVAILABLE, "draining in topic", lambda log: topic_command(assignment=((5, 2), (3, 1)))),
    Case(R.NODE_UNAVAILABLE, "dead learner", lambda log: AddLearner(2, 4, group(log, 2).revision)),
    Case(R.NODE_UNAVAILABLE, "promote dead", _promote_dead_learner),
    Case(R.INVALID_NODE, "id 0", lambda log: RegisterNode(0, "h:1", "", False)),
    Case(R.INVALID_NODE, "id too big", lambda log: RegisterNode(2**63, "h:1", "", False)),
    Case(R.INVALID_NODE, "no port", lambda log: RegisterNode(9, "h", "", False)),
    Case(R.INVALID_NODE, "port 0", lambda log: RegisterNode(9, "h:0", "", False)),
    Case(R.INVALID_NODE, "port too big", lambda log: RegisterNode(9, "h:65536", "", False)),
    Case(R.INVALID_NODE, "space", lambda log: RegisterNode(9, "a b:1", "", False)),
    Case(R.INVALID_NODE, "zone", lambda log: RegisterNode(9, "h:1", "eu west", False)),
    Case(R.ADDRESS_IN_USE, "node 1's", lambda log: RegisterNode(9, address(1), "", False)),
    Case(R.UNKNOWN_NODE, "liveness", lambda log: SetNodeLiveness(99, False)),
    Case(R.UNKNOWN_NODE, "decommission", lambda log: DecommissionNode(99)),
    Case(R.UNKNOWN_NODE, "remove", lambda log: RemoveNode(99)),
    Case(R.UNKNOWN_NODE, "learner", lambda log: AddLearner(2, 99, group(log, 2).revision)),
    Case(R.NODE_DECOMMISSIONING, "again", lambda log: DecommissionNode(5)),
    Case(R.NODE_DECOMMISSIONING, "re-register", lambda log: RegisterNode(5, address(5), "", True)),
    Case(R.NODE_NOT_DECOMMISSIONING, "remove", lambda log: RemoveNode(1)),
    Case(R.NODE_HAS_REPLICAS, "remove", _remove_with_replicas),
    Case(R.LIVENESS_UNCHANGED, "alive", lambda log: SetNodeLiveness(1, True)),
    Case(R.LIVENESS_UNCHANGED, "dead", lambda log: SetNodeLiveness(4, False)),
    Case(R.UNKNOWN_GROUP, "learner", lambda log: AddLearner(999, 1, 1)),
    Case(R.UNKNOWN_GROUP, "controller", lambda log: RemoveReplica(0, 1, 1)),
    Case(R.STALE_REVISION, "ahead", lambda log: AddLearner(2, 1, group(log, 2).revision + 1)),
    Case(
        R.STALE_REVISION,
        "behind",
        lambda log: RemoveReplica(1, group(log, 1).learners[0], group(log, 1).revision - 1),
    ),
    Case(
        R.ALREADY_REPLICA,
        "voter",
        lambda log: AddLearner(1, group(log, 1).replicas[0], group(log, 1).revision),
    ),
    Case(
        R.ALREADY_REPLICA,
        "learner",
        lambda log: AddLearner(1, group(log, 1).learners[0], group(log, 1).revision),
    ),
    Case(
        R.NOT_A_LEARNER,
        "voter",
        lambda log: PromoteLearner(1, group(log, 1).replicas[0], group(log, 1).revision, 0),
    ),
    Case(R.NOT_A_REPLICA, "remove", lambda log: RemoveReplica(1, 4, group(log, 1).revision)),
    Case(R.LAST_VOTER, "rf 1", _single_voter),
    Case(
        R.INVALID_POSITION,
        "past end",
        lambda log: PromoteLearner(1, group(log, 1).learners[0], group(log, 1).revision, 3),
    ),
]


@pytest.mark.parametrize("c", CASES, ids=[f"{c.reason}-{c.name}" for c in CASES])
def test_rejected_command_changes_nothing(c: Case) -> None:
    log = base()
    built = c.build(log)
    data = built if isinstance(built, bytes) else encode_command(built)
    twin = ControllerState.restore(log.state.snapshot())
    index = log.next_index

    result = log.state.apply(index, data)
    twin.apply_noop(index)

    assert isinstance(result, Rejected), result
    assert result.reason is c.reason, result.message
    assert result.message
    assert log.state.snapshot() == twin.snapshot()
    assert log.state == twin
    log.state.check_invariants()


def test_every_reason_has_a_case() -> None:
    assert {c.reason for c in CASES} == set(RejectReason)


def test_the_same_command_is_accepted_once_the_reason_is_gone() -> None:
    """The rejections above are about the state, not the command shape."""
    log = base()
    assert isinstance(log.apply(DeleteTenant("acme")), Rejected)
    log.ok(DeleteTopic("acme", "events"))
    log.ok(DeleteTopic("acme", "single"))
    log.ok(DeleteTenant("acme"))
    assert isinstance(log.apply(SetNodeLiveness(4, False)), Rejected)
    log.ok(SetNodeLiveness(4, True))
    assert isinstance(log.apply(topic_command(tenant="beta", replication_factor=4)), Rejected)
    log.ok(topic_command(tenant="beta", replication_factor=4, assignment=((1, 2, 3, 4), (4, 3, 2, 1))))
