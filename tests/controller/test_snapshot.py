"""Snapshots: restore gives back the state, equal states give equal bytes,
and damaged or foreign bytes raise ``CorruptSnapshot``."""

from __future__ import annotations

import zlib
from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster.controller.api_keys import issue_api_key
from cluster.controller.commands import (
    AddLearner,
    AlterTopicConfig,
    Command,
    CreateTenant,
    DecommissionNode,
    RegisterNode,
    RevokeApiKey,
    SetNodeLiveness,
    SetQuota,
)
from cluster.controller.model import ADMIN_SCOPE, Assignment, KeyScope, Node, Tenant, Topic
from cluster.controller.quotas import BUILT_IN_DEFAULTS, QuotaLimits
from cluster.controller.snapshot import MAGIC, ControllerImage, CorruptSnapshot, decode_image, encode_image
from cluster.controller.state import ControllerState
from cluster.primitives.wire import Writer
from tests.controller.harness import Log, cluster, create_topic, quota_limits


def populated() -> Log:
    log = cluster(5, zones=["a", "b"], tenants=["acme", "beta", "zeta"])
    create_topic(log, "acme", "events", partitions=4, replication_factor=3, retention_ms=1000)
    create_topic(log, "beta", "audit", partitions=2, replication_factor=2, retention_bytes=0)
    log.ok(issue_api_key("acme").command)
    log.ok(issue_api_key(None).command)
    create_topic(log, "zeta", "latest", partitions=1, cleanup_policy="compact", min_compaction_lag_ms=5)
    latest = log.state.topic("zeta", "latest")
    assert latest is not None
    config = replace(latest.config, cleanup_policy="compact,delete", max_compaction_lag_ms=60_000)
    log.ok(AlterTopicConfig("zeta", "latest", latest.revision, 0, config))
    log.ok(SetNodeLiveness(4, False))
    log.ok(DecommissionNode(5))
    a = next(a for a in log.state.assignments() if len(a.members) < 3)
    log.ok(AddLearner(a.group, next(n for n in (1, 2, 3) if n not in a.members), a.revision))
    log.noop()
    return log


def test_restore_gives_back_the_state() -> None:
    state = populated().state
    data = state.snapshot()
    restored = ControllerState.restore(data)
    assert restored == state
    assert restored.snapshot() == data
    assert restored.applied_index == state.applied_index
    assert restored.next_group_id == state.next_group_id
    assert [restored.assignments_for_node(n) for n in range(1, 6)] == [
        state.assignments_for_node(n) for n in range(1, 6)
    ]
    assert ControllerState.restore(data, index=state.applied_index) == state
    with pytest.raises(CorruptSnapshot, match="stored at"):
        ControllerState.restore(data, index=state.applied_index + 1)


def test_topic_settings_survive_a_snapshot() -> None:
    restored = ControllerState.restore(populated().state.snapshot())
    latest = restored.topic("zeta", "latest")
    assert latest is not None
    assert (latest.cleanup_policy, latest.min_compaction_lag_ms, latest.max_compaction_lag_ms) == (
        "compact,delete",
        5,
        60_000,
    )
    assert latest.revision < latest.config_revision <= restored.applied_index


def _version_1_snapshot() -> bytes:
    """A snapshot as the code before compacted topics wrote it: one topic
    (tenant acme, topic t, 1 partition on node 1, retention 1000 ms)."""
    w = Writer().raw(MAGIC).u8(1).u64(10).u64(2)
    w.u32(1).text("acme").u64(1)  # tenants
    w.u32(0)  # api keys
    w.u32(1).u64(1).text("h:1").text("").flag(True).flag(True).flag(False)  # nodes
    w.u32(1).text("acme").text("t").u32(1).u16(1).opt_i64(1000).opt_i64(None).u64(3)
    w.u64(1).ids((1,)).ids(()).u64(1)
    return _seal(bytes(w))


def test_a_version_1_snapshot_still_restores_with_the_defaults() -> None:
    old = _version_1_snapshot()
    state = ControllerState.restore(old)
    topic = state.topic("acme", "t")
    assert topic is not None
    assert (topic.retention_ms, topic.cleanup_policy, topic.delete_retention_ms, topic.config_revision) == (
        1000,
        "delete",
        86_400_000,
        0,
    )
    # Nothing a version-1 node could not read: written as version 1 again,
    # byte for byte (a rolling upgrade can still ship it to an old node).
    assert state.snapshot() == old
    assert populated().state.snapshot()[len(MAGIC)] == 2


def test_a_version_2_snapshot_that_version_1_could_hold_is_refused() -> None:
    """One encoding per state: the same table as version 2 with default
    settings is no snapshot any raftlog writes."""
    w = Writer().raw(MAGIC).u8(2).u64(10).u64(2)
    w.u32(1).text("acme").u64(1).u32(0)
    w.u32(1).u64(1).text("h:1").text("").flag(True).flag(True).flag(False)
    w.u32(1).text("acme").text("t").u32(1).u16(1).opt_i64(1000).opt_i64(None).u64(3)
    w.text("delete").i64(0).i64(86_400_000).opt_i64(None).u64(0)
    w.u64(1).ids((1,)).ids(()).u64(1)
    with pytest.raises(CorruptSnapshot, match="version 1 cannot"):
        decode_image(_seal(bytes(w)))


def test_an_empty_state_round_trips() -> None:
    empty = ControllerState()
    assert ControllerState.restore(empty.snapshot()) == empty


def test_build_order_does_not_change_the_bytes() -> None:
    """Same content built in a different order: same bytes."""
    one = Log()
    two = Log()
    for n in (1, 2, 3):
        one.ok(RegisterNode(n, f"h{n}:1", "", False))
    for n in (3, 1, 2):
        two.ok(RegisterNode(n, f"h{n}:1", "", False))
    one.ok(CreateTenant("t"))
    two.ok(CreateTenant("t"))
    assert one.state.applied_index == two.state.applied_index
    assert one.state.snapshot() == two.state.snapshot()


@settings(max_examples=60)
@given(st.data())
def test_any_damage_is_detected(data: st.DataObject) -> None:
    snapshot = bytearray(populated().state.snapshot())
    position = data.draw(st.integers(0, len(snapshot) - 1))
    snapshot[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(CorruptSnapshot):
        ControllerState.restore(bytes(snapshot))


@pytest.mark.parametrize("cut", [0, 3, 5, 20, -1])
def test_truncation_is_detected(cut: int) -> None:
    snapshot = populated().state.snapshot()
    with pytest.raises(CorruptSnapshot):
        ControllerState.restore(snapshot[:cut])


def _seal(body: bytes) -> bytes:
    return body + zlib.crc32(body).to_bytes(4, "big")


def test_foreign_and_future_snapshots_are_refused_clearly() -> None:
    snapshot = ControllerState().snapshot()
    with pytest.raises(CorruptSnapshot, match="RLMC"):
        decode_image(b"\x01" + snapshot[1:])
    with pytest.raises(CorruptSnapshot, match="version 4"):
        decode_image(_seal(MAGIC + b"\x04" + snapshot[5:-4]))
    with pytest.raises(CorruptSnapshot, match="CRC"):
        decode_image(snapshot[:-1] + bytes([snapshot[-1] ^ 1]))
    with pytest.raises(CorruptSnapshot, match="trailing"):
        decode_image(_seal(snapshot[:-4] + b"\x00"))


def _tables(tenants: list[str]) -> bytes:
    w = Writer().raw(MAGIC).u8(1).u64(10).u64(1).u32(len(tenants))
    for name in tenants:
        w.text(name).u64(1)
    w.u32(0).u32(0).u32(0)
    return _seal(bytes(w))


def test_tables_out_of_order_are_refused() -> None:
    assert [t.name for t in decode_image(_tables(["a", "b"])).tenants] == ["a", "b"]
    with pytest.raises(CorruptSnapshot, match="out of order"):
        decode_image(_tables(["b", "a"]))
    with pytest.raises(CorruptSnapshot, match="out of order or repeated"):
        decode_image(_tables(["a", "a"]))


def test_well_formed_but_inconsistent_contents_are_refused() -> None:
    """A CRC-valid snapshot whose topic belongs to no tenant, or whose
    tenant was created after the snapshot's index."""
    image = ControllerImage(
        applied_index=5,
        next_group_id=1,
        tenants=(Tenant("acme", 1),),
        api_keys=(),
        nodes=(),
        topics=(),
        assignments=(),
    )
    assert ControllerState.restore(encode_image(image)).tenant("acme") == Tenant("acme", 1)
    late = ControllerImage(5, 1, (Tenant("acme", 6),), (), (), (), ())
    with pytest.raises(CorruptSnapshot, match="inconsistent"):
        ControllerState.restore(encode_image(late))
    # A topic with its node and assignment encodes: only restore can tell
    # that its tenant is missing.
    node = Node(1, "h:1", "", False)
    topic = Topic("ghost", "t", 1, 1, None, None, 2, (1,))
    assignment = Assignment(1, "ghost", "t", 2, 0, (1,), (), 1)
    owned = ControllerImage(5, 2, (Tenant("ghost", 1),), (), (node,), (topic,), (assignment,))
    assert ControllerState.restore(encode_image(owned)).topic("ghost", "t") == topic
    orphan = ControllerImage(5, 2, (), (), (node,), (topic,), (assignment,))
    with pytest.raises(CorruptSnapshot, match="inconsistent"):
        ControllerState.restore(encode_image(orphan))


def test_encode_refuses_an_unsorted_image() -> None:
    image = ControllerImage(5, 1, (Tenant("b", 1), Tenant("a", 1)), (), (), (), ())
    with pytest.raises(ValueError, match="out of order"):
        encode_image(image)


# --- version 3: quotas, key scopes and expiry -------------------------------------------


def with_tenancy() -> Log:
    """``populated()`` plus what needs version 3: cluster default quotas,
    a tenant's overrides, a client key and an expiring one."""
    log = populated()
    log.ok(SetQuota("", QuotaLimits(produce_bytes_s=5_000_000, topics=50)))
    log.ok(SetQuota("beta", QuotaLimits(partitions=10, storage_bytes=0)))
    log.ok(issue_api_key("acme", KeyScope("client", ("orders.", ""), ("x",), ("g",))).command)
    expiring = issue_api_key(None, expires_at_ms=1_700_000_000_000)
    log.ok(expiring.command)
    return log


def test_quotas_and_key_scopes_survive_a_snapshot() -> None:
    state = with_tenancy().state
    data = state.snapshot()
    assert data[len(MAGIC)] == 3
    restored = ControllerState.restore(data)
    assert restored == state and restored.snapshot() == data
    assert restored.quota_defaults() == state.quota_defaults()
    assert restored.effective_quota("beta") == QuotaLimits(
        produce_bytes_s=5_000_000, storage_bytes=0, partitions=10, topics=50
    )
    scopes = sorted(k.scope.role for k in restored.list_api_keys("acme").items)
    assert scopes == ["admin", "client"]
    assert [k.expires_at_ms for k in restored.list_api_keys(None).items if k.expires_at_ms] == [
        1_700_000_000_000
    ]


def test_removing_what_needs_version_3_writes_version_2_again() -> None:
    log = with_tenancy()
    log.ok(SetQuota("", QuotaLimits()))
    log.ok(SetQuota("beta", QuotaLimits()))
    for key in log.state.list_api_keys("acme").items + log.state.list_api_keys(None).items:
        if key.scope.is_client or key.expires_at_ms:
            log.ok(RevokeApiKey(key.key_id))
    assert log.state.snapshot()[len(MAGIC)] == 2


def _version_2_snapshot() -> bytes:
    """A snapshot as the code before quotas and key scopes wrote it: a
    tenant key, and a compacted topic (so version 2)."""
    w = Writer().raw(MAGIC).u8(2).u64(10).u64(2)
    w.u32(1).text("acme").u64(1)  # tenants
    w.u32(1).text("00000000000000aa").flag(False).text("acme").blob(bytes(16)).blob(bytes(32)).u64(2)
    w.u32(1).u64(1).text("h:1").text("").flag(True).flag(True).flag(False)  # nodes
    w.u32(1).text("acme").text("t").u32(1).u16(1).opt_i64(None).opt_i64(None).u64(3)
    w.text("compact").i64(0).i64(86_400_000).opt_i64(None).u64(0)
    w.u64(1).ids((1,)).ids(()).u64(1)
    return _seal(bytes(w))


def test_a_version_2_snapshot_still_restores_with_default_scopes_and_no_quotas() -> None:
    old = _version_2_snapshot()
    state = ControllerState.restore(old)
    key = state.api_key("00000000000000aa")
    assert key is not None and (key.scope, key.expires_at_ms) == (ADMIN_SCOPE, 0)
    assert state.quota_defaults() == BUILT_IN_DEFAULTS and state.quota_overrides() == ()
    assert state.snapshot() == old


def _version_3(body_after_topics: bytes, key_scope: bytes = b"") -> bytes:
    w = Writer().raw(MAGIC).u8(3).u64(10).u64(1)
    w.u32(1).text("acme").u64(1)
    w.u32(1).text("00000000000000aa").flag(False).text("acme").blob(bytes(16)).blob(bytes(32)).u64(2)
    return _seal(bytes(w) + key_scope + bytes(4) + bytes(4) + body_after_topics)


_ADMIN_FOREVER = b"\x00\x05admin" + bytes(12) + bytes(8)
_NO_QUOTA = bytes(8)


def test_version_3_that_version_2_could_hold_and_empty_overrides_are_refused() -> None:
    """One encoding per state: no quotas and default keys are not version
    3; a tenant's all-None override record is never stored."""
    ok = _version_3(
        _NO_QUOTA + (1).to_bytes(4, "big") + b"\x00\x04acme" + b"\x00" * 5 + b"\x01" + bytes(8) + b"\x00" * 2,
        _ADMIN_FOREVER,
    )
    assert ControllerState.restore(ok).effective_quota("acme").topics == 0
    with pytest.raises(CorruptSnapshot, match="version 3 holds nothing version 2 cannot"):
        decode_image(_version_3(_NO_QUOTA + bytes(4), _ADMIN_FOREVER))
    with pytest.raises(CorruptSnapshot, match="overrides are empty"):
        decode_image(
            _version_3(_NO_QUOTA + (1).to_bytes(4, "big") + b"\x00\x04acme" + _NO_QUOTA, _ADMIN_FOREVER)
        )


tenancy_steps = st.lists(
    st.one_of(
        st.builds(SetQuota, st.sampled_from(["", "acme", "beta"]), quota_limits),
        st.builds(
            lambda tenant, scope, expires: issue_api_key(tenant, scope, expires).command,
            st.sampled_from(["acme", "beta"]),
            st.sampled_from([None, KeyScope("client", ("a",)), KeyScope("client", (), ("",), ("g",))]),
            st.sampled_from([0, 1, 2**40]),
        ),
    ),
    max_size=8,
)


@settings(max_examples=40)
@given(tenancy_steps)
def test_any_quotas_and_keys_round_trip(steps: list[Command]) -> None:
    log = cluster(1, tenants=["acme", "beta"])
    for step in steps:
        log.apply(step)
    data = log.state.snapshot()
    restored = ControllerState.restore(data)
    assert restored == log.state and restored.snapshot() == data
    for tenant in ("acme", "beta"):
        assert restored.effective_quota(tenant) == log.state.effective_quota(tenant)
