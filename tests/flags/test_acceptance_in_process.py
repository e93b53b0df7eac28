"""Acceptance (issue 16): the real ``openfeature-sdk`` + ``openfeature-provider-flagd``
in IN_PROCESS mode (flagd.sync.v1 SyncFlags; the provider evaluates with
openfeature-flagd-core) against a flag server process on a real 3-node cluster;
flags written through the flag server's admin API.

Covered: every flag type with zero values as real variants, targeting, disabled
flags, flag and flag-set metadata, fractional splits that land every targeting key
in the same variant whether the server (RPC mode) or the provider evaluates, a
change arriving as a new sync snapshot, the SDK key as selector or as
``authorization: Bearer``, and keys the server must refuse.
"""

from __future__ import annotations

import pytest
from openfeature.contrib.provider.flagd.config import CacheType, ResolverType
from openfeature.flag_evaluation import Reason

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
    fractional_answers,
    string_flag,
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

IN_PROCESS = ResolverType.IN_PROCESS


stack, providers, two_tenants = acceptance_fixtures("acceptance-in-process")


def test_every_type_zero_values_targeting_disabled_and_metadata(stack: Stack, providers: Providers) -> None:
    _, key = stack.tenant_with_flags()
    connected = providers.connect(IN_PROCESS, stack.server.sync_address, selector=key)
    check_every_type(connected)
    check_targeting(connected)
    assert connected.details("boolean", "with-metadata", False).flag_metadata == SET_METADATA | FLAG_METADATA
    assert connected.details("boolean", "bool-flag", False).flag_metadata == SET_METADATA


def test_fractional_lands_each_key_in_the_same_variant_on_the_server_and_in_process(
    stack: Stack, providers: Providers
) -> None:
    _, key = stack.tenant_with_flags()
    served = providers.connect(
        ResolverType.RPC, stack.server.eval_address, selector=key, cache=CacheType.DISABLED
    )
    local = providers.connect(IN_PROCESS, stack.server.sync_address, selector=key)
    by_server, in_process = fractional_answers(served), fractional_answers(local)
    assert by_server == in_process
    # Every bucket is used, and every answer comes from the split (flagd's reason for it).
    assert {row[0] for row in by_server} == {"red", "green", "blue"}
    assert {row[3] for row in by_server} == {"a", "b"}
    assert {row[1] for row in by_server} == {Reason.TARGETING_MATCH}


def test_a_change_arrives_as_a_new_snapshot(stack: Stack, providers: Providers) -> None:
    tenant, key = stack.tenant_with_flags()
    connected = providers.connect(IN_PROCESS, stack.server.sync_address, selector=key)
    assert connected.details("boolean", "bool-flag", False).value is True

    tenant.put_flag("bool-flag", bool_flag("off"))
    until(lambda: connected.details("boolean", "bool-flag", True).value is False, what="bool-flag off")
    tenant.put_flag("added-later", string_flag("hello"))
    until(lambda: connected.details("string", "added-later", "x").value == "hello", what="added-later")
    tenant.set_enabled("string-flag", False)
    until(lambda: connected.details("string", "string-flag", "x").reason == Reason.DISABLED, what="disabled")
    tenant.delete_flag("int-flag")
    until(lambda: connected.details("integer", "int-flag", 5).value == 5, what="int-flag deleted")
    # The SDK runs event handlers apart from evaluations: the last change's
    # event may follow the evaluation that already sees it.
    changed = {"bool-flag", "added-later", "string-flag", "int-flag"}
    until(
        lambda: changed <= set(connected.changed_keys()), what=f"configuration-changed events for {changed}"
    )
    # Untouched flags kept their answers through every snapshot.
    assert connected.details("float", "float-zero", 1.5).value == 0.0


def test_bearer_key_through_channel_credentials(stack: Stack, providers: Providers) -> None:
    _, key = stack.tenant_with_flags()
    connected = providers.connect(
        IN_PROCESS, stack.server.sync_address, channel_credentials=bearer_credentials(key)
    )
    check_every_type(connected)


def test_each_tenant_gets_its_own_flags_under_the_same_names(stack: Stack, providers: Providers) -> None:
    check_each_tenant_reads_its_own_flags(stack, providers, IN_PROCESS)


@pytest.mark.parametrize("how", BAD_KEYS)
def test_a_key_the_server_must_refuse(
    stack: Stack, providers: Providers, two_tenants: TwoTenants, how: str
) -> None:
    check_a_bad_key_is_refused(stack, providers, two_tenants, how, IN_PROCESS)


def test_another_tenants_key_cannot_select_this_tenant(
    stack: Stack, providers: Providers, two_tenants: TwoTenants
) -> None:
    check_another_tenants_key_cannot_select(stack, providers, two_tenants, IN_PROCESS)
