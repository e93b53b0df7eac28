"""The folder rules of DESIGN.md, enforced.

1. ``raft/`` is pure: no I/O, threads, clocks or global randomness, checked two
   ways - statically (every import in every file, parsed with ``ast``) and
   dynamically (importing every ``raft`` module in a fresh interpreter loads
   none of the forbidden modules).
2. Imports only run down the layers of the DESIGN.md folder table (``client``
   never imports ``cluster``, ``raft`` never imports ``partitions``, ...).
3. The checkers can fail: each one is run on synthetic bad files.

A folder with no ``.py`` files yet is skipped; any other folder is checked.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# Top-level names that belong to this project (``raftlog`` is the generated
# protobuf code in proto/).
PROJECT_PACKAGES = frozenset(
    {"raft", "partitions", "cluster", "client", "harness", "flags", "chaos", "bench", "raftlog", "tests"}
)

# Modules the Raft core may not import: it does no I/O, starts no threads and
# never reads a clock (time is passed in through tick()).
FORBIDDEN_IN_RAFT = frozenset(
    {
        "asyncio",
        "grpc",
        "rocksdict",
        "socket",
        "threading",
        "time",
        "subprocess",
        "multiprocessing",
        "selectors",
        "os",
    }
)

# The "may import" column of the DESIGN.md folder table: which project packages
# each folder may import (itself included). Stdlib and third-party imports are
# not limited here, except in raft/ (stdlib only, see check_raft_purity).
ALLOWED_PROJECT_IMPORTS: dict[str, frozenset[str]] = {
    "raft": frozenset({"raft"}),
    "partitions": frozenset({"partitions", "raft", "raftlog"}),
    # cluster.run_local (`make run`) starts its nodes through the harness;
    # the CLI (`raftlog flags ...`) dispatches to flags/cli.py.
    "cluster": frozenset({"cluster", "partitions", "raft", "client", "harness", "flags", "raftlog"}),
    "client": frozenset({"client", "raftlog"}),
    "flags": frozenset({"flags", "client", "raftlog"}),
    # Test tools as first-class code: start the server as a process, never import it.
    "harness": frozenset({"harness", "client", "raftlog"}),
    "chaos": frozenset({"chaos", "client", "harness", "raftlog"}),
    # bench/ also drives the Raft simulator: issue 6 asks for the core's own
    # throughput beside the cluster's, measured in the same run; and the flag
    # evaluator (issue 16: its figures beside flagd-core's).
    "bench": frozenset({"bench", "client", "harness", "raftlog", "raft", "flags"}),
}


@dataclass(frozen=True, slots=True)
class Violation:
    path: Path
    line: int
    what: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.what}"


def python_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def module_name(path: Path, root: Path) -> str:
    """``root/raft/sim/__init__.py`` -> ``raft.sim``; ``root/raft/log.py`` -> ``raft.log``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """Every module a file imports, as (line, absolute dotted name).

    Relative imports are resolved against ``module``. Calls to ``__import__``
    and ``importlib.import_module`` with a literal name count as imports too.
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                assert node.module is not None
                yield node.lineno, node.module
            else:
                base = package.split(".") if package else []
                if node.level > 1:
                    base = base[: len(base) - (node.level - 1)]
                name = ".".join([*base, node.module] if node.module else base)
                yield node.lineno, name or "<relative import beyond the top package>"
        elif isinstance(node, ast.Call) and node.args:
            func = node.func
            dynamic = (isinstance(func, ast.Name) and func.id == "__import__") or (
                isinstance(func, ast.Attribute) and func.attr == "import_module"
            )
            first = node.args[0]
            if dynamic and isinstance(first, ast.Constant) and isinstance(first.value, str):
                yield node.lineno, first.value


def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def check_raft_purity(path: Path, module: str) -> list[Violation]:
    """What a file of the Raft core must not do: import a forbidden or a
    non-stdlib module, or use the global ``random`` functions (a seeded
    ``random.Random`` instance is the only allowed randomness)."""
    tree = _parse(path)
    found: list[Violation] = []
    for line, name in imported_modules(tree, module, path.name == "__init__.py"):
        top = name.split(".")[0]
        if top in FORBIDDEN_IN_RAFT:
            found.append(Violation(path, line, f"imports {name} (forbidden in raft/)"))
        elif top not in sys.stdlib_module_names and top not in PROJECT_PACKAGES:
            found.append(Violation(path, line, f"imports {name} (raft/ uses the stdlib only)"))

    random_aliases: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            random_aliases.update(a.asname or a.name for a in node.names if a.name == "random")
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "random":
            for alias in node.names:
                if alias.name != "Random":
                    found.append(
                        Violation(path, node.lineno, f"from random import {alias.name} (global random)")
                    )
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in random_aliases
            and node.attr != "Random"
        ):
            found.append(Violation(path, node.lineno, f"uses {node.value.id}.{node.attr} (global random)"))
    return found


def check_import_direction(path: Path, module: str, allowed: frozenset[str]) -> list[Violation]:
    """Project packages ``path`` imports that its folder may not import."""
    found: list[Violation] = []
    for line, name in imported_modules(_parse(path), module, path.name == "__init__.py"):
        top = name.split(".")[0]
        if top in PROJECT_PACKAGES and top not in allowed:
            found.append(
                Violation(
                    path, line, f"imports {name}: {module.split('.')[0]}/ may import only {sorted(allowed)}"
                )
            )
    return found


def _files_or_skip(folder: str) -> list[Path]:
    files = python_files(REPO / folder)
    if not files:
        pytest.skip(f"{folder}/ has no .py files yet")
    return files


# --- the rules, on the real tree ---------------------------------------------------


def test_raft_is_pure_statically() -> None:
    violations = [
        v for path in _files_or_skip("raft") for v in check_raft_purity(path, module_name(path, REPO))
    ]
    assert not violations, "raft/ must stay sans-I/O:\n" + "\n".join(map(str, violations))


@pytest.mark.parametrize("folder", sorted(ALLOWED_PROJECT_IMPORTS))
def test_imports_follow_the_folder_table(folder: str) -> None:
    allowed = ALLOWED_PROJECT_IMPORTS[folder]
    violations = [
        v
        for path in _files_or_skip(folder)
        for v in check_import_direction(path, module_name(path, REPO), allowed)
    ]
    assert not violations, "imports against DESIGN.md's folder table:\n" + "\n".join(map(str, violations))


# Within cluster/: the node is a server and must not depend on the SDK, the
# test tools or the flag service (issue 13, "one contract"; DESIGN.md: the
# node importing flags is a design bug): only the CLI (a client) imports
# ``client`` and ``flags`` (to dispatch ``raftlog flags ...``), and only
# ``make run``'s entry point imports ``harness``.
CLUSTER_FILES_ALLOWED_EXTRA: dict[str, frozenset[str]] = {
    "client": frozenset({"cluster/cli.py", "cluster/cli_tenants.py", "cluster/cli_audit.py"}),
    "flags": frozenset({"cluster/cli.py"}),
    "harness": frozenset({"cluster/run_local.py"}),
}


def check_cluster_file(path: Path, relative: str, module: str) -> list[Violation]:
    """Imports of a cluster/ file (``relative``: its path from the repo
    root) that only ``CLUSTER_FILES_ALLOWED_EXTRA``'s files may make."""
    base = ALLOWED_PROJECT_IMPORTS["cluster"] - set(CLUSTER_FILES_ALLOWED_EXTRA)
    allowed = base | {pkg for pkg, files in CLUSTER_FILES_ALLOWED_EXTRA.items() if relative in files}
    return check_import_direction(path, module, frozenset(allowed))


def test_the_node_does_not_import_the_sdk_the_harness_or_flags() -> None:
    violations = []
    for path in _files_or_skip("cluster"):
        relative = path.relative_to(REPO).as_posix()
        violations += check_cluster_file(path, relative, module_name(path, REPO))
    assert not violations, "the node imports the SDK, the harness or flags:\n" + "\n".join(
        map(str, violations)
    )


def _newly_loaded(code: str) -> set[str]:
    """Modules in ``sys.modules`` after running ``code`` in a fresh interpreter
    that a bare interpreter (same environment) does not have."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "proto")])}

    def loaded(snippet: str) -> set[str]:
        program = f"{snippet}\nimport sys\nprint('\\n'.join(sys.modules))"
        result = subprocess.run(
            [sys.executable, "-c", program], cwd=REPO, env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, f"python -c {snippet!r} failed:\n{result.stderr}"
        return set(result.stdout.split())

    return loaded(code) - loaded("pass")


def _forbidden(modules: set[str]) -> set[str]:
    return {m for m in modules if m.split(".")[0] in FORBIDDEN_IN_RAFT}


def raft_modules() -> list[str]:
    """``raft`` and every module under raft/ (``raft.node``, ``raft.sim``, ...)
    except ``__main__`` entry points, which would run a program."""
    return [module_name(path, REPO) for path in python_files(REPO / "raft") if path.name != "__main__.py"]


def test_importing_raft_loads_no_forbidden_module() -> None:
    modules = raft_modules()
    if not modules:
        pytest.skip("raft/ has no .py files yet")
    code = "import raft\n" + "".join(f"import {m}\n" for m in modules)
    loaded = _forbidden(_newly_loaded(code))
    assert not loaded, f"importing {', '.join(modules)} loads {sorted(loaded)}"


# --- the checkers can fail ------------------------------------------------------------


def _write(root: Path, relative: str, source: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("import time\n", "imports time"),
        ("import os.path\n", "imports os.path"),
        ("from asyncio import sleep\n", "imports asyncio"),
        ("import threading as t\n", "imports threading"),
        ("def f():\n    import socket\n", "imports socket"),
        ("__import__('subprocess')\n", "imports subprocess"),
        ("import importlib\nimportlib.import_module('selectors')\n", "imports selectors"),
        ("import rocksdict\n", "imports rocksdict"),
        ("import sortedcontainers\n", "stdlib only"),
        ("import random\nx = random.randint(1, 6)\n", "random.randint"),
        ("import random as r\nr.seed(1)\n", "r.seed"),
        ("from random import choice\n", "from random import choice"),
    ],
)
def test_purity_check_catches(tmp_path: Path, source: str, expected: str) -> None:
    path = _write(tmp_path, "raft/bad.py", source)
    violations = check_raft_purity(path, "raft.bad")
    assert any(expected in str(v) for v in violations), violations


def test_purity_check_allows_seeded_random_and_stdlib(tmp_path: Path) -> None:
    source = (
        "from __future__ import annotations\n"
        "import random\n"
        "from random import Random\n"
        "import dataclasses, enum, heapq\n"
        "from raft.types import Entry\n"
        "from . import errors\n"
        "rng = random.Random(7)\n"
        "other = Random(8)\n"
    )
    path = _write(tmp_path, "raft/good.py", source)
    assert check_raft_purity(path, "raft.good") == []


@pytest.mark.parametrize(
    ("relative", "module", "source", "folder"),
    [
        ("client/x.py", "client.x", "from cluster.config import Config\n", "client"),
        ("client/x.py", "client.x", "import partitions\n", "client"),
        ("client/x.py", "client.x", "from raft import types\n", "client"),
        ("partitions/x.py", "partitions.x", "import cluster.transport.raft_transport\n", "partitions"),
        ("partitions/x.py", "partitions.x", "from client import Producer\n", "partitions"),
        ("raft/x.py", "raft.x", "from partitions import driver\n", "raft"),
        ("raft/x.py", "raft.x", "import raftlog.internal.v1.raft_pb2\n", "raft"),
        ("raft/sim/x.py", "raft.sim.x", "from ...partitions import driver\n", "raft"),
    ],
)
def test_direction_check_catches(
    tmp_path: Path, relative: str, module: str, source: str, folder: str
) -> None:
    path = _write(tmp_path, relative, source)
    assert check_import_direction(path, module, ALLOWED_PROJECT_IMPORTS[folder])


def test_direction_check_allows_the_table(tmp_path: Path) -> None:
    cases = [
        (
            "client/x.py",
            "client.x",
            "import grpc\nfrom raftlog.v1 import errors_pb2\nfrom . import y\n",
            "client",
        ),
        ("partitions/x.py", "partitions.x", "from raft.types import Entry\nimport raftlog\n", "partitions"),
        ("raft/sim/x.py", "raft.sim.x", "from ..types import Entry\nfrom raft import errors\n", "raft"),
    ]
    for relative, module, source, folder in cases:
        path = _write(tmp_path, relative, source)
        assert check_import_direction(path, module, ALLOWED_PROJECT_IMPORTS[folder]) == []


@pytest.mark.parametrize(
    ("relative", "source", "allowed"),
    [
        ("cluster/node.py", "from flags import cli\n", False),
        ("cluster/frontend/x.py", "import flags.server\n", False),
        ("cluster/run_local.py", "from flags.live import LiveFlags\n", False),
        ("cluster/node.py", "from client import Producer\n", False),
        ("cluster/node.py", "from harness.local_cluster import LocalCluster\n", False),
        ("cluster/cli.py", "from flags import cli as flags_cli\nfrom client import Admin\n", True),
        ("cluster/run_local.py", "from harness.flag_server import FlagServerProcess\n", True),
    ],
)
def test_cluster_file_check_catches(tmp_path: Path, relative: str, source: str, allowed: bool) -> None:
    """Only cluster/cli.py may import flags (and client); only run_local, harness."""
    path = _write(tmp_path, relative, source)
    module = relative.removesuffix(".py").replace("/", ".")
    violations = check_cluster_file(path, relative, module)
    assert (violations == []) is allowed, violations


def test_forbidden_modules_show_up_when_loaded() -> None:
    """The dynamic check sees a forbidden module a plain import pulls in."""
    assert "asyncio" in _forbidden(_newly_loaded("import asyncio"))


# --- the install ----------------------------------------------------------------------


def test_installed_packages_import_from_any_directory(tmp_path: Path) -> None:
    """The editable install (make venv) serves the project and the generated
    protos without PYTHONPATH or the repo as working directory."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = (
        "import raft, partitions, cluster, client, chaos, bench\n"
        "import raftlog.v1.errors_pb2, raftlog.internal.v1.raft_pb2\n"
        "print(raft.__path__[0])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == REPO / "raft"
