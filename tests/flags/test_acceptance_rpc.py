"""Acceptance (issue 16): the real ``openfeature-sdk`` + ``openfeature-provider-flagd``
in RPC mode (flagd.evaluation.v2 and its EventStream) against a flag server process
on a real 3-node cluster; flags written through the flag server's admin API.

Covered: every flag type with zero values as real variants, targeting, disabled
flags and flags without a default, flag and flag-set metadata, a change arriving as
a ``configuration_change`` event that drops the provider's cached value, the SDK
key as selector or as ``authorization: Bearer``, and keys the server must refuse
(missing, wrong, revoked, a cluster API key, another tenant's) without ever
answering with another tenant's flags.
"""

from __future__ import annotations

import grpc
import pytest
from google.protobuf.json_format import MessageToDict
from google.protobuf.struct_pb2 import Struct
from openfeature.contrib.provider.flagd.config import CacheType, ResolverType
from openfeature.flag_evaluation import Reason
from openfeature.schemas.protobuf.flagd.evaluation.v2 import evaluation_pb2, evaluation_pb2_grpc

from tests.flags.acceptance_fixtures import (
    BAD_KEYS,
    FLAG_METADATA,
    SET_METADATA,
    Providers,
    Stack,
    bearer_credentials,
    bool_flag,
    check_every_type,
    check_targeting,
    until,
)
from tests.flags.stack_fixtures import (
    TwoTenants,
    acceptance_fixtures,
    check_a_bad_key_is_refused,
    check_another_tenants_key_cannot_select,
    check_each_tenant_reads_its_own_flags,
)

pytestmark = pytest.mark.timeout(120)

RPC = ResolverType.RPC


stack, providers, two_tenants = acceptance_fixtures("acceptance-rpc")


def test_every_type_zero_values_targeting_and_disabled(stack: Stack, providers: Providers) -> None:
    _, key = stack.tenant_with_flags()
    connected = providers.connect(RPC, stack.server.eval_address, selector=key)
    check_every_type(connected)
    check_targeting(connected)


def test_flag_and_flag_set_metadata_on_the_wire(stack: Stack) -> None:
    """The RPC provider (0.x) drops ``metadata`` from the answer, so the
    evaluation v2 answer it reads is checked as the provider receives it."""
    _, key = stack.tenant_with_flags()
    with grpc.insecure_channel(stack.server.eval_address) as channel:
        stub = evaluation_pb2_grpc.ServiceStub(channel)
        selector = (("flagd-selector", key),)
        request = evaluation_pb2.ResolveBooleanRequest(flag_key="with-metadata", context=Struct())
        answer = stub.ResolveBoolean(request, metadata=selector, timeout=5)
        assert (answer.value, answer.variant, answer.reason) == (True, "on", "STATIC")
        assert MessageToDict(answer.metadata) == SET_METADATA | FLAG_METADATA
        # A flag without metadata of its own still carries the set's.
        request = evaluation_pb2.ResolveBooleanRequest(flag_key="bool-flag", context=Struct())
        assert (
            MessageToDict(stub.ResolveBoolean(request, metadata=selector, timeout=5).metadata) == SET_METADATA
        )


def test_a_change_arrives_as_configuration_change_and_drops_the_cached_value(
    stack: Stack, providers: Providers
) -> None:
    tenant, key = stack.tenant_with_flags()
    connected = providers.connect(RPC, stack.server.eval_address, selector=key)
    first = connected.details("boolean", "bool-flag", False)
    again = connected.details("boolean", "bool-flag", False)
    assert (first.value, first.reason, again.value, again.reason) == (
        True,
        Reason.STATIC,
        True,
        Reason.CACHED,
    )

    tenant.put_flag("bool-flag", bool_flag("off"))
    until(lambda: "bool-flag" in connected.changed_keys(), what="configuration_change naming bool-flag")
    # The event came after the server applied the change and after the provider
    # dropped its cached answer: the very next evaluation is the new value.
    after = connected.details("boolean", "bool-flag", True)
    assert (after.value, after.variant, after.reason) == (False, "off", Reason.STATIC)

    tenant.set_enabled("string-flag", False)
    until(lambda: "string-flag" in connected.changed_keys(), what="configuration_change naming string-flag")
    assert connected.details("string", "string-flag", "dflt").reason == Reason.DISABLED
    tenant.delete_flag("int-flag")
    until(lambda: "int-flag" in connected.changed_keys(), what="configuration_change naming int-flag")
    assert connected.details("integer", "int-flag", 5).value == 5
    # Only the flags that changed were named.
    assert set(connected.changed_keys()) == {"bool-flag", "string-flag", "int-flag"}


def test_bearer_key_through_channel_credentials(stack: Stack, providers: Providers) -> None:
    _, key = stack.tenant_with_flags()
    connected = providers.connect(
        RPC, stack.server.eval_address, channel_credentials=bearer_credentials(key), cache=CacheType.DISABLED
    )
    check_every_type(connected)


def test_each_tenant_sees_its_own_flags_under_the_same_names(stack: Stack, providers: Providers) -> None:
    check_each_tenant_reads_its_own_flags(stack, providers, RPC)


@pytest.mark.parametrize("how", BAD_KEYS)
def test_a_key_the_server_must_refuse(
    stack: Stack, providers: Providers, two_tenants: TwoTenants, how: str
) -> None:
    check_a_bad_key_is_refused(stack, providers, two_tenants, how, RPC)


def test_another_tenants_key_cannot_select_this_tenant(
    stack: Stack, providers: Providers, two_tenants: TwoTenants
) -> None:
    check_another_tenants_key_cannot_select(stack, providers, two_tenants, RPC)
