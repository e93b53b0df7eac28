"""Tenant quotas and scoped keys through the ``raftlog`` CLI against a real
3-node cluster (issue 18): an operator sets a tenant's quotas on one node
and reads them back on another; the topics quota refuses a create; a tenant
admin key makes a client key limited to a topic prefix, which produces and
consumes there and may do nothing else; rotation with no grace retires the
old key at once, and revocation removes the new one."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator

import pytest

from cluster.cli import main
from harness.local_cluster import LocalCluster

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    c = LocalCluster(tmp_path_factory.mktemp("tenant-admin"))
    c.start_all()
    yield c
    c.close()


def run(
    cluster: LocalCluster,
    capsys: pytest.CaptureFixture[str],
    key: str,
    *argv: str,
    node: int = 1,
    stdin: str = "",
) -> tuple[int, str, str]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAFTLOG_API_KEY", key)
        env.delenv("RAFTLOG_TENANT", raising=False)
        env.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(stdin.encode())))
        code = main(["--bootstrap", cluster.addresses[node], *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_quotas_and_a_scoped_key_round_trip(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str]
) -> None:
    operator = cluster.api_key
    code, admin_key, err = run(cluster, capsys, operator, "tenant", "create", "acme")
    assert code == 0, err
    admin_key = admin_key.strip()

    # An operator sets quotas on node 1 ...
    code, out, err = run(
        cluster, capsys, operator,
        "tenant", "quota", "set", "acme", "--produce-mb-s", "2.5", "--topics", "1", "--partitions", "4",
    )  # fmt: skip
    assert code == 0, err
    assert "2.5 MB/s" in out
    # ... a tenant key may not.
    code, _, err = run(cluster, capsys, admin_key, "tenant", "quota", "set", "acme", "--topics", "9")
    assert code == 1 and "OPERATOR_KEY_REQUIRED" in err

    # The tenant admin creates its one topic (reading its own quota on node 3).
    assert run(cluster, capsys, admin_key, "topic", "create", "orders.eu", "--partitions", "2")[0] == 0
    code, _, err = run(cluster, capsys, admin_key, "topic", "create", "other")
    assert code == 1 and "QUOTA_EXCEEDED" in err and "1 of its 1 topics" in err
    code, out, err = run(cluster, capsys, admin_key, "tenant", "describe", "acme", "--json", node=3)
    assert code == 0, err
    described = json.loads(out)
    assert described["effective"]["produce_bytes_s"] == 2_500_000
    assert (described["effective"]["topics"], described["effective"]["partitions"]) == (1, 4)
    assert described["overrides"]["fetch_bytes_s"] is None
    assert (described["usage"]["topics"], described["usage"]["partitions"]) == (1, 2)
    code, out, _ = run(cluster, capsys, operator, "tenant", "describe", "acme", node=2)
    assert code == 0 and "unlimited" in out and "tenant" in out

    # A client key for the orders. prefix, made by the tenant admin.
    code, client_key, err = run(
        cluster, capsys, admin_key,
        "key", "create", "--role", "client", "--produce", "orders.", "--consume", "orders.", "--ttl", "1d",
    )  # fmt: skip
    assert code == 0, err
    client_key = client_key.strip()
    code, _, err = run(cluster, capsys, client_key, "produce", "orders.eu", stdin="one\ntwo\n", node=2)
    assert code == 0, err
    code, out, err = run(
        cluster, capsys, client_key,
        "consume", "orders.eu", "--from-beginning", "--max-records", "2", "--timeout", "10", node=3,
    )  # fmt: skip
    assert code == 0 and sorted(out.split()) == ["one", "two"], err
    for argv in (("key", "list"), ("topic", "create", "orders.x"), ("tenant", "describe", "acme")):
        code, _, err = run(cluster, capsys, client_key, *argv)
        assert code == 1 and "KEY_SCOPE" in err, argv

    code, out, _ = run(cluster, capsys, admin_key, "key", "list", "--json")
    listed = {k["role"]: k for k in json.loads(out)}
    assert code == 0 and set(listed) == {"admin", "client"}
    assert listed["client"]["produce_prefixes"] == ["orders."] and listed["client"]["expires_at_ms"]
    client_id = listed["client"]["key_id"]

    # Rotation with no grace: the new key works, the old one stops at once.
    code, new_key, err = run(cluster, capsys, admin_key, "key", "rotate", client_id, "--grace", "0")
    assert code == 0, err
    new_key = new_key.strip()
    assert run(cluster, capsys, new_key, "produce", "orders.eu", stdin="three\n", node=3)[0] == 0
    code, _, err = run(cluster, capsys, client_key, "produce", "orders.eu", stdin="four\n", node=2)
    assert code == 1 and "API_KEY_EXPIRED" in err
    # A tenant admin cannot touch the operator's keys; it can revoke its own.
    code, out, _ = run(cluster, capsys, operator, "key", "list", "--operator", "--json")
    operator_id = json.loads(out)[0]["key_id"]
    code, _, err = run(cluster, capsys, admin_key, "key", "revoke", operator_id)
    assert code == 1 and "UNKNOWN_API_KEY" in err
    new_id = next(k["key_id"] for k in json.loads(run(cluster, capsys, admin_key, "key", "list", "--json")[1])
                  if k["key_id"] != client_id and k["role"] == "client")  # fmt: skip
    assert run(cluster, capsys, admin_key, "key", "revoke", new_id)[0] == 0
    code, _, err = run(cluster, capsys, new_key, "produce", "orders.eu", stdin="five\n", node=2)
    assert code == 1 and "INVALID_API_KEY" in err
