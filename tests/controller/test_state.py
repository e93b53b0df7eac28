"""The state machine's happy paths and queries: tenants, topics, nodes,
replica changes, tenant isolation, and the invariant checker itself."""

from __future__ import annotations

import pytest

from cluster.controller.api_keys import issue_api_key
from cluster.controller.commands import (
    AddLearner,
    AlterTopicConfig,
    CreateTenant,
    CreateTopic,
    DecommissionNode,
    DeleteTenant,
    DeleteTopic,
    PromoteLearner,
    RegisterNode,
    RemoveNode,
    RemoveReplica,
    SetNodeLiveness,
)
from cluster.controller.model import Assignment, Node, TopicConfig
from cluster.controller.results import Applied, AssignmentChanged, Rejected, RejectReason, TopicCreated
from cluster.controller.state import ControllerState, InconsistentState
from tests.controller.harness import Log, address, cluster, create_topic


def test_a_fresh_state_is_empty() -> None:
    state = ControllerState()
    assert state.applied_index == 0
    assert state.next_group_id == 1  # group 0 is the controller
    assert state.nodes() == () and state.assignments() == () and state.list_tenants().items == ()
    state.check_invariants()


def test_create_topic_allocates_groups_from_one_and_records_the_assignment() -> None:
    log = cluster(3, tenants=["acme"])
    index = log.next_index
    result = log.ok(CreateTopic("acme", "events", 3, 2, 60_000, 1 << 20, ((1, 2), (2, 3), (3, 1))))
    assert result == TopicCreated(index, index, (1, 2, 3))
    topic = log.state.topic("acme", "events")
    assert topic is not None
    assert (topic.partitions, topic.replication_factor, topic.retention_ms, topic.retention_bytes) == (
        3,
        2,
        60_000,
        1 << 20,
    )
    assert topic.revision == index and topic.groups == (1, 2, 3)
    p1 = log.state.partition("acme", "events", 1)
    assert p1 == Assignment(2, "acme", "events", index, 1, (2, 3), (), 1)
    assert p1.preferred_leader == 2
    assert log.state.partition("acme", "events", 3) is None
    assert log.state.partition("acme", "events", -1) is None
    assert log.state.next_group_id == 4


def test_a_recreated_topic_never_aliases_its_predecessor() -> None:
    log = cluster(3, tenants=["acme"])
    create_topic(log, "acme", "events", partitions=2)
    old = log.state.topic("acme", "events")
    log.ok(DeleteTopic("acme", "events"))
    assert log.state.topic("acme", "events") is None
    assert log.state.assignments() == ()
    assert all(log.state.assignments_for_node(n) == () for n in (1, 2, 3))
    create_topic(log, "acme", "events", partitions=2)
    new = log.state.topic("acme", "events")
    assert old is not None and new is not None
    assert new.revision > old.revision
    assert not set(new.groups) & set(old.groups)
    assert all(log.state.assignment(g) is None for g in old.groups)


def test_tenants_see_only_their_own_topics() -> None:
    log = cluster(3, tenants=["acme", "beta"])
    create_topic(log, "acme", "events")
    create_topic(log, "acme", "audit")
    create_topic(log, "beta", "events", partitions=1)
    assert [t.name for t in log.state.topics_for("acme")] == ["audit", "events"]
    assert [t.name for t in log.state.topics_for("beta")] == ["events"]
    assert log.state.topics_for("gamma") == ()
    assert [t.name for t in log.state.list_topics("beta").items] == ["events"]
    acme_events, beta_events = log.state.topic("acme", "events"), log.state.topic("beta", "events")
    assert acme_events is not None and beta_events is not None
    assert acme_events.groups != beta_events.groups
    assert log.state.partition("beta", "events", 0) == log.state.assignment(beta_events.groups[0])
    assert log.state.partition("beta", "events", 1) is None  # acme's has 3
    assert log.state.topic("beta", "audit") is None
    assert log.state.list_partitions("beta", "audit").items == ()


def test_delete_tenant_revokes_its_keys_only() -> None:
    log = cluster(1, tenants=["acme", "beta"])
    acme, beta, operator = issue_api_key("acme"), issue_api_key("beta"), issue_api_key(None)
    for key in (acme, beta, operator):
        log.ok(key.command)
    log.ok(DeleteTenant("acme"))
    assert log.state.tenant("acme") is None
    assert log.state.authenticate(acme.clear_text) is None
    assert log.state.api_key(acme.key_id) is None
    assert log.state.authenticate(beta.clear_text) is not None
    assert log.state.authenticate(operator.clear_text) is not None
    # A tenant of the same name starts with no keys.
    log.ok(CreateTenant("acme"))
    assert log.state.authenticate(acme.clear_text) is None
    assert log.state.list_api_keys("acme").items == ()


def test_nodes_register_update_and_change_liveness() -> None:
    log = cluster(2)
    assert log.state.node(1) == Node(1, address(1), "", True, alive=True, decommissioning=False)
    log.ok(SetNodeLiveness(2, False))
    assert log.state.node(2) == Node(2, address(2), "", True, alive=False)
    assert [n.node_id for n in log.state.live_nodes()] == [1]
    # A restarted node re-registers, possibly elsewhere: alive again.
    assert log.ok(RegisterNode(2, "10.9.9.9:7100", "zone-b", False)) == Applied(log.state.applied_index)
    assert log.state.node(2) == Node(2, "10.9.9.9:7100", "zone-b", False, alive=True)
    # Its old address is free now.
    log.ok(RegisterNode(3, address(2), "", False))
    assert [n.node_id for n in log.state.nodes()] == [1, 2, 3]


def test_decommission_then_remove() -> None:
    log = cluster(3, tenants=["acme"])
    log.ok(CreateTopic("acme", "t", 1, 2, None, None, ((1, 3),)))
    log.ok(DecommissionNode(3))
    node = log.state.node(3)
    assert node is not None and node.decommissioning and node.alive and not node.can_host
    assert [n.node_id for n in log.state.live_nodes()] == [1, 2]
    log.ok(AddLearner(1, 2, 1))
    log.ok(PromoteLearner(1, 2, 2, 1))
    log.ok(RemoveReplica(1, 3, 3))
    assert log.state.assignments_for_node(3) == ()
    log.ok(RemoveNode(3))
    assert log.state.node(3) is None
    # The id may come back as a new node.
    log.ok(RegisterNode(3, address(3), "", False))


def replicas(log: Log, group: int) -> tuple[int, ...]:
    a = log.state.assignment(group)
    assert a is not None
    return a.replicas


def test_replica_steps_keep_positions_and_bump_the_revision() -> None:
    log = cluster(4, tenants=["acme"])
    log.ok(CreateTopic("acme", "t", 1, 3, None, None, ((1, 2, 3),)))
    index = log.next_index
    assert log.ok(AddLearner(1, 4, 1)) == AssignmentChanged(index, 1, 2)
    a = log.state.assignment(1)
    assert a is not None and a.replicas == (1, 2, 3) and a.learners == (4,) and a.members == (1, 2, 3, 4)
    assert [g.group for g in log.state.assignments_for_node(4)] == [1]
    log.ok(PromoteLearner(1, 4, 2, 0))  # takes node 1's place as preferred leader
    a = log.state.assignment(1)
    assert a is not None and a.replicas == (4, 1, 2, 3) and a.learners == () and a.revision == 3
    log.ok(RemoveReplica(1, 1, 3))
    a = log.state.assignment(1)
    assert a is not None and a.replicas == (4, 2, 3) and a.preferred_leader == 4 and a.revision == 4
    assert log.state.assignments_for_node(1) == ()
    # Promotion at the end, and removing a learner.
    log.ok(AddLearner(1, 1, 4))
    log.ok(PromoteLearner(1, 1, 5, 3))
    assert replicas(log, 1) == (4, 2, 3, 1)
    log.ok(RemoveReplica(1, 3, 6))
    assert replicas(log, 1) == (4, 2, 1)


def test_assignments_for_node_is_what_a_reconciler_needs() -> None:
    log = cluster(3, tenants=["acme", "beta"])
    log.ok(CreateTopic("acme", "a", 2, 2, None, None, ((1, 2), (2, 3))))
    log.ok(CreateTopic("beta", "b", 1, 1, None, None, ((2,),)))
    log.ok(AddLearner(3, 3, 1))
    on_2 = log.state.assignments_for_node(2)
    assert [(a.group, a.tenant, a.topic, a.partition) for a in on_2] == [
        (1, "acme", "a", 0),
        (2, "acme", "a", 1),
        (3, "beta", "b", 0),
    ]
    on_3 = log.state.assignments_for_node(3)
    assert [(a.group, a.replicas, a.learners, a.revision) for a in on_3] == [
        (2, (2, 3), (), 1),
        (3, (2,), (3,), 2),
    ]
    assert log.state.assignments_for_node(99) == ()


def test_equality_is_content() -> None:
    a, b = cluster(2, tenants=["x"]), cluster(2, tenants=["x"])
    assert a.state == b.state
    b.noop()
    assert a.state != b.state
    assert a.state != "not a state"


# --- the invariant checker can fail ---------------------------------------------------


def _broken(what: str) -> Log:
    log = cluster(3, tenants=["acme"])
    create_topic(log, "acme", "t", partitions=2, replication_factor=2)
    state = log.state
    a = state.assignment(1)
    assert a is not None
    if what == "orphan topic":
        del state._tenants["acme"]
    elif what == "voters and learners overlap":
        state._assignments[1] = Assignment(1, "acme", "t", a.topic_revision, 0, a.replicas, a.replicas[:1], 1)
    elif what == "stale index":
        state._groups_on_node[3] = {1, 2, 99}
    elif what == "unregistered replica":
        del state._nodes[a.replicas[0]]
    elif what == "group beyond the counter":
        state._next_group_id = 2
    elif what == "duplicate address":
        state._nodes[2] = Node(2, address(1), "", False)
    elif what == "orphan assignment":
        state._assignments[50] = Assignment(50, "acme", "t", a.topic_revision, 0, (1,), (), 1)
    return log


@pytest.mark.parametrize(
    "what",
    [
        "orphan topic",
        "voters and learners overlap",
        "stale index",
        "unregistered replica",
        "group beyond the counter",
        "duplicate address",
        "orphan assignment",
    ],
)
def test_check_invariants_catches(what: str) -> None:
    with pytest.raises(InconsistentState):
        _broken(what).state.check_invariants()


@pytest.mark.parametrize("policy", ["delete", "compact", "compact,delete"])
def test_a_topic_is_created_with_each_cleanup_policy(policy: str) -> None:
    log = cluster(1, tenants=["acme"])
    create_topic(log, "acme", "t", partitions=1, cleanup_policy=policy, delete_retention_ms=1000)
    topic = log.state.topic("acme", "t")
    assert topic is not None
    assert (topic.cleanup_policy, topic.delete_retention_ms, topic.config_revision) == (policy, 1000, 0)
    assert topic.config.compacted == (policy != "delete")


def test_altering_a_topic_replaces_its_settings_and_keeps_its_identity() -> None:
    """The topic's revision (its incarnation: clients compare it) stays;
    ``config_revision`` moves to the alter's index; a second alter must
    expect that revision."""
    log = cluster(1, tenants=["acme"])
    create_topic(log, "acme", "t", partitions=2, retention_ms=5000)
    before = log.state.topic("acme", "t")
    assert before is not None
    config = TopicConfig(None, 100, "compact", 10, 1000, 60_000)
    index = log.next_index
    assert log.ok(AlterTopicConfig("acme", "t", before.revision, 0, config)) == Applied(index)
    after = log.state.topic("acme", "t")
    assert after is not None
    assert after.config == config
    assert (after.revision, after.groups, after.config_revision) == (before.revision, before.groups, index)
    stale = log.apply(AlterTopicConfig("acme", "t", before.revision, 0, TopicConfig()))
    assert isinstance(stale, Rejected) and stale.reason is RejectReason.STALE_REVISION
    log.ok(AlterTopicConfig("acme", "t", before.revision, index, TopicConfig()))
    back = log.state.topic("acme", "t")
    assert back is not None and back.config == TopicConfig()
