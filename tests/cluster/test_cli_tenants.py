"""``raftlog tenant quota set|describe`` and ``raftlog key ...`` (issue 18),
without a cluster: the SDK's ``Admin`` is replaced by a fake that records
what the CLI asked and answers canned messages. What is checked: flag
values reach the SDK in its units (MB and GB to bytes), ``default``
resets, bad values are usage errors before anything is sent, unmeasured
usage is shown as not measured (never 0), and clear keys go alone to
stdout."""

from __future__ import annotations

import json
from types import TracebackType
from typing import Any, ClassVar

import pytest

from cluster import cli
from raftlog.v1 import admin_pb2

QUOTA = admin_pb2.QuotaSettings


class FakeAdmin:
    """Stands in for ``client.admin.Admin``: records calls, answers canned."""

    calls: ClassVar[list[tuple[str, tuple[Any, ...], dict[str, Any]]]] = []
    described: ClassVar[admin_pb2.DescribeTenantResponse] = admin_pb2.DescribeTenantResponse()

    def __init__(self, bootstrap: list[str], **kwargs: Any) -> None:
        pass

    async def __aenter__(self) -> FakeAdmin:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    def _record(self, name: str, *args: Any, **kwargs: Any) -> None:
        FakeAdmin.calls.append((name, args, kwargs))

    async def set_tenant_quota(self, tenant: str, **kwargs: Any) -> admin_pb2.SetTenantQuotaResponse:
        self._record("set_tenant_quota", tenant, **kwargs)
        return admin_pb2.SetTenantQuotaResponse(
            effective=QUOTA(produce_bytes_s=2_500_000, partitions=1000),
            overrides=QUOTA(produce_bytes_s=2_500_000),
        )

    async def describe_tenant(self, tenant: str) -> admin_pb2.DescribeTenantResponse:
        self._record("describe_tenant", tenant)
        return FakeAdmin.described

    async def create_api_key(self, tenant: str | None, **kwargs: Any) -> admin_pb2.ApiKey:
        self._record("create_api_key", tenant, **kwargs)
        return admin_pb2.ApiKey(key_id="00ff", tenant=tenant or "", role="client", clear_text="rlk_CLEAR")

    async def list_api_keys(self, tenant: str | None) -> list[admin_pb2.ApiKey]:
        self._record("list_api_keys", tenant)
        return [
            admin_pb2.ApiKey(key_id="00aa", tenant="acme", role="admin"),
            admin_pb2.ApiKey(
                key_id="00bb", tenant="acme", role="client", produce_prefixes=["orders."], expires_at_ms=1000
            ),
        ]

    async def rotate_api_key(
        self, key_id: str, grace_seconds: int, **kwargs: Any
    ) -> admin_pb2.RotateApiKeyResponse:
        self._record("rotate_api_key", key_id, grace_seconds, **kwargs)
        return admin_pb2.RotateApiKeyResponse(
            api_key=admin_pb2.ApiKey(key_id="00cc", clear_text="rlk_NEW"), old_expires_at_ms=86_400_000
        )

    async def revoke_api_key(self, key_id: str) -> None:
        self._record("revoke_api_key", key_id)


@pytest.fixture(autouse=True)
def fake_admin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAFTLOG_API_KEY", "rlk_test")
    monkeypatch.setattr(cli, "Admin", FakeAdmin)
    FakeAdmin.calls = []
    FakeAdmin.described = admin_pb2.DescribeTenantResponse()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = cli.main(["--bootstrap", "127.0.0.1:7001", *argv])
    except SystemExit as exit_:  # argparse's usage errors
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_quota_set_sends_bytes_and_counts_and_default_resets(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "tenant", "quota", "set", "acme",
        "--produce-mb-s", "2.5", "--fetch-mb-s", "default", "--requests-s", "100",
        "--storage-gb", "0.5", "--partitions", "0", "--topics", "7", "--groups", "default", "--streams", "3",
    )  # fmt: skip
    assert code == 0
    ((name, args, kwargs),) = FakeAdmin.calls
    assert (name, args) == ("set_tenant_quota", ("acme",))
    assert kwargs == {
        "produce_bytes_s": 2_500_000,
        "requests_s": 100,
        "storage_bytes": 500_000_000,
        "partitions": 0,
        "topics": 7,
        "streams": 3,
        "reset": ["fetch_bytes_s", "groups"],
    }
    assert "2.5 MB/s" in out and "unlimited" in out


@pytest.mark.parametrize(
    ("flag", "value", "said"),
    [
        ("--partitions", "-1", "cannot be negative"),
        ("--produce-mb-s", "-0.000001", "cannot be negative"),
        ("--topics", "1.5", "whole number"),
        ("--storage-gb", "lots", "a number"),
        ("--storage-gb", "nan", "cannot be negative"),
        ("--storage-gb", "1e300", "too large"),
    ],
)
def test_a_bad_limit_is_a_usage_error_and_nothing_is_sent(
    capsys: pytest.CaptureFixture[str], flag: str, value: str, said: str
) -> None:
    code, _, err = run(capsys, "tenant", "quota", "set", "acme", f"{flag}={value}")
    assert code == 2 and said in err
    assert FakeAdmin.calls == []


def test_quota_set_without_a_limit_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "tenant", "quota", "set", "acme")
    assert code == 2 and "--produce-mb-s" in err
    assert FakeAdmin.calls == []


def test_describe_shows_limits_their_source_and_only_measured_usage(
    capsys: pytest.CaptureFixture[str],
) -> None:
    FakeAdmin.described = admin_pb2.DescribeTenantResponse(
        tenant="acme",
        effective=QUOTA(produce_bytes_s=10_000_000, partitions=1000, topics=5),
        overrides=QUOTA(produce_bytes_s=10_000_000),
        usage=admin_pb2.TenantUsage(partitions=12, topics=0),
    )
    code, out, err = run(capsys, "tenant", "describe", "acme")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert rows["produce_bytes_s"] == ["produce_bytes_s", "10", "MB/s", "tenant", "-"]
    assert rows["partitions"] == ["partitions", "1000", "default", "12"]
    assert rows["topics"] == ["topics", "5", "default", "0"]
    assert rows["storage_bytes"] == ["storage_bytes", "unlimited", "default", "-"]
    assert "not measured" in err and "storage_bytes" in err and "partitions" not in err


def test_describe_rounds_measured_usage_but_never_a_limit(capsys: pytest.CaptureFixture[str]) -> None:
    FakeAdmin.described = admin_pb2.DescribeTenantResponse(
        tenant="acme",
        effective=QUOTA(produce_bytes_s=1_234_567, storage_bytes=2_500_000_000),
        overrides=QUOTA(produce_bytes_s=1_234_567),
        usage=admin_pb2.TenantUsage(produce_bytes_s=1_310_240, storage_bytes=7_169_360, requests_s=16),
    )
    code, out, _ = run(capsys, "tenant", "describe", "acme")
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines()[2:]}
    assert rows["produce_bytes_s"] == ["produce_bytes_s", "1.23457", "MB/s", "tenant", "1.31", "MB/s"]
    assert rows["storage_bytes"] == ["storage_bytes", "2.5", "GB", "default", "0.00717", "GB"]
    assert rows["requests_s"][-1] == "16/s"


def test_describe_json_has_every_field_with_null_where_unset(capsys: pytest.CaptureFixture[str]) -> None:
    FakeAdmin.described = admin_pb2.DescribeTenantResponse(
        tenant="acme", effective=QUOTA(partitions=1000), usage=admin_pb2.TenantUsage(partitions=2, topics=1)
    )
    code, out, _ = run(capsys, "tenant", "describe", "acme", "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["tenant"] == "acme"
    assert shown["effective"]["partitions"] == 1000 and shown["effective"]["topics"] is None
    assert shown["overrides"] == dict.fromkeys(shown["overrides"])  # all None
    assert len(shown["usage"]) == 8
    assert (shown["usage"]["partitions"], shown["usage"]["topics"], shown["usage"]["storage_bytes"]) == (
        2,
        1,
        None,
    )


def test_key_create_sends_the_scope_and_prints_only_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        "key", "create", "--tenant", "acme", "--role", "client",
        "--produce", "orders.", "--produce", "audit.", "--consume", "", "--group", "billing-", "--ttl", "30d",
    )  # fmt: skip
    assert code == 0 and out == "rlk_CLEAR\n" and "00ff" in err
    assert FakeAdmin.calls == [
        (
            "create_api_key",
            ("acme",),
            {
                "role": "client",
                "produce_prefixes": ["orders.", "audit."],
                "consume_prefixes": [""],
                "group_prefixes": ["billing-"],
                "ttl_seconds": 30 * 86400,
            },
        )
    ]


def test_key_create_operator_and_default_tenant(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, "key", "create", "--role", "operator")[0] == 0
    assert run(capsys, "key", "create")[0] == 0
    assert [(c[1], c[2]["role"]) for c in FakeAdmin.calls] == [((None,), ""), (("",), "admin")]
    code, _, err = run(capsys, "key", "create", "--role", "operator", "--tenant", "acme")
    assert code == 2 and "no tenant" in err and len(FakeAdmin.calls) == 2


@pytest.mark.parametrize("ttl", ["30x", "-1d", "1.5h", "99999999999d"])
def test_a_bad_duration_is_a_usage_error(capsys: pytest.CaptureFixture[str], ttl: str) -> None:
    code, _, _ = run(capsys, "key", "create", f"--ttl={ttl}")
    assert code == 2 and FakeAdmin.calls == []


def test_key_rotate_revoke_and_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "key", "rotate", "00bb", "--grace", "15m")
    assert code == 0 and out == "rlk_NEW\n" and "1970-01-02T00:00:00Z" in err
    assert run(capsys, "key", "rotate", "00bb", "--ttl", "2h")[0] == 0
    assert run(capsys, "key", "revoke", "00bb")[0] == 0
    code, out, _ = run(capsys, "key", "list", "--tenant", "acme")
    assert code == 0
    assert FakeAdmin.calls == [
        ("rotate_api_key", ("00bb", 900), {"ttl_seconds": 0}),
        ("rotate_api_key", ("00bb", 3600), {"ttl_seconds": 7200}),
        ("revoke_api_key", ("00bb",), {}),
        ("list_api_keys", ("acme",), {}),
    ]
    admin_row, client_row = out.splitlines()
    assert "admin" in admin_row and "never" in admin_row
    assert "expired" in client_row and "produce='orders.'" in client_row
    assert run(capsys, "key", "list", "--operator")[0] == 0
    assert FakeAdmin.calls[-1] == ("list_api_keys", (None,), {})


def test_key_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "key", "list", "--json")
    assert code == 0 and FakeAdmin.calls == [("list_api_keys", ("",), {})]
    listed = json.loads(out)
    assert listed[1] == {
        "key_id": "00bb",
        "tenant": "acme",
        "role": "client",
        "produce_prefixes": ["orders."],
        "consume_prefixes": [],
        "group_prefixes": [],
        "expires_at_ms": 1000,
    }
    assert listed[0]["expires_at_ms"] is None
