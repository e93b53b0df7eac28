"""Where the ``raftlog`` CLI takes its API key from (issue 14): the
environment or ``--api-key-file``; ``--api-key`` still works but warns that
the key is visible in ``ps``. No cluster: the SDK's ``Admin`` is replaced by
a fake that records the key it was given."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import Any, ClassVar

import pytest

from cluster import cli

KEY = "rlk_0123abcd_secretsecretsecret"


class _FakeAdmin:
    """Stands in for ``client.admin.Admin``: records its keyword arguments."""

    made: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, bootstrap: list[str], **kwargs: Any) -> None:
        _FakeAdmin.made.append(kwargs)

    async def __aenter__(self) -> _FakeAdmin:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def list_tenants(self) -> list[Any]:
        return []


@pytest.fixture(autouse=True)
def fake_admin(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    monkeypatch.delenv("RAFTLOG_API_KEY", raising=False)
    monkeypatch.delenv("RAFTLOG_TENANT", raising=False)
    monkeypatch.setattr(cli, "Admin", _FakeAdmin)
    _FakeAdmin.made = []
    return _FakeAdmin.made


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = cli.main(["--bootstrap", "127.0.0.1:7001", *argv, "tenant", "list"])
    return code, capsys.readouterr().err


def _key_file(tmp_path: Path, text: str, mode: int = 0o600) -> str:
    path = tmp_path / "api.key"
    path.write_text(text)
    path.chmod(mode)
    return str(path)


def test_a_key_on_the_command_line_still_works_but_warns(
    capsys: pytest.CaptureFixture[str], fake_admin: list[dict[str, Any]]
) -> None:
    code, err = _run(capsys, "--api-key", KEY)
    assert code == 0
    assert fake_admin == [{"timeout_s": 10, "api_key": KEY, "tenant": None, "tls_ca": None}]
    assert err.strip() == cli.API_KEY_ON_COMMAND_LINE_WARNING
    assert "ps" in err and "RAFTLOG_API_KEY" in err and "--api-key-file" in err
    assert KEY not in err


def test_a_key_file_is_read_without_a_warning(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_admin: list[dict[str, Any]]
) -> None:
    code, err = _run(capsys, "--api-key-file", _key_file(tmp_path, f"  {KEY}\n\n"))
    assert (code, err) == (0, "")
    assert fake_admin[0]["api_key"] == KEY


def test_the_environment_is_used_without_a_warning(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], fake_admin: list[dict[str, Any]]
) -> None:
    monkeypatch.setenv("RAFTLOG_API_KEY", KEY)
    assert _run(capsys) == (0, "")
    assert fake_admin[0]["api_key"] == KEY


def test_a_key_file_wins_over_the_environment(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fake_admin: list[dict[str, Any]],
) -> None:
    monkeypatch.setenv("RAFTLOG_API_KEY", "rlk_from_the_environment")
    assert _run(capsys, "--api-key-file", _key_file(tmp_path, KEY)) == (0, "")
    assert fake_admin[0]["api_key"] == KEY


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660, 0o602])
def test_a_key_file_other_users_may_access_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fake_admin: list[dict[str, Any]], mode: int
) -> None:
    path = _key_file(tmp_path, KEY, mode)
    code, err = _run(capsys, "--api-key-file", path)
    assert code == 2
    assert fake_admin == []  # nothing was sent anywhere
    assert err.startswith("raftlog: ") and len(err.strip().splitlines()) == 1
    assert f"chmod 600 {path}" in err and f"{mode:04o}" in err
    assert KEY not in err


@pytest.mark.parametrize(
    ("text", "says"),
    [("", "is empty"), (" \n\t\n", "is empty"), (f"{KEY}\nrlk_other\n", "more than one"), (None, "No such")],
)
def test_an_unusable_key_file_is_a_usage_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fake_admin: list[dict[str, Any]],
    text: str | None,
    says: str,
) -> None:
    path = str(tmp_path / "missing.key") if text is None else _key_file(tmp_path, text)
    code, err = _run(capsys, "--api-key-file", path)
    assert code == 2 and fake_admin == []
    assert says in err and path in err and len(err.strip().splitlines()) == 1


def test_a_key_from_a_pipe_is_read(
    capsys: pytest.CaptureFixture[str], fake_admin: list[dict[str, Any]]
) -> None:
    """``--api-key-file <(pass show raftlog)``: a pipe has no mode to check."""
    read_end, write_end = os.pipe()
    try:
        os.write(write_end, f"{KEY}\n".encode())
        os.close(write_end)
        assert _run(capsys, "--api-key-file", f"/dev/fd/{read_end}") == (0, "")
    finally:
        os.close(read_end)
    assert fake_admin[0]["api_key"] == KEY


def test_only_a_regular_files_mode_is_checked(capsys: pytest.CaptureFixture[str]) -> None:
    """/dev/null is 0666, but a device's mode says nothing about a key in it."""
    code, err = _run(capsys, "--api-key-file", "/dev/null")
    assert code == 2 and "is empty" in err


def test_a_key_and_a_key_file_together_are_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as usage:
        _run(capsys, "--api-key", KEY, "--api-key-file", _key_file(tmp_path, KEY))
    assert usage.value.code == 2
