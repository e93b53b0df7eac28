"""The image's rules, checked on the Dockerfile's parsed instructions.

hadolint checks generic best practice; these are the rules of *our* image
(Dockerfile, issue 19 "Container image") that no generic linter knows:

1. ``ARG BASE_IMAGE`` comes before the first ``FROM`` (so ``--build-arg
   BASE_IMAGE=...`` can build from a local base) and every stage starts
   from ``${BASE_IMAGE}``.
2. There are at least two stages; the final one installs nothing: no
   compiler or build tool named, no ``pip install``/``apt-get install``.
3. The final stage switches to a numeric, non-zero uid (and gid if given)
   and never back.
4. ``ENTRYPOINT`` is exactly ``["raftlog"]`` (exec form, so signals reach
   the node), ``CMD`` is exec form.
5. ``HEALTHCHECK`` runs ``raftlog health`` (standard gRPC health) as its
   module alone, ``python -P -m cluster.cli_health --address ...`` (it runs
   every few seconds: not the whole CLI; ``-P``: not from the data dir).
6. The gRPC and metrics ports of the chart (7001, 9090) are exposed.

``problems(text)`` returns every broken rule as a sentence (empty = clean),
so a test can show both that the real Dockerfile passes and that a bad one
fails. The parser is small on purpose: logical lines (backslash
continuations joined, comment lines dropped), ``KEYWORD args``, stages
split at ``FROM``. It does not expand variables other than naming them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

# Words that mean a build toolchain or installer is present or being used
# (whole words: `make` but not `remake`, `gcc` but not `libgcc-s1`).
BUILD_TOOLS = re.compile(
    r"(?<![\w.-])(gcc|g\+\+|cc|clang|build-essential|make|cmake|cargo|rustc|libc6-dev)(?![\w.-])"
)
# The health check: cluster/cli_health.py alone, never from the working directory.
HEALTH_COMMAND = ["python", "-P", "-m", "cluster.cli_health"]
INSTALLERS = (re.compile(r"\bpip3?\s+install\b"), re.compile(r"\bapt(-get)?\s+install\b"))


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: FROM, RUN, ...
    args: str  # the rest of the logical line, continuations joined
    line: int  # 1-based line where the instruction starts


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)


@dataclass
class Dockerfile:
    preamble: list[Instruction]  # instructions before the first FROM (ARGs)
    stages: list[Stage]


def logical_lines(text: str) -> list[tuple[int, str]]:
    """(start line, joined text) for each instruction; comments dropped.

    Parser directives (``# syntax=...``) are comments for our purpose.
    """
    out: list[tuple[int, str]] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#"):
            continue  # a comment line, even inside a continuation
        if not parts:
            if not stripped:
                continue
            start = number
        if stripped.endswith("\\"):
            parts.append(stripped[:-1].strip())
            continue
        parts.append(stripped)
        out.append((start, " ".join(p for p in parts if p)))
        parts = []
    if parts:  # a trailing continuation: keep what we have
        out.append((start, " ".join(p for p in parts if p)))
    return out


def parse(text: str) -> Dockerfile:
    preamble: list[Instruction] = []
    stages: list[Stage] = []
    for line, joined in logical_lines(text):
        keyword, _, args = joined.partition(" ")
        instruction = Instruction(keyword.upper(), args.strip(), line)
        if instruction.keyword == "FROM":
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            name = words[2] if len(words) >= 3 and words[1].lower() == "as" else None
            stages.append(Stage(base=words[0] if words else "", name=name))
        elif stages:
            stages[-1].instructions.append(instruction)
        else:
            preamble.append(instruction)
    return Dockerfile(preamble, stages)


def exec_form(args: str) -> list[str] | None:
    """The JSON array of an exec-form instruction, None for shell form."""
    try:
        value = json.loads(args)
    except ValueError:
        return None
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _user_ids(args: str) -> tuple[str, str | None]:
    user, _, group = args.partition(":")
    return user.strip(), (group.strip() or None)


def problems(text: str) -> list[str]:
    """Every rule of the module docstring this Dockerfile breaks."""
    found: list[str] = []
    df = parse(text)
    if not df.stages:
        return ["no FROM instruction"]

    # 1. BASE_IMAGE before the first FROM; every stage from it.
    if not any(i.keyword == "ARG" and i.args.split("=")[0].strip() == "BASE_IMAGE" for i in df.preamble):
        found.append("ARG BASE_IMAGE is not declared before the first FROM")
    for stage in df.stages:
        if stage.base not in ("${BASE_IMAGE}", "$BASE_IMAGE"):
            found.append(f"stage {stage.name or '(final)'} starts FROM {stage.base}, not ${{BASE_IMAGE}}")

    # 2. Multi-stage; nothing installed or compiled in the final stage.
    if len(df.stages) < 2:
        found.append("single stage: the build toolchain would ship in the image")
    final = df.stages[-1]
    for i in final.instructions:
        if i.keyword != "RUN":
            continue
        lowered = i.args.lower()
        for tool in sorted({m.group(1) for m in BUILD_TOOLS.finditer(lowered)}):
            found.append(f"line {i.line}: final stage names build tool {tool!r}")
        for installer in INSTALLERS:
            if installer.search(lowered):
                found.append(f"line {i.line}: final stage installs packages ({installer.pattern})")

    # 3. Non-root numeric uid, and the last USER wins.
    users = [i for i in final.instructions if i.keyword == "USER"]
    if not users:
        found.append("final stage has no USER: the process would run as root")
    else:
        user, group = _user_ids(users[-1].args)
        if not user.isdigit() or int(user) == 0:
            found.append(f"line {users[-1].line}: USER {users[-1].args} is not a numeric non-zero uid")
        if group is not None and (not group.isdigit() or int(group) == 0):
            found.append(f"line {users[-1].line}: USER {users[-1].args} has a root or non-numeric gid")

    # 4. Entry point and default command in exec form.
    entry = [i for i in final.instructions if i.keyword == "ENTRYPOINT"]
    if not entry or exec_form(entry[-1].args) != ["raftlog"]:
        found.append('ENTRYPOINT is not exactly ["raftlog"]')
    cmd = [i for i in final.instructions if i.keyword == "CMD"]
    if cmd and exec_form(cmd[-1].args) is None:
        found.append("CMD is not in exec form")

    # 5. Health through gRPC health.
    health = [i for i in final.instructions if i.keyword == "HEALTHCHECK"]
    if not health:
        found.append("final stage has no HEALTHCHECK")
    else:
        _, _, command = health[-1].args.partition("CMD ")
        argv = exec_form(command.strip())
        if argv is None or argv[:4] != HEALTH_COMMAND or "--address" not in argv:
            found.append(
                f"line {health[-1].line}: HEALTHCHECK does not run `{' '.join(HEALTH_COMMAND)} --address ...`"
            )

    # 6. The chart's ports.
    exposed = {p.split("/")[0] for i in final.instructions if i.keyword == "EXPOSE" for p in i.args.split()}
    for port in ("7001", "9090"):
        if port not in exposed:
            found.append(f"port {port} is not exposed")
    return found
