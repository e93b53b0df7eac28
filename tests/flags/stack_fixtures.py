"""Set-up shared by the tests that run a flag server *process* on a real cluster.

- ``cluster_and_flag_server(name)``: module-scoped ``cluster`` and
  ``flag_server`` fixtures (test_flags_cli.py, test_server_process.py).
- ``acceptance_fixtures(name)``: module-scoped ``stack`` (one
  acceptance_fixtures ``Stack`` per module: the failover module kills
  things the others must not see), per-test ``providers`` (shut down after
  the test) and module-scoped ``two_tenants`` (read-only refusal tests).
- The acceptance checks that hold for both provider modes (RPC on the
  evaluation port, IN_PROCESS on the sync port): each tenant reads its own
  flags under the same names, and the keys the server must refuse.

The factories return fresh fixture functions; a test module binds them to
the fixture names (``cluster, flag_server = cluster_and_flag_server("cli")``),
which is what pytest looks them up by.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from openfeature.contrib.provider.flagd.config import ResolverType

from harness.flag_server import FlagServerProcess
from harness.local_cluster import LocalCluster
from tests.flags.acceptance_fixtures import (
    FLAG_SET,
    Providers,
    Stack,
    TenantFlags,
    bad_key,
    bearer_credentials,
    bool_flag,
    refused,
    running_stack,
)

TwoTenants = tuple[tuple[TenantFlags, str], tuple[TenantFlags, str]]


def cluster_and_flag_server(name: str) -> tuple[Any, Any]:
    """``(cluster, flag_server)`` module fixtures: a 3-node cluster and a flag
    server process on it, in temporary folders named after ``name``."""

    @pytest.fixture(scope="module")
    def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
        started = LocalCluster(tmp_path_factory.mktemp(f"{name}-cluster"), topics=())
        started.start_all()
        yield started
        started.close()

    @pytest.fixture(scope="module")
    def flag_server(
        cluster: LocalCluster, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[FlagServerProcess]:
        server = FlagServerProcess(
            tmp_path_factory.mktemp(f"{name}-server"), list(cluster.addresses.values()), cluster.api_key
        )
        server.start()
        yield server
        server.close()

    return cluster, flag_server


def acceptance_fixtures(name: str) -> tuple[Any, Any, Any]:
    """``(stack, providers, two_tenants)`` fixtures (module docstring)."""

    @pytest.fixture(scope="module")
    def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
        with running_stack(Path(tmp_path_factory.mktemp(name))) as running:
            yield running

    @pytest.fixture
    def providers() -> Iterator[Providers]:
        started = Providers()
        yield started
        started.close()

    @pytest.fixture(scope="module")
    def two_tenants(stack: Stack) -> TwoTenants:
        """Two tenants with the same flags, each with an SDK key (the refusal tests only read)."""
        return stack.tenant_with_flags("mine"), stack.tenant_with_flags("theirs")

    return stack, providers, two_tenants


def address_of(stack: Stack, mode: ResolverType) -> str:
    """Where a provider in ``mode`` connects: RPC evaluates on the evaluation
    port, IN_PROCESS syncs from the sync port."""
    return stack.server.eval_address if mode is ResolverType.RPC else stack.server.sync_address


def check_each_tenant_reads_its_own_flags(stack: Stack, providers: Providers, mode: ResolverType) -> None:
    _, acme_key = stack.tenant_with_flags("acme")
    other_set = FLAG_SET | {"flags": FLAG_SET["flags"] | {"bool-flag": bool_flag("off")}}
    _, globex_key = stack.tenant_with_flags("globex", other_set)
    acme = providers.connect(mode, address_of(stack, mode), selector=acme_key)
    globex = providers.connect(mode, address_of(stack, mode), selector=globex_key)
    assert acme.details("boolean", "bool-flag", False).value is True
    assert globex.details("boolean", "bool-flag", True).value is False


def check_a_bad_key_is_refused(
    stack: Stack, providers: Providers, two_tenants: TwoTenants, how: str, mode: ResolverType
) -> None:
    """``how``: one of acceptance_fixtures' ``BAD_KEYS``, as the selector."""
    (tenant, key), (_, other_key) = two_tenants
    selector = bad_key(how, tenant, key, other_key)
    refused(providers.connect(mode, address_of(stack, mode), selector=selector, expect_ready=False))


def check_another_tenants_key_cannot_select(
    stack: Stack, providers: Providers, two_tenants: TwoTenants, mode: ResolverType
) -> None:
    """A Bearer key of one tenant with the other tenant's key as selector:
    refused, not answered from either tenant."""
    (_, key), (_, other_key) = two_tenants
    connected = providers.connect(
        mode,
        address_of(stack, mode),
        channel_credentials=bearer_credentials(other_key),
        selector=key,
        expect_ready=False,
    )
    refused(connected)
