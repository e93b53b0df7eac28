"""``WhoAmI`` on a real node (the real ``Authenticator``): a tenant key learns
its tenant and id, an operator key acts in the tenant its header names, a
tenant key naming another tenant and a revoked key are refused."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from client import AuthenticationError, UnknownTenantError
from client.admin import Admin
from harness.local_cluster import LocalCluster

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("whoami"), nodes=1, topics=[])
    c.start_all()
    yield c
    c.close()


async def test_who_am_i_names_the_keys_tenant_and_id_and_refuses_bad_keys(cluster: LocalCluster) -> None:
    bootstrap = list(cluster.addresses.values())
    async with Admin(bootstrap, api_key=cluster.api_key) as operator:
        created = await operator.create_tenant("acme")
        await operator.create_tenant("globex")
        me = await operator.who_am_i()
        assert me.operator and me.key_id and me.key_id not in cluster.api_key.split("_")[-1]
        assert me.tenant == "default"
        acting = await operator.who_am_i(api_key=cluster.api_key, tenant="globex")
        assert (acting.tenant, acting.operator) == ("globex", True)

        acme_key = created.api_key.clear_text
        acme = await operator.who_am_i(api_key=acme_key)
        assert (acme.tenant, acme.key_id, acme.operator) == ("acme", created.api_key.key_id, False)
        with pytest.raises(UnknownTenantError):
            await operator.who_am_i(api_key=acme_key, tenant="globex")

        await operator.revoke_api_key(created.api_key.key_id)
        with pytest.raises(AuthenticationError):
            await operator.who_am_i(api_key=acme_key)
