"""``raftlog flags ...`` end to end: the CLI (cluster/cli.py dispatching to
flags/cli.py) against a flag server process on a real 3-node cluster.

Most commands run in this process through ``cluster.cli.main`` (what the
``raftlog`` script calls), with the key and the server address in the
environment as a user would set them; one runs as a real subprocess. Each
test uses environments of its own, so the tests do not depend on each
other's order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cluster.cli import main
from harness.flag_server import FlagServerProcess
from harness.local_cluster import LocalCluster
from tests.flags.stack_fixtures import cluster_and_flag_server

pytestmark = pytest.mark.timeout(180)

WELCOME = {
    "state": "ENABLED",
    "variants": {"on": True, "off": False},
    "defaultVariant": "off",
    "targeting": {"if": [{"ends_with": [{"var": "email"}, "@example.com"]}, "on", None]},
}


cluster, flag_server = cluster_and_flag_server("flags-cli")


class Cli:
    """``raftlog`` in this process, as the operator (or with another key)."""

    def __init__(
        self, cluster: LocalCluster, server: FlagServerProcess, capsys: pytest.CaptureFixture[str]
    ) -> None:
        self.cluster, self.server, self.capsys = cluster, server, capsys

    def __call__(self, *argv: str, key: str | None = None) -> tuple[int, str, str]:
        with pytest.MonkeyPatch.context() as env:
            env.setenv("RAFTLOG_API_KEY", key or self.cluster.api_key)
            env.setenv("RAFTLOG_FLAGS", self.server.eval_address)
            env.setenv("RAFTLOG_BOOTSTRAP", self.cluster.addresses[1])
            env.delenv("RAFTLOG_TENANT", raising=False)
            code = main(list(argv))
        out, err = self.capsys.readouterr()
        return code, out, err

    def ok(self, *argv: str, key: str | None = None) -> tuple[str, str]:
        code, out, err = self(*argv, key=key)
        assert code == 0, f"raftlog {' '.join(argv)} -> {code}: {err}\n{self.server.log_tail()}"
        return out, err


@pytest.fixture
def cli(cluster: LocalCluster, flag_server: FlagServerProcess, capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(cluster, flag_server, capsys)


def _write(path: Path, document: object) -> str:
    path.write_text(json.dumps(document))
    return str(path)


def _version(stderr: str) -> int:
    """The version a write reports: ``... (version N)``."""
    return int(stderr.rsplit("version ", 1)[1].split(")")[0])


def test_env_create_and_list(cli: Cli) -> None:
    _, err = cli.ok("flags", "env", "create", "cli-envs")
    assert err.startswith("created environment cli-envs (version ")
    out, _ = cli.ok("flags", "env", "list")
    assert any(line.split("\t")[:2] == ["cli-envs", "0 flags"] for line in out.splitlines()), out
    code, _, err = cli("flags", "env", "create", "cli-envs")
    assert code == 1 and err.startswith("raftlog: ENVIRONMENT_EXISTS: "), err


def test_set_get_list_and_a_stale_version_is_refused(cli: Cli, tmp_path: Path) -> None:
    cli.ok("flags", "env", "create", "cli-set")
    _, err = cli.ok("flags", "set", "cli-set", "new-welcome", "--file", _write(tmp_path / "f.json", WELCOME))
    assert err.startswith("created flag new-welcome in cli-set (version "), err
    created = _version(err)
    out, err = cli.ok("flags", "get", "cli-set", "new-welcome")
    assert json.loads(out) == WELCOME
    assert f"version {created}, enabled, boolean" in err
    # get's output goes back into set: an update, at a newer version.
    (tmp_path / "g.json").write_text(out.replace('"defaultVariant": "off"', '"defaultVariant": "on"'))
    _, err = cli.ok("flags", "set", "cli-set", "new-welcome", "--file", str(tmp_path / "g.json"))
    assert err.startswith("updated flag new-welcome in cli-set"), err
    updated = _version(err)
    assert updated > created
    out, _ = cli.ok("flags", "list", "cli-set")
    assert out.splitlines() == [f"new-welcome\tenabled\tboolean\tversion {updated}"]
    # A writer that read `created` is refused: nothing written.
    code, _, err = cli(
        "flags", "set", "cli-set", "new-welcome", "--file", str(tmp_path / "f.json"),
        "--expected-version", str(created),
    )  # fmt: skip
    assert code == 1 and err.startswith("raftlog: VERSION_CONFLICT: "), err
    assert "retry" in err
    out, _ = cli.ok("flags", "get", "cli-set", "new-welcome")
    assert json.loads(out)["defaultVariant"] == "on"


def test_disable_enable_eval_and_history(cli: Cli, tmp_path: Path) -> None:
    cli.ok("flags", "env", "create", "cli-eval")
    cli.ok("flags", "set", "cli-eval", "new-welcome", "--file", _write(tmp_path / "f.json", WELCOME))
    out, _ = cli.ok("flags", "eval", "cli-eval", "new-welcome", "--context", '{"email": "ada@example.com"}')
    assert json.loads(out) == {"value": True, "variant": "on", "reason": "TARGETING_MATCH"}
    out, _ = cli.ok("flags", "eval", "cli-eval", "new-welcome", "--context", '{"email": "bob@elsewhere.org"}')
    assert json.loads(out) == {"value": False, "variant": "off", "reason": "DEFAULT"}
    _, err = cli.ok("flags", "disable", "cli-eval", "new-welcome")
    assert err.startswith("disabled flag new-welcome in cli-eval"), err
    out, _ = cli.ok("flags", "eval", "cli-eval", "new-welcome", "--context", '{"email": "ada@example.com"}')
    assert json.loads(out)["reason"] == "DISABLED"
    _, err = cli.ok("flags", "disable", "cli-eval", "new-welcome")
    assert "already disabled" in err
    cli.ok("flags", "enable", "cli-eval", "new-welcome")
    out, _ = cli.ok("flags", "history", "cli-eval", "new-welcome", "--diff")
    kinds = [line.split("\t")[3] for line in out.splitlines() if line.startswith("version ")]
    assert kinds == ["enable new-welcome", "disable new-welcome", "create new-welcome", "env-create"], out
    assert any(line.startswith("    ") and "DISABLED" in line for line in out.splitlines()), out
    whole, _ = cli.ok("flags", "history", "cli-eval", "--limit", "2")
    assert len(whole.splitlines()) == 2


def test_rollback_restores_an_earlier_definition(cli: Cli, tmp_path: Path) -> None:
    cli.ok("flags", "env", "create", "cli-rollback")
    _, err = cli.ok("flags", "set", "cli-rollback", "banner", "--file", _write(tmp_path / "a.json", WELCOME))
    first = _version(err)
    changed = {**WELCOME, "defaultVariant": "on", "targeting": {}}
    cli.ok("flags", "set", "cli-rollback", "banner", "--file", _write(tmp_path / "b.json", changed))
    _, err = cli.ok("flags", "rollback", "cli-rollback", "banner", "--to", str(first))
    assert f"back to version {first}" in err
    out, _ = cli.ok("flags", "get", "cli-rollback", "banner")
    assert json.loads(out) == WELCOME


def test_sdk_keys_create_list_revoke(cli: Cli) -> None:
    cli.ok("flags", "env", "create", "cli-keys")
    out, err = cli.ok("flags", "key", "create", "cli-keys", "--name", "ios-app")
    key = out.strip()
    assert key.startswith("rlf_") and len(key.split("_")[1]) == 16, out
    key_id = key.split("_")[1]
    assert f"created SDK key {key_id} for environment cli-keys" in err
    out, _ = cli.ok("flags", "key", "list", "cli-keys")
    assert out.splitlines()[0].split("\t")[:4] == [key_id, "cli-keys", "ios-app", "active"], out
    assert key.split("_", 2)[2] not in out, "the secret is shown once, never listed"
    cli.ok("flags", "key", "revoke", key_id)
    out, _ = cli.ok("flags", "key", "list", "cli-keys")
    assert out == ""
    out, _ = cli.ok("flags", "key", "list", "cli-keys", "--all")
    assert out.split("\t")[3] == "revoked"


def test_bad_input_exits_non_zero_with_the_reason(cli: Cli, tmp_path: Path) -> None:
    cli.ok("flags", "env", "create", "cli-bad")
    bad = {**WELCOME, "defaultVariant": "blu"}
    code, _, err = cli("flags", "set", "cli-bad", "new-welcome", "--file", _write(tmp_path / "bad.json", bad))
    assert code == 1 and err.startswith("raftlog: INVALID_DEFINITION: "), err
    assert "blu" in err
    (tmp_path / "not.json").write_text("{nope")
    code, _, err = cli("flags", "set", "cli-bad", "new-welcome", "--file", str(tmp_path / "not.json"))
    assert code == 2 and "is not JSON" in err, err
    code, _, err = cli("flags", "set", "cli-bad", "x", "--file", str(tmp_path / "missing.json"))
    assert code == 2 and "missing.json" in err, err
    code, _, err = cli("flags", "get", "no-such-env", "new-welcome")
    assert code == 1 and err.startswith("raftlog: UNKNOWN_ENVIRONMENT: "), err
    code, _, err = cli("flags", "get", "cli-bad", "new-welcome")
    assert code == 1 and err.startswith("raftlog: UNKNOWN_FLAG: "), err
    code, _, err = cli("flags", "eval", "cli-bad", "new-welcome", "--context", "[1]")
    assert code == 2 and "JSON object" in err, err
    code, _, err = cli("flags", "env", "list", key="rlk_0123456789abcdef_" + "x" * 43)
    assert code == 1 and "API_KEY" in err and "RAFTLOG_API_KEY" in err, err
    out, _ = cli.ok("flags", "list", "cli-bad")
    assert out == "", "nothing was written"


def test_import_then_delete(cli: Cli, tmp_path: Path) -> None:
    cli.ok("flags", "env", "create", "cli-import")
    document = {"flags": {"a": WELCOME, "b": {**WELCOME, "state": "DISABLED"}}}
    _, err = cli.ok("flags", "import", "cli-import", _write(tmp_path / "flags.json", document))
    assert err.startswith("imported 2 flags into cli-import"), err
    out, _ = cli.ok("flags", "list", "cli-import")
    assert [line.split("\t")[:2] for line in out.splitlines()] == [["a", "enabled"], ["b", "disabled"]]
    cli.ok("flags", "delete", "cli-import", "a")
    out, _ = cli.ok("flags", "list", "cli-import")
    assert [line.split("\t")[0] for line in out.splitlines()] == ["b"]


def test_a_tenant_key_sees_only_its_tenant(cli: Cli) -> None:
    cli.ok("flags", "env", "create", "cli-operator-only")
    out, _ = cli.ok("tenant", "create", "acme-flags")
    tenant_key = out.strip()
    cli.ok("flags", "env", "create", "acme-prod", key=tenant_key)
    out, _ = cli.ok("flags", "env", "list", key=tenant_key)
    assert [line.split("\t")[0] for line in out.splitlines()] == ["acme-prod"]
    out, _ = cli.ok("flags", "env", "list")
    assert "acme-prod" not in out and "cli-operator-only" in out


def test_the_raftlog_program_and_a_restarted_server(
    cli: Cli, cluster: LocalCluster, flag_server: FlagServerProcess, tmp_path: Path
) -> None:
    """``raftlog flags`` as a real program; a restarted flag server has
    rebuilt the flags from the log."""
    cli.ok("flags", "env", "create", "cli-restart")
    cli.ok("flags", "set", "cli-restart", "kept", "--file", _write(tmp_path / "f.json", WELCOME))
    assert flag_server.restart() == 0
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTLOG_")}
    env |= {"RAFTLOG_API_KEY": cluster.api_key, "RAFTLOG_FLAGS": flag_server.eval_address}
    done = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "flags", "get", "cli-restart", "kept"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == WELCOME
