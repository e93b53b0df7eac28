"""The error-reason contract between the node and the SDK (DESIGN.md, "The
front door and the contract").

1. Every ``raftlog.v1.reasons.Reason`` has its own SDK exception class in
   ``client/errors.py``'s reason table: a client never has to fall back on
   the status code for a reason the server sends.
2. Every reason server code names is in the vocabulary and mapped: an AST
   scan of ``cluster/`` and ``partitions/`` finds the reason argument of
   every ``ServiceError``, ``InvalidGroupRequest``, ``ProduceRejected``,
   ``Rejected``, ``InvalidBatch`` and every class-level ``reason = ...``, and
   fails on a string literal or enum member that is not a mapped ``Reason``,
   and on any other constant expression (an f-string, an unknown enum).
   Reasons taken from a variable or attribute at run time come from the
   narrower enums and error classes, which test 3 checks.
3. The narrower vocabularies (controller and partition ``RejectReason``,
   ``InvalidBatchReason``, the group and replica error classes) are subsets
   of ``Reason``, so the boundary's ``Reason(member)`` can never fail.
4. The scanner can fail: it is run on a synthetic bad file.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

import cluster.groups as groups
import partitions.replica_errors as replica_errors
from client import errors as sdk
from cluster.controller.results import RejectReason as ControllerRejectReason
from cluster.frontend.grpc_errors import ServiceError
from partitions.results import RejectReason as PartitionRejectReason
from raftlog.v1.reasons import Reason
from raftlog.v1.record_batch import InvalidBatchReason

REPO = Path(__file__).resolve().parent.parent
SCANNED = ("cluster", "partitions")

REASON_ARGUMENT = {
    "ServiceError": 1,
    "InvalidGroupRequest": 0,
    "ProduceRejected": 0,
    "Rejected": 0,
    "InvalidBatch": 0,
}
"""Constructors that take a reason, and the position of that argument."""

KNOWN_ENUMS = frozenset({"Reason", "RejectReason", "InvalidBatchReason"})
"""Names under which server code spells a reason as ``Enum.MEMBER`` (and
module-level aliases of them, ``R = RejectReason``)."""


# --- 1. every reason has an SDK class ----------------------------------------------------


def test_every_reason_has_its_own_sdk_exception_class() -> None:
    unmapped = [r.value for r in Reason if r not in sdk._BY_REASON]
    assert not unmapped, f"reasons without an SDK exception class in client/errors.py: {unmapped}"
    for reason in Reason:
        assert issubclass(sdk._BY_REASON[reason], sdk.RaftlogError)
        assert reason.value == reason.name, "a reason's value is its name"


@dataclass
class _FailedCall(grpc.RpcError):
    """What a client sees when the server answered with ``error``."""

    error: ServiceError

    def code(self) -> grpc.StatusCode:
        return self.error.code

    def details(self) -> str:
        return self.error.info.message

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return self.error.trailer()


@pytest.mark.parametrize("reason", list(Reason), ids=str)
def test_the_sdk_picks_the_class_by_reason_whatever_the_code(reason: Reason) -> None:
    # UNKNOWN maps to nothing by code: only the reason can choose the class.
    error = sdk.from_rpc_error(_FailedCall(ServiceError(grpc.StatusCode.UNKNOWN, reason, "why")))
    assert type(error) is sdk._BY_REASON[reason]
    assert error.reason == reason.value


# --- 2. every reason the server names is in the vocabulary --------------------------------


@dataclass(frozen=True)
class ReasonSite:
    file: str
    line: int
    expression: ast.expr
    enums: frozenset[str] = KNOWN_ENUMS

    def problem(self) -> str | None:
        """Why this reason breaks the contract, or None."""
        node = self.expression
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, str):
                return f"{node.value!r} is not a reason"
            return _unmapped(node.value)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            if node.value.id in self.enums:
                return _unmapped(node.attr)
            if node.attr.isupper():
                return f"{node.value.id}.{node.attr}: not a known reason enum ({sorted(self.enums)})"
            return None  # a run-time value (error.reason): see test 3
        if isinstance(node, ast.Name | ast.Attribute | ast.Call | ast.Subscript):
            return None  # a run-time value
        return f"{ast.unparse(node)}: a reason must be a Reason member"


def _unmapped(name: str) -> str | None:
    if name not in Reason.__members__:
        return f"{name!r} is not in raftlog.v1.reasons.Reason"
    if Reason[name] not in sdk._BY_REASON:
        return f"{name!r} has no SDK exception class in client/errors.py"
    return None


def reason_sites(source: str, file: str) -> Iterator[ReasonSite]:
    tree = ast.parse(source, filename=file)
    aliases = {
        target.id
        for statement in tree.body
        if isinstance(statement, ast.Assign)
        and isinstance(statement.value, ast.Name)
        and statement.value.id in KNOWN_ENUMS
        for target in statement.targets
        if isinstance(target, ast.Name)
    }
    enums = KNOWN_ENUMS | aliases
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            position = REASON_ARGUMENT.get(name)
            if position is not None and len(node.args) > position:
                yield ReasonSite(file, node.lineno, node.args[position], enums)
            for keyword in node.keywords:
                if keyword.arg == "reason" and position is not None:
                    yield ReasonSite(file, node.lineno, keyword.value, enums)
        elif isinstance(node, ast.ClassDef):
            for statement in node.body:
                target, value = _class_assignment(statement)
                if target == "reason" and value is not None:
                    yield ReasonSite(file, statement.lineno, value, enums)


def _class_assignment(statement: ast.stmt) -> tuple[str, ast.expr | None]:
    if isinstance(statement, ast.Assign) and len(statement.targets) == 1:
        target = statement.targets[0]
        return (target.id if isinstance(target, ast.Name) else "", statement.value)
    if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
        return statement.target.id, statement.value
    return "", None


def server_reason_sites() -> list[ReasonSite]:
    sites: list[ReasonSite] = []
    for folder in SCANNED:
        for path in sorted((REPO / folder).rglob("*.py")):
            sites += reason_sites(path.read_text(), str(path.relative_to(REPO)))
    return sites


def test_every_reason_the_server_names_is_in_the_vocabulary_and_mapped() -> None:
    sites = server_reason_sites()
    # The scan finds what it should: a broken scanner must not pass quietly.
    spelled = {
        s.expression.attr
        for s in sites
        if isinstance(s.expression, ast.Attribute) and isinstance(s.expression.value, ast.Name)
    }
    assert len(sites) > 40 and {"NOT_LEADER", "UNKNOWN_TENANT", "NO_CONTROLLER"} <= spelled
    problems = [f"{s.file}:{s.line}: {p}" for s in sites if (p := s.problem()) is not None]
    assert not problems, "\n".join(problems)


# --- 3. the narrower vocabularies are subsets ----------------------------------------------


def _class_reasons(base: type) -> list[str]:
    """The ``reason`` each subclass of ``base`` declares as a class attribute."""
    found: list[str] = []
    pending: list[type] = list(base.__subclasses__())
    while pending:
        cls = pending.pop()
        pending += cls.__subclasses__()
        declared = cls.__dict__.get("reason")
        if isinstance(declared, str):
            found.append(declared)
    return found


@pytest.mark.parametrize(
    "members",
    [
        pytest.param(list(ControllerRejectReason), id="controller RejectReason"),
        pytest.param(list(PartitionRejectReason), id="partition RejectReason"),
        pytest.param(list(InvalidBatchReason), id="InvalidBatchReason"),
        pytest.param(_class_reasons(groups.GroupError), id="group errors"),
        pytest.param(_class_reasons(replica_errors.ReplicaError), id="replica errors"),
    ],
)
def test_every_narrower_reason_is_a_mapped_reason(members: list[str]) -> None:
    assert members
    problems = [p for m in members if (p := _unmapped(str(m))) is not None]
    assert not problems, problems


# --- 4. the scanner can fail ------------------------------------------------------------------

BAD_SERVER_CODE = """
class Refused(Exception):
    reason = "NOT_A_REASON"

def f(C, R, x):
    raise ServiceError(C.INTERNAL, "MADE_UP", "literal not in the vocabulary")
    raise ServiceError(C.INTERNAL, Reason.NOPE, "unknown member")
    raise ServiceError(C.INTERNAL, Other.THING, "unknown enum")
    raise ServiceError(C.INTERNAL, f"X_{x}", "built at run time from text")
    raise InvalidGroupRequest("ALSO_MADE_UP", "group request")
    raise ProduceRejected(reason="NOPE_AGAIN", message="keyword")
    raise ServiceError(C.NOT_FOUND, Reason.UNKNOWN_TOPIC, "fine")
    raise ServiceError(C.INTERNAL, error.reason, "fine: a run-time value")
"""


def test_the_scanner_finds_unknown_and_unmapped_reasons() -> None:
    sites = list(reason_sites(BAD_SERVER_CODE, "bad.py"))
    flagged = sorted(s.line for s in sites if s.problem() is not None)
    fine = sorted(s.line for s in sites if s.problem() is None)
    assert flagged == [3, 6, 7, 8, 9, 10, 11]
    assert fine == [12, 13]
