"""Flag definitions in the flagd flags.json format, and their validation.

A flag set is what one environment of one tenant serves: ``flags`` (key ->
flag), ``$evaluators`` (reusable JsonLogic rules reached with ``{"$ref":
name}``) and flag-set ``metadata``. A flag has ``state`` (ENABLED or
DISABLED), ``variants`` (name -> value, one JSON type per flag),
``defaultVariant`` (a variant name or null), ``targeting`` (JsonLogic, may be
``{}``) and ``metadata``.

Invariants:

- Every ``Flag`` and ``FlagSet`` in memory came out of ``validate_flag`` or
  ``validate_flag_set``: nothing invalid is ever built, stored or written.
  The types are frozen; their dict fields are never mutated after validation
  (treat them as read-only).
- Validation is pure and total: any JSON value in, either a valid object out
  or one ``InvalidDefinition`` listing every problem found, each located by a
  JSON-path-like string (``flags.new-welcome.targeting.if[1]``).
- ``flagd_json`` writes canonical JSON (sorted keys, no whitespace): equal
  sets give equal bytes; ``validate_flag_set(json.loads(flagd_json(s))) == s``.
- Numbers: a variant value is an integer (within JavaScript's safe range,
  as flagd requires) or a finite float; ``true``/``false`` are never numbers.
  A number flag whose values are all integers is INTEGER, otherwise FLOAT.
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CUSTOM_OPERATIONS",
    "JSONLOGIC_OPERATIONS",
    "MAX_DEPTH",
    "MAX_FLAGS",
    "MAX_SET_BYTES",
    "Flag",
    "FlagSet",
    "FlagState",
    "InvalidDefinition",
    "Problem",
    "VariantType",
    "check_environment_name",
    "check_flag_key",
    "flag_json",
    "flagd_json",
    "validate_flag",
    "validate_flag_set",
]

MAX_FLAG_KEY_LENGTH = 128
MAX_ENVIRONMENT_LENGTH = 63
MAX_NAME_LENGTH = 128
"""Variant, evaluator and metadata key names."""
MAX_FLAGS = 2000
MAX_VARIANTS = 256
MAX_DEPTH = 32
"""Nesting of JSON values (targeting rules, object variants)."""
MAX_SET_BYTES = 1 << 20
"""A whole flag set in canonical JSON: it travels in one log record."""
MAX_SAFE_INTEGER = (1 << 53) - 1

_FLAG_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:-]*")
_ENVIRONMENT = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")

JSONLOGIC_OPERATIONS = frozenset(
    {
        "var", "missing", "missing_some", "if", "?:", "==", "===", "!=", "!==", "!", "!!",
        "or", "and", ">", ">=", "<", "<=", "max", "min", "+", "-", "*", "/", "%",
        "map", "filter", "reduce", "all", "none", "some", "merge", "in", "cat", "substr",
    }
)  # fmt: skip
CUSTOM_OPERATIONS = frozenset({"fractional", "sem_ver", "starts_with", "ends_with"})
SEM_VER_OPERATORS = frozenset({"=", "!=", ">", ">=", "<", "<=", "^", "~"})
_RESULT_OPERATIONS = frozenset({"if", "?:"})

Json = Any
"""A value ``json.loads`` can return."""


class FlagState(enum.StrEnum):
    ENABLED = "ENABLED"
    DISABLED = "DISABLED"


class VariantType(enum.StrEnum):
    BOOLEAN = "boolean"
    STRING = "string"
    INTEGER = "integer"
    FLOAT = "float"
    OBJECT = "object"


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class InvalidDefinition(ValueError):
    """Every problem found in a definition (at least one)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in problems))


@dataclass(frozen=True, slots=True)
class Flag:
    state: FlagState
    variants: dict[str, Json]
    default_variant: str | None
    targeting: dict[str, Json]
    metadata: dict[str, str | int | float | bool]
    variant_type: VariantType

    @property
    def enabled(self) -> bool:
        return self.state is FlagState.ENABLED

    def to_json(self) -> dict[str, Json]:
        """The flag as flagd writes it (``defaultVariant`` always present)."""
        doc: dict[str, Json] = {
            "state": self.state.value,
            "variants": self.variants,
            "defaultVariant": self.default_variant,
            "targeting": self.targeting,
        }
        if self.metadata:
            doc["metadata"] = self.metadata
        return doc


@dataclass(frozen=True, slots=True)
class FlagSet:
    flags: dict[str, Flag] = field(default_factory=dict)
    evaluators: dict[str, Json] = field(default_factory=dict)
    metadata: dict[str, str | int | float | bool] = field(default_factory=dict)

    def to_json(self) -> dict[str, Json]:
        doc: dict[str, Json] = {"flags": {key: flag.to_json() for key, flag in self.flags.items()}}
        if self.evaluators:
            doc["$evaluators"] = self.evaluators
        if self.metadata:
            doc["metadata"] = self.metadata
        return doc


def _canonical(value: Json) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def flagd_json(flag_set: FlagSet) -> str:
    """A complete flags.json document (what SyncFlags sends), canonical."""
    return _canonical(flag_set.to_json())


def flag_json(flag: Flag) -> str:
    return _canonical(flag.to_json())


# --- names ----------------------------------------------------------------------


def check_flag_key(key: object) -> str | None:
    """Why ``key`` is not a valid flag key, or None. No ``/``: it separates
    the environment from the flag in log record keys."""
    if not isinstance(key, str) or not key:
        return "a flag key is a non-empty string"
    if len(key) > MAX_FLAG_KEY_LENGTH:
        return f"a flag key has at most {MAX_FLAG_KEY_LENGTH} characters, this one has {len(key)}"
    if not _FLAG_KEY.fullmatch(key):
        return f"flag key {key!r} may contain only letters, digits and _ . : - (and not start with . : -)"
    return None


def check_environment_name(name: object) -> str | None:
    if not isinstance(name, str) or not name:
        return "an environment name is a non-empty string"
    if len(name) > MAX_ENVIRONMENT_LENGTH:
        return f"an environment name has at most {MAX_ENVIRONMENT_LENGTH} characters"
    if not _ENVIRONMENT.fullmatch(name):
        return f"environment name {name!r} may contain only a-z, 0-9 and inner -"
    return None


# --- validation -----------------------------------------------------------------


class _Checker:
    def __init__(self, evaluators: Mapping[str, Json] | None) -> None:
        self.problems: list[Problem] = []
        self.evaluators = evaluators
        """None: ``$ref`` targets are not checked (a single flag on its own)."""

    def add(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    # values

    def depth_ok(self, value: Json, path: str, depth: int = 0) -> bool:
        if depth > MAX_DEPTH:
            self.add(path, f"nested deeper than {MAX_DEPTH} levels")
            return False
        if isinstance(value, dict):
            return all(self.depth_ok(v, f"{path}.{k}", depth + 1) for k, v in value.items())
        if isinstance(value, list):
            return all(self.depth_ok(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value))
        if isinstance(value, float) and not math.isfinite(value):
            self.add(path, "numbers must be finite")
            return False
        return True

    def metadata(self, value: Json, path: str) -> dict[str, str | int | float | bool]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.add(path, "metadata is an object")
            return {}
        for key, item in value.items():
            if not 0 < len(key) <= MAX_NAME_LENGTH:
                self.add(f"{path}.{key}", f"metadata keys have 1-{MAX_NAME_LENGTH} characters")
            if not isinstance(item, (str, int, float, bool)) or not self.depth_ok(item, f"{path}.{key}"):
                self.add(f"{path}.{key}", "metadata values are strings, numbers or booleans")
        return dict(value)

    def variant_type(self, value: Json) -> VariantType | None:
        if isinstance(value, bool):
            return VariantType.BOOLEAN
        if isinstance(value, str):
            return VariantType.STRING
        if isinstance(value, int):
            return VariantType.INTEGER
        if isinstance(value, float):
            return VariantType.FLOAT
        if isinstance(value, dict):
            return VariantType.OBJECT
        return None

    def flag(self, key: str, doc: Json, path: str) -> Flag | None:
        before = len(self.problems)
        if problem := check_flag_key(key):
            self.add(path, problem)
        if not isinstance(doc, dict):
            self.add(path, "a flag is an object")
            return None
        for name in sorted(set(doc) - {"state", "variants", "defaultVariant", "targeting", "metadata"}):
            self.add(f"{path}.{name}", "unknown field")
        state = doc.get("state")
        if "state" not in doc:
            self.add(f"{path}.state", "required field is missing")
        elif state not in ("ENABLED", "DISABLED"):
            self.add(f"{path}.state", f'must be "ENABLED" or "DISABLED", not {_shown(state)}')
        variants = doc.get("variants")
        types: set[VariantType] = set()
        if "variants" not in doc:
            self.add(f"{path}.variants", "required field is missing")
            variants = {}
        elif not isinstance(variants, dict) or not variants:
            self.add(f"{path}.variants", "must be an object with at least one variant")
            variants = {}
        elif len(variants) > MAX_VARIANTS:
            self.add(f"{path}.variants", f"at most {MAX_VARIANTS} variants, got {len(variants)}")
        for name, value in variants.items():
            where = f"{path}.variants.{name}"
            if not 0 < len(name) <= MAX_NAME_LENGTH:
                self.add(where, f"variant names have 1-{MAX_NAME_LENGTH} characters")
            vtype = self.variant_type(value)
            if vtype is None:
                self.add(where, f"a variant is a boolean, string, number or object, not {_shown(value)}")
                continue
            if vtype is VariantType.INTEGER and abs(value) > MAX_SAFE_INTEGER:
                self.add(where, f"integer {value} is outside the safe range ±{MAX_SAFE_INTEGER}")
            if not self.depth_ok(value, where):
                continue
            types.add(vtype)
        if types == {VariantType.INTEGER, VariantType.FLOAT}:
            types = {VariantType.FLOAT}
        if len(types) > 1:
            found = ", ".join(sorted(t.value for t in types))
            self.add(f"{path}.variants", f"all variants of a flag have one type, found {found}")
        default = doc.get("defaultVariant")
        if default is not None:
            if not isinstance(default, str):
                self.add(f"{path}.defaultVariant", "must be a variant name or null")
            elif default not in variants:
                self.add(f"{path}.defaultVariant", f"unknown variant {_shown(default)}")
        targeting = doc.get("targeting", {})
        if not isinstance(targeting, dict):
            self.add(f"{path}.targeting", "targeting is a JsonLogic object (or {})")
            targeting = {}
        elif targeting and self.depth_ok(targeting, f"{path}.targeting"):
            self.rule(targeting, f"{path}.targeting")
            self.results(targeting, f"{path}.targeting", variants, set())
        metadata = self.metadata(doc.get("metadata"), f"{path}.metadata")
        if len(self.problems) > before or len(types) != 1:
            return None
        return Flag(FlagState(str(state)), dict(variants), default, targeting, metadata, types.pop())

    # JsonLogic well-formedness

    def rule(self, node: Json, path: str) -> None:
        if isinstance(node, list):
            for i, item in enumerate(node):
                self.rule(item, f"{path}[{i}]")
            return
        if not isinstance(node, dict):
            return  # a literal
        if len(node) != 1:
            self.add(path, f"a JsonLogic rule has exactly one operation, this has {len(node)}")
            return
        ((op, args),) = node.items()
        where = f"{path}.{op}"
        if op == "$ref":
            self.ref(args, where)
            return
        if op not in JSONLOGIC_OPERATIONS and op not in CUSTOM_OPERATIONS:
            self.add(path, f"unknown operation {_shown(op)}")
            return
        arguments = args if isinstance(args, list) else [args]
        if op == "fractional":
            self.fractional(arguments, where)
        elif op == "sem_ver":
            self.sem_ver(arguments, where)
        elif op in ("starts_with", "ends_with"):
            if len(arguments) != 2:
                self.add(where, f"takes 2 arguments, got {len(arguments)}")
            for i, arg in enumerate(arguments):
                if not isinstance(arg, (str, dict)):
                    self.add(f"{where}[{i}]", "must be a string or a rule")
        elif op == "var" and not isinstance(args, (str, int, list, dict)) and args is not None:
            self.add(where, "takes a name, or [name, default]")
        elif op in _RESULT_OPERATIONS and len(arguments) < 2:
            self.add(where, f"takes at least 2 arguments, got {len(arguments)}")
        for i, arg in enumerate(arguments):
            if op != "fractional":
                self.rule(arg, f"{where}[{i}]")

    def ref(self, name: Json, path: str) -> None:
        if not isinstance(name, str) or not name:
            self.add(path, "names an evaluator (a string)")
        elif self.evaluators is not None and name not in self.evaluators:
            self.add(path, f"unknown evaluator {_shown(name)}")

    def fractional(self, arguments: list[Json], path: str) -> None:
        buckets = arguments
        if arguments and not isinstance(arguments[0], list):
            self.rule(arguments[0], f"{path}[0]")  # the bucketing key expression
            buckets = arguments[1:]
        offset = len(arguments) - len(buckets)
        if not buckets:
            self.add(path, "needs at least one [variant, weight] bucket")
        for i, bucket in enumerate(buckets, offset):
            where = f"{path}[{i}]"
            if not isinstance(bucket, list) or not 1 <= len(bucket) <= 2:
                self.add(where, "a bucket is [variant] or [variant, weight]")
                continue
            if not isinstance(bucket[0], (str, dict)):
                self.add(f"{where}[0]", "a bucket's variant is a string or a rule")
            self.rule(bucket[0], f"{where}[0]")
            if len(bucket) == 2:
                weight = bucket[1]
                if isinstance(weight, bool) or not isinstance(weight, (int, dict)):
                    self.add(f"{where}[1]", f"a weight is an integer or a rule, not {_shown(weight)}")
                self.rule(weight, f"{where}[1]")

    def sem_ver(self, arguments: list[Json], path: str) -> None:
        if len(arguments) != 3:
            self.add(path, f"takes 3 arguments (version, operator, version), got {len(arguments)}")
            return
        if arguments[1] not in SEM_VER_OPERATORS:
            self.add(f"{path}[1]", f"unknown operator {_shown(arguments[1])}")
        for i in (0, 2):
            if not isinstance(arguments[i], (str, dict)):
                self.add(f"{path}[{i}]", "must be a version string or a rule")
            self.rule(arguments[i], f"{path}[{i}]")

    # variant names the targeting can return

    def results(self, node: Json, path: str, variants: Mapping[str, Json], refs: set[str]) -> None:
        """Check the literal strings in result position name variants."""
        if isinstance(node, str):
            if node not in variants:
                self.add(path, f"unknown variant {_shown(node)}")
            return
        if not isinstance(node, dict) or len(node) != 1:
            return
        ((op, args),) = node.items()
        if op in _RESULT_OPERATIONS and isinstance(args, list):
            for i, arg in enumerate(args):
                if i % 2 == 1 or i == len(args) - 1:
                    self.results(arg, f"{path}.{op}[{i}]", variants, refs)
        elif op == "fractional" and isinstance(args, list):
            for i, bucket in enumerate(args):
                if isinstance(bucket, list) and bucket:
                    self.results(bucket[0], f"{path}.{op}[{i}][0]", variants, refs)
        elif op == "$ref" and self.evaluators is not None and isinstance(args, str):
            rule = self.evaluators.get(args)
            if rule is not None and args not in refs:
                before = len(self.problems)
                self.results(rule, f"$evaluators.{args}", variants, refs | {args})
                for i in range(before, len(self.problems)):
                    p = self.problems[i]
                    self.problems[i] = Problem(f"{path}.$ref", f"{p.message} (at {p.path})")

    def ref_cycles(self, evaluators: Mapping[str, Json]) -> None:
        def refs_of(node: Json) -> set[str]:
            if isinstance(node, list):
                return set().union(*(refs_of(n) for n in node)) if node else set()
            if isinstance(node, dict):
                found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
                return found.union(*(refs_of(v) for v in node.values()))
            return set()

        graph = {name: refs_of(rule) for name, rule in evaluators.items()}
        done: set[str] = set()
        for start in sorted(graph):
            stack: list[tuple[str, list[str]]] = [(start, [start])]
            while stack:
                name, trail = stack.pop()
                for target in sorted(graph.get(name, ())):
                    if target == start:
                        self.add(f"$evaluators.{start}", "$ref cycle: " + " -> ".join([*trail, target]))
                        stack.clear()
                        break
                    if target not in trail and target not in done:
                        stack.append((target, [*trail, target]))
            done.add(start)


def _shown(value: Json) -> str:
    text = json.dumps(value, ensure_ascii=False) if _is_json(value) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_json(value: Json) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True


def validate_flag(key: str, doc: Json, evaluators: Mapping[str, Json] | None = None) -> Flag:
    """``doc`` as a ``Flag``, or ``InvalidDefinition``. With ``evaluators``,
    every ``$ref`` must name one of them; without, only their shape is checked."""
    checker = _Checker(evaluators)
    flag = checker.flag(key, doc, f"flags.{key}")
    if flag is None or checker.problems:
        raise InvalidDefinition(checker.problems or [Problem(f"flags.{key}", "invalid flag")])
    return flag


def validate_flag_set(document: Json) -> FlagSet:
    """A whole flags.json document as a ``FlagSet``, or ``InvalidDefinition``."""
    checker = _Checker(None)
    if not isinstance(document, dict):
        raise InvalidDefinition([Problem("", "a flag set is a JSON object")])
    if not _is_json(document):
        raise InvalidDefinition([Problem("", "not a JSON document (non-finite number or non-JSON value)")])
    size = len(_canonical(document).encode("utf-8"))
    if size > MAX_SET_BYTES:
        raise InvalidDefinition(
            [Problem("", f"a flag set has at most {MAX_SET_BYTES} bytes, this has {size}")]
        )
    for name in sorted(set(document) - {"flags", "$evaluators", "metadata", "$schema"}):
        checker.add(name, "unknown field")
    evaluators = document.get("$evaluators", {})
    if not isinstance(evaluators, dict):
        checker.add("$evaluators", "an object of name -> JsonLogic rule")
        evaluators = {}
    checker.evaluators = evaluators
    for name, rule in evaluators.items():
        if not 0 < len(name) <= MAX_NAME_LENGTH:
            checker.add(f"$evaluators.{name}", f"evaluator names have 1-{MAX_NAME_LENGTH} characters")
        if checker.depth_ok(rule, f"$evaluators.{name}"):
            checker.rule(rule, f"$evaluators.{name}")
    checker.ref_cycles(evaluators)
    metadata = checker.metadata(document.get("metadata"), "metadata")
    flags_doc = document.get("flags")
    flags: dict[str, Flag] = {}
    if "flags" not in document:
        checker.add("flags", "required field is missing")
    elif not isinstance(flags_doc, dict):
        checker.add("flags", "an object of flag key -> flag")
    elif len(flags_doc) > MAX_FLAGS:
        checker.add("flags", f"at most {MAX_FLAGS} flags, got {len(flags_doc)}")
    else:
        for key, doc in flags_doc.items():
            flag = checker.flag(key, doc, f"flags.{key}")
            if flag is not None:
                flags[key] = flag
    if checker.problems:
        raise InvalidDefinition(checker.problems)
    return FlagSet(flags, dict(evaluators), metadata)
