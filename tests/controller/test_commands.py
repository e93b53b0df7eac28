"""Command encoding: round trips, canonical bytes, strict decoding, and how
the state machine treats bytes it cannot apply."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.controller.command_header import (
    COMMAND_VERSION,
    CommandKind,
    MalformedCommand,
    UnsupportedCommand,
)
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
    decode_command,
    encode_command,
)
from cluster.controller.model import (
    ADMIN_SCOPE,
    OPERATOR_SCOPE,
    ApiKeyInfo,
    ApiKeyRecord,
    KeyScope,
    Principal,
    TopicConfig,
)
from cluster.controller.quotas import QuotaLimits
from cluster.controller.results import Rejected, RejectReason
from cluster.controller.state import ControllerState
from tests.controller.harness import cluster, commands


@given(commands())
def test_decode_inverts_encode(command: Command) -> None:
    data = encode_command(command)
    assert decode_command(data) == command
    assert encode_command(decode_command(data)) == data


@given(commands(), st.data())
def test_every_truncation_is_malformed(command: Command, data: st.DataObject) -> None:
    encoded = encode_command(command)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(MalformedCommand):
        decode_command(encoded[:cut])


@given(commands(), st.binary(min_size=1, max_size=8))
def test_trailing_bytes_are_malformed(command: Command, extra: bytes) -> None:
    with pytest.raises(MalformedCommand, match="trailing"):
        decode_command(encode_command(command) + extra)


def test_kind_numbers_never_change() -> None:
    """The numbers are in every stored log: renumbering is a format break."""
    expected: dict[type[Command], int] = {
        CreateTenant: 1,
        DeleteTenant: 2,
        CreateApiKey: 3,
        RevokeApiKey: 4,
        CreateTopic: 5,
        DeleteTopic: 6,
        RegisterNode: 7,
        SetNodeLiveness: 8,
        DecommissionNode: 9,
        RemoveNode: 10,
        AddLearner: 11,
        PromoteLearner: 12,
        RemoveReplica: 13,
        AlterTopicConfig: 14,
        SetQuota: 15,
        SetApiKeyExpiry: 16,
    }
    assert {cls: int(cls.KIND) for cls in expected} == expected
    assert len(CommandKind) == len(expected)


def test_a_known_layout() -> None:
    """One command spelled out byte by byte, so the layout cannot drift."""
    data = encode_command(RegisterNode(258, "h:1", "z", True))
    assert data == bytes([7, 1]) + (258).to_bytes(8, "big") + b"\x00\x03h:1" + b"\x00\x01z" + b"\x01"
    assert encode_command(CreateTopic("t", "n", 1, 1, None, 5, ((3,),))) == (
        bytes([5, 1])
        + b"\x00\x01t\x00\x01n"
        + (1).to_bytes(4, "big")
        + (1).to_bytes(2, "big")
        + b"\x00"
        + b"\x01"
        + (5).to_bytes(8, "big")
        + (1).to_bytes(4, "big")
        + (1).to_bytes(2, "big")
        + (3).to_bytes(8, "big")
    )


_V1_CREATE_TOPIC = (
    bytes([5, 1])
    + b"\x00\x01t\x00\x01n"
    + (1).to_bytes(4, "big")
    + (1).to_bytes(2, "big")
    + b"\x00\x00"
    + (1).to_bytes(4, "big")
    + (1).to_bytes(2, "big")
    + (3).to_bytes(8, "big")
)
_COMPACTION = b"\x00\x07compact" + (5).to_bytes(8, "big") + (60_000).to_bytes(8, "big") + b"\x00"


def test_compaction_settings_are_a_new_version_and_version_1_still_reads() -> None:
    """A topic with compaction settings is CreateTopic version 2 (the v1
    fields, then the settings); one without is still the v1 bytes, which
    decode to the defaults (an old log replays unchanged)."""
    plain = CreateTopic("t", "n", 1, 1, None, None, ((3,),))
    assert encode_command(plain) == _V1_CREATE_TOPIC
    assert decode_command(_V1_CREATE_TOPIC) == plain
    assert (plain.cleanup_policy, plain.min_compaction_lag_ms, plain.delete_retention_ms) == (
        "delete",
        0,
        86_400_000,
    )
    compacted = CreateTopic("t", "n", 1, 1, None, None, ((3,),), "compact", 5, 60_000)
    v2 = bytes([5, 2]) + _V1_CREATE_TOPIC[2:] + _COMPACTION
    assert encode_command(compacted) == v2
    assert decode_command(v2) == compacted
    alter = AlterTopicConfig("t", "n", 7, 0, TopicConfig(None, 10, "compact", 5, 60_000, None))
    assert encode_command(alter) == (
        bytes([14, 1])
        + b"\x00\x01t\x00\x01n"
        + (7).to_bytes(8, "big")
        + (0).to_bytes(8, "big")
        + b"\x00\x01"
        + (10).to_bytes(8, "big")
        + _COMPACTION
    )


def test_a_version_2_create_that_version_1_could_hold_is_malformed() -> None:
    """One encoding per command: the default settings are written as v1."""
    defaults = b"\x00\x06delete" + bytes(8) + (86_400_000).to_bytes(8, "big") + b"\x00"
    with pytest.raises(MalformedCommand, match="version 1 holds it"):
        decode_command(bytes([5, 2]) + _V1_CREATE_TOPIC[2:] + defaults)


_SALT, _DIGEST = bytes(range(16)), bytes(range(32))
_V1_KEY = (
    bytes([3, 1]) + b"\x00\x01k" + b"\x00" + b"\x00\x04acme" + b"\x00\x10" + _SALT + b"\x00\x20" + _DIGEST
)


def _prefixes(*texts: bytes) -> bytes:
    return len(texts).to_bytes(4, "big") + b"".join(len(t).to_bytes(2, "big") + t for t in texts)


def test_a_scoped_or_expiring_key_is_version_2_and_a_default_key_stays_version_1() -> None:
    """Keys made before scopes existed (an admin key of a tenant, an
    operator key) are still the v1 bytes, byte for byte; a client key or
    an expiring key appends ``key_scope``."""
    plain = CreateApiKey("k", "acme", _SALT, _DIGEST, ADMIN_SCOPE)
    assert encode_command(plain) == _V1_KEY
    assert decode_command(_V1_KEY) == plain  # version 1 means the tenant's default scope
    operator = CreateApiKey("k", None, _SALT, _DIGEST, OPERATOR_SCOPE)
    assert encode_command(operator)[1] == 1 and decode_command(encode_command(operator)) == operator
    client = CreateApiKey("k", "acme", _SALT, _DIGEST, KeyScope("client", ("b", "a"), ("",)), 1_700)
    v2 = (
        bytes([3, 2])
        + _V1_KEY[2:]
        + b"\x00\x06client"
        + _prefixes(b"a", b"b")
        + _prefixes(b"")
        + _prefixes()
        + (1_700).to_bytes(8, "big")
    )
    assert encode_command(client) == v2
    assert decode_command(v2) == client
    expiring = CreateApiKey("k", "acme", _SALT, _DIGEST, ADMIN_SCOPE, expires_at_ms=5)
    assert encode_command(expiring)[1] == 2 and decode_command(encode_command(expiring)) == expiring


def test_a_stored_key_always_names_its_scope_and_only_a_principal_defaults_it() -> None:
    """``CreateApiKey``, ``ApiKeyRecord`` and ``ApiKeyInfo`` take the scope
    as a required field (no None standing in for "the default");
    ``Principal`` fills in its tenant's default when none is given."""
    with pytest.raises(TypeError, match="scope"):
        CreateApiKey("k", "acme", _SALT, _DIGEST)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="scope"):
        ApiKeyRecord("k", "acme", _SALT, _DIGEST, 1)  # type: ignore[call-arg]
    with pytest.raises(TypeError, match="scope"):
        ApiKeyInfo("k", "acme", 1)  # type: ignore[call-arg]
    assert Principal("k", "acme").scope == ADMIN_SCOPE and Principal("k", None).scope == OPERATOR_SCOPE
    client = KeyScope("client", ("a",))
    assert Principal("k", "acme", client, 5) == Principal("k", "acme", scope=client, expires_at_ms=5)
    assert replace(Principal("k", "acme", client), expires_at_ms=9).scope == client


def test_a_version_2_key_that_version_1_could_hold_is_malformed() -> None:
    default = bytes([3, 2]) + _V1_KEY[2:] + b"\x00\x05admin" + _prefixes() * 3 + bytes(8)
    with pytest.raises(MalformedCommand, match="version 1 holds it"):
        decode_command(default)


@pytest.mark.parametrize("prefixes", [_prefixes(b"b", b"a"), _prefixes(b"a", b"a")])
def test_prefixes_out_of_order_or_repeated_are_malformed(prefixes: bytes) -> None:
    """One spelling per scope: ``KeyScope`` sorts and deduplicates, so
    bytes that do not are no command raftlog writes."""
    data = bytes([3, 2]) + _V1_KEY[2:] + b"\x00\x06client" + prefixes + _prefixes() * 2 + bytes(8)
    with pytest.raises(MalformedCommand, match="sorted and distinct"):
        decode_command(data)


def test_set_quota_and_set_api_key_expiry_layouts() -> None:
    limits = QuotaLimits(produce_bytes_s=7, partitions=0)
    assert encode_command(SetQuota("acme", limits)) == (
        bytes([15, 1])
        + b"\x00\x04acme"
        + b"\x01"
        + (7).to_bytes(8, "big")
        + b"\x00" * 3
        + b"\x01"
        + bytes(8)
        + b"\x00" * 3
    )
    assert encode_command(SetQuota("", QuotaLimits())) == bytes([15, 1]) + b"\x00\x00" + b"\x00" * 8
    assert encode_command(SetApiKeyExpiry("k", 9)) == bytes([16, 1]) + b"\x00\x01k" + (9).to_bytes(8, "big")


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"", "shorter than a command header"),
        (b"\x01", "shorter than a command header"),
        (bytes([1, 0]) + b"\x00\x01a", "version 0"),
        (bytes([7, 1]) + bytes(8) + b"\x00\x03h:1\x00\x00\x02", "flag must be 0 or 1"),
        (bytes([1, 1]) + b"\x00\x02\xff\xfe", "not valid UTF-8"),
        (
            bytes([3, 1]) + b"\x00\x01a" + b"\x01" + b"\x00\x01t" + b"\x00\x00\x00\x00",
            "operator key with a tenant",
        ),
        (
            bytes([5, 1]) + b"\x00\x01t\x00\x01n" + bytes(4) + bytes(2) + b"\x00\x00" + b"\xff\xff\xff\xff",
            "runs past",
        ),
    ],
)
def test_malformed_bytes(data: bytes, match: str) -> None:
    with pytest.raises(MalformedCommand, match=match):
        decode_command(data)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (bytes([200, 1]), "unknown controller command kind 200"),
        (bytes([0, 1]), "unknown controller command kind 0"),
        (bytes([1, COMMAND_VERSION + 1]) + b"\x00\x01a", "CreateTenant version 2"),
        (bytes([5, 3]) + _V1_CREATE_TOPIC[2:], "CreateTopic version 3"),
        (bytes([14, 2]), "AlterTopicConfig version 2"),
        (bytes([3, 3]) + _V1_KEY[2:], "CreateApiKey version 3"),
        (bytes([15, 2]), "SetQuota version 2"),
        (bytes([17, 1]), "unknown controller command kind 17"),
    ],
)
def test_unknown_kinds_and_versions_are_unsupported(data: bytes, match: str) -> None:
    with pytest.raises(UnsupportedCommand, match=match):
        decode_command(data)


@pytest.mark.parametrize(
    "command",
    [
        RegisterNode(-1, "h:1", "", True),
        RegisterNode(2**64, "h:1", "", True),
        CreateTenant("x" * 70_000),
        CreateTopic("t", "n", -1, 1, None, None, ()),
        CreateTopic("t", "n", 1, 2**16, None, None, ()),
        CreateTopic("t", "n", 1, 1, 2**63, None, ()),
        PromoteLearner(1, 1, 1, 2**16),
        SetNodeLiveness(1, 1),  # type: ignore[arg-type]
        SetQuota("t", QuotaLimits(streams=2**63)),
        SetApiKeyExpiry("k", -(2**63) - 1),
        CreateApiKey("k", "t", b"", b"", KeyScope("client", ("x" * 70_000,))),
    ],
)
def test_values_that_do_not_fit_are_refused_at_encode(command: Command) -> None:
    with pytest.raises(ValueError):
        encode_command(command)


def test_unsupported_entry_stops_apply_and_changes_nothing() -> None:
    log = cluster(3, tenants=["acme"])
    before = log.state.snapshot()
    with pytest.raises(UnsupportedCommand):
        log.state.apply(log.next_index, bytes([CreateTenant.KIND, 9]) + b"\x00\x01b")
    assert log.state.snapshot() == before


def test_malformed_entry_is_rejected_like_a_noop() -> None:
    log = cluster(3, tenants=["acme"])
    twin = ControllerState.restore(log.state.snapshot())
    result = log.state.apply(log.next_index, b"\x01")
    twin.apply_noop(twin.applied_index + 1)
    assert isinstance(result, Rejected)
    assert result.reason is RejectReason.INVALID_COMMAND
    assert log.state.snapshot() == twin.snapshot()


def test_entries_must_come_in_order() -> None:
    log = cluster(1)
    index = log.state.applied_index
    data = encode_command(CreateTenant("x"))
    for bad in (index, index - 1):
        with pytest.raises(ValueError, match="out of order"):
            log.state.apply(bad, data)
        with pytest.raises(ValueError, match="out of order"):
            log.state.apply_noop(bad)
    assert log.state.tenant("x") is None
