"""``FlagdEvaluator``: a flag set compiled once per change, evaluated with flagd's semantics.

It implements the ``Evaluator`` protocol of ``openfeature-flagd-api`` (the
one ``openfeature-flagd-core`` implements and the flagd in-process provider
drives): ``set_flags``, ``set_flags_and_get_changed_keys``,
``get_flag_set_metadata`` and ``resolve_{boolean,string,integer,float,object}_value``.
Results and errors are the reference's, so an OpenFeature client sees the
same value, variant, reason, error code and metadata from either:

- unknown flag: ``FlagNotFoundError`` (FLAG_NOT_FOUND);
- ``DISABLED``: the caller's default, no variant;
- no targeting (absent or ``{}``): the default variant, ``STATIC``;
- targeting that yields null: the default variant, ``DEFAULT``; with no
  default variant, the caller's default (``DEFAULT``, no variant);
- targeting that yields a variant name (booleans as ``true``/``false``, other
  non-strings through ``str``): that variant, ``TARGETING_MATCH`` (fractional
  splits too: flagd never answers ``SPLIT``); a name that is not a variant, or
  a variant whose value is null: ``GeneralError`` (GENERAL);
- an unknown operation reached (e.g. a ``$ref`` to no evaluator): ``ParseError``;
  any other failure inside targeting (division by zero): ``GeneralError``;
- a resolved value of the wrong type: ``TypeMismatchError`` (floats accept
  integers and return them as floats);
- metadata: the flag's over the flag set's, on every answer but FLAG_NOT_FOUND.

Invariants: the compiled snapshot is immutable and replaced whole by
``set_flags`` (readers need no lock; a failed load leaves the previous set in
place); evaluation is pure: the result depends only on the snapshot, the
context and ``now`` (Unix seconds, read from the clock only for rules that use
``$flagd.timestamp``), and nothing the caller passes or receives is shared
mutable state (metadata mappings are read-only dicts).
"""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, TypeVar, cast

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import (
    FlagNotFoundError,
    GeneralError,
    OpenFeatureError,
    ParseError,
    TypeMismatchError,
)
from openfeature.flag_evaluation import FlagResolutionDetails, FlagValueType, Reason

from flags.flagd_ops import DEFAULT_FRACTIONAL_VERSION, FractionalVersion, flagd_operations
from flags.jsonlogic import JSONLOGIC_OPERATIONS, CompileContext, Fn, Root, UnknownOperation, compile_rule

T = TypeVar("T")

BOOLEAN, STRING, INTEGER, FLOAT, OBJECT = range(5)
_TYPE_NAMES = ("bool", "str", "int", "float", "dict or list")
_EMPTY_ATTRIBUTES: Mapping[str, Any] = {}


class ReadOnlyMetadata(dict[str, Any]):
    """A dict (JSON- and protobuf-friendly) that refuses mutation: one instance serves every result."""

    def _refuse(self, *_args: Any, **_kwargs: Any) -> NoReturn:
        raise TypeError("flag metadata is read-only")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse


class _CallerDefault:
    """Outcome: the caller's default value, no variant, with this reason."""

    __slots__ = ("reason",)

    def __init__(self, reason: Reason) -> None:
        self.reason = reason


class _Failure:
    """Outcome: raise this OpenFeature error (a new instance per evaluation)."""

    __slots__ = ("error", "message")

    def __init__(self, error: Callable[[str], OpenFeatureError], message: str) -> None:
        self.error, self.message = error, message

    def raise_(self) -> NoReturn:
        raise self.error(self.message)


Outcome = dict[str, Any] | _CallerDefault | _Failure
"""Per result type: a ready ``FlagResolutionDetails.__dict__`` to copy, or one of the above."""


@dataclass(frozen=True, slots=True)
class CompiledFlag:
    key: str
    targeting: Fn | None
    """None when the answer does not depend on the context (static, disabled, broken)."""
    uses_now: bool
    immediate: tuple[Outcome, ...]
    """Per result type, when ``targeting`` is None."""
    on_null: tuple[Outcome, ...]
    """Per result type, when targeting yields null (the default variant, DEFAULT)."""
    by_variant: Mapping[str, tuple[Outcome, ...]]
    """Per variant name, per result type: TARGETING_MATCH."""
    definition: tuple[Any, ...]
    """What decides whether a new set changed this flag."""
    metadata: Mapping[str, Any]
    """The flag's metadata over the flag set's (read-only)."""


def _conforms(kind: int, value: Any) -> bool:
    if kind == BOOLEAN:
        return isinstance(value, bool)
    if kind == STRING:
        return isinstance(value, str)
    if kind == INTEGER:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == FLOAT:
        return isinstance(value, (int, float))  # booleans too, as in the reference
    return isinstance(value, (dict, list))


def _variant_outcomes(
    name: str, value: Any, reason: Reason, metadata: ReadOnlyMetadata
) -> tuple[Outcome, ...]:
    outcomes: list[Outcome] = []
    for kind in range(5):
        if not _conforms(kind, value):
            message = f"Expected type {_TYPE_NAMES[kind]} but got {type(value).__name__}"
            outcomes.append(_Failure(TypeMismatchError, message))
            continue
        typed = float(value) if kind == FLOAT and isinstance(value, int) else value
        outcomes.append(
            {
                "value": typed,
                "error_code": None,
                "error_message": None,
                "reason": reason,
                "variant": name,
                "flag_metadata": metadata,
            }
        )
    return tuple(outcomes)


def _all_kinds(outcome: Outcome) -> tuple[Outcome, ...]:
    return (outcome,) * 5


def _validate_metadata(metadata: Any, where: str) -> dict[str, Any]:
    if not isinstance(metadata, dict):
        raise ParseError(f"{where} metadata is not a valid json object")
    for key, value in metadata.items():
        if not isinstance(key, str) or not key:
            raise ParseError(f"{where} metadata key {key!r} must be a non-empty string")
        if value is None or not isinstance(value, (float, int, str, bool)):
            raise ParseError(f"{where} metadata value for {key!r} must be a float, int, str or bool")
    return metadata


def _resolve_refs(node: Any, name: str, rule: Any) -> Any:
    """Replace every ``{"$ref": name}`` by a copy of ``rule`` (not looking inside the copies)."""
    if isinstance(node, dict):
        if len(node) == 1 and node.get("$ref", None) == name and isinstance(node["$ref"], str):
            return copy.deepcopy(rule)
        return {key: _resolve_refs(value, name, rule) for key, value in node.items()}
    if isinstance(node, list):
        return [_resolve_refs(item, name, rule) for item in node]
    return node


def compile_flag(
    key: str, data: Any, set_metadata: Mapping[str, Any], version: FractionalVersion
) -> CompiledFlag:
    """One flag definition (``$ref`` already resolved) -> its compiled form; ParseError if invalid."""
    if not isinstance(data, dict):
        raise ParseError(f"flag {key!r} is not an object")
    state = data.get("state")
    if state not in ("ENABLED", "DISABLED"):
        raise ParseError("Incorrect 'state' value provided in flag config")
    variants = data.get("variants")
    if not variants or not isinstance(variants, dict):
        raise ParseError("Incorrect 'variants' value provided in flag config")
    default_variant = data.get("defaultVariant")
    if default_variant and not isinstance(default_variant, (str, bool)):
        raise ParseError("Incorrect 'defaultVariant' value provided in flag config")
    if isinstance(default_variant, bool):
        default_variant = str(default_variant).lower()
    if not default_variant:
        default_variant = None
    flag_metadata = data.get("metadata")
    if flag_metadata:
        _validate_metadata(flag_metadata, "Flag")
    metadata = ReadOnlyMetadata(set_metadata)
    dict.update(metadata, flag_metadata or {})
    targeting_rule = data.get("targeting")
    definition = (state, variants, default_variant, targeting_rule, flag_metadata)

    def default_outcomes(reason: Reason) -> tuple[Outcome, ...]:
        if default_variant is None:
            return _all_kinds(_CallerDefault(Reason.DEFAULT))
        if default_variant not in variants:
            return _all_kinds(
                _Failure(GeneralError, f"Resolved variant {default_variant} not in variants config.")
            )
        return _variant_outcomes(default_variant, variants[default_variant], reason, metadata)

    def context_free(outcomes: tuple[Outcome, ...]) -> CompiledFlag:
        return CompiledFlag(key, None, False, outcomes, (), {}, definition, metadata)

    if state == "DISABLED":
        return context_free(_all_kinds(_CallerDefault(Reason.DISABLED)))
    if not targeting_rule:
        return context_free(default_outcomes(Reason.STATIC))
    if not isinstance(targeting_rule, dict):
        return context_free(
            _all_kinds(_Failure(ParseError, f"Invalid 'targeting' value in flag: {targeting_rule}"))
        )
    operations = {**JSONLOGIC_OPERATIONS, **flagd_operations(version)}
    cx = CompileContext(key, operations)
    targeting, _constant = compile_rule(targeting_rule, cx)
    by_variant: dict[str, tuple[Outcome, ...]] = {}
    for name, value in variants.items():
        if name == "" or value is None:
            by_variant[name] = _all_kinds(
                _Failure(GeneralError, f"Resolved variant {name} not in variants config.")
            )
        else:
            by_variant[name] = _variant_outcomes(name, value, Reason.TARGETING_MATCH, metadata)
    return CompiledFlag(
        key, targeting, cx.uses_now, (), default_outcomes(Reason.DEFAULT), by_variant, definition, metadata
    )


@dataclass(frozen=True, slots=True)
class CompiledSet:
    flags: Mapping[str, CompiledFlag]
    metadata: Mapping[str, Any]
    static: tuple[Mapping[str, dict[str, Any]], ...] = ({},) * 5
    """Per result type: flag key -> ready result, for flags whose answer ignores the context."""


def _static_results(flags: Mapping[str, CompiledFlag]) -> tuple[Mapping[str, dict[str, Any]], ...]:
    return tuple(
        {
            key: outcome
            for key, flag in flags.items()
            if flag.targeting is None and type(outcome := flag.immediate[kind]) is dict
        }
        for kind in range(5)
    )


def compile_flag_set(configuration: str | Mapping[str, Any], version: FractionalVersion) -> CompiledSet:
    """A flags.json document (text or parsed) -> its compiled form; ParseError if invalid."""
    try:
        data = json.loads(configuration) if isinstance(configuration, str) else configuration
    except ValueError as error:
        raise ParseError(f"flag configuration is not JSON: {error}") from error
    if not isinstance(data, Mapping):
        raise ParseError("flag configuration must be a JSON object")
    flags = data.get("flags", {})
    set_metadata = data.get("metadata", {})
    evaluators = data.get("$evaluators")
    if evaluators:
        if not isinstance(evaluators, dict):
            raise ParseError("`$evaluators` key of configuration must be a dictionary")
        for name, rule in evaluators.items():  # in order: an evaluator may use a later one
            flags = _resolve_refs(flags, name, rule)
    if not isinstance(flags, dict):
        raise ParseError("`flags` key of configuration must be a dictionary")
    if not isinstance(set_metadata, dict):
        raise ParseError("`metadata` key of configuration must be a dictionary")
    _validate_metadata(set_metadata, "Flag set")
    compiled = {key: compile_flag(key, flag, set_metadata, version) for key, flag in flags.items()}
    return CompiledSet(compiled, ReadOnlyMetadata(set_metadata), _static_results(compiled))


_new_details = object.__new__


class FlagdEvaluator:
    """The flagd ``Evaluator`` over a compiled flag set (see the module docstring)."""

    def __init__(
        self,
        *,
        fractional: FractionalVersion | str = DEFAULT_FRACTIONAL_VERSION,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.fractional = FractionalVersion(fractional)
        self._clock = clock
        self._set = CompiledSet({}, ReadOnlyMetadata())

    # --- loading -------------------------------------------------------------------

    def set_flags(self, flag_configuration: str | dict[str, Any]) -> None:
        self._set = compile_flag_set(flag_configuration, self.fractional)

    def set_flags_and_get_changed_keys(self, flag_configuration: str | dict[str, Any]) -> list[str]:
        new = compile_flag_set(flag_configuration, self.fractional)
        old_flags = self._set.flags
        changed = sorted(new.flags.keys() ^ old_flags.keys())
        changed += sorted(
            key
            for key, flag in new.flags.items()
            if key in old_flags and old_flags[key].definition != flag.definition
        )
        self._set = new
        return changed

    def get_flag_set_metadata(self) -> Mapping[str, float | int | str | bool]:
        return dict(self._set.metadata)

    def flag_keys(self) -> list[str]:
        return list(self._set.flags)

    def uses_clock(self) -> bool:
        """Whether any flag's rules read ``$flagd.timestamp``: then an answer may
        change with time alone, with no change to the flags (callers must not
        keep answers across calls)."""
        return any(flag.uses_now for flag in self._set.flags.values())

    # --- evaluation ------------------------------------------------------------------

    def resolve_boolean_value(
        self,
        flag_key: str,
        default_value: bool,
        ctx: EvaluationContext | None = None,
        *,
        now: int | None = None,
    ) -> FlagResolutionDetails[bool]:
        static = self._set.static[BOOLEAN].get(flag_key)
        if static is not None:  # the hot path: one lookup, one dict copy
            details = _new_details(FlagResolutionDetails)
            details.__dict__ = static.copy()
            return cast(FlagResolutionDetails[bool], details)
        return self.evaluate(flag_key, BOOLEAN, default_value, ctx, now)

    def resolve_string_value(
        self,
        flag_key: str,
        default_value: str,
        ctx: EvaluationContext | None = None,
        *,
        now: int | None = None,
    ) -> FlagResolutionDetails[str]:
        static = self._set.static[STRING].get(flag_key)
        if static is not None:  # the hot path: one lookup, one dict copy
            details = _new_details(FlagResolutionDetails)
            details.__dict__ = static.copy()
            return cast(FlagResolutionDetails[str], details)
        return self.evaluate(flag_key, STRING, default_value, ctx, now)

    def resolve_integer_value(
        self,
        flag_key: str,
        default_value: int,
        ctx: EvaluationContext | None = None,
        *,
        now: int | None = None,
    ) -> FlagResolutionDetails[int]:
        static = self._set.static[INTEGER].get(flag_key)
        if static is not None:  # the hot path: one lookup, one dict copy
            details = _new_details(FlagResolutionDetails)
            details.__dict__ = static.copy()
            return cast(FlagResolutionDetails[int], details)
        return self.evaluate(flag_key, INTEGER, default_value, ctx, now)

    def resolve_float_value(
        self,
        flag_key: str,
        default_value: float,
        ctx: EvaluationContext | None = None,
        *,
        now: int | None = None,
    ) -> FlagResolutionDetails[float]:
        static = self._set.static[FLOAT].get(flag_key)
        if static is not None:  # the hot path: one lookup, one dict copy
            details = _new_details(FlagResolutionDetails)
            details.__dict__ = static.copy()
            return cast(FlagResolutionDetails[float], details)
        return self.evaluate(flag_key, FLOAT, default_value, ctx, now)

    def resolve_object_value(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        ctx: EvaluationContext | None = None,
        *,
        now: int | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        static = self._set.static[OBJECT].get(flag_key)
        if static is not None:  # the hot path: one lookup, one dict copy
            details = _new_details(FlagResolutionDetails)
            details.__dict__ = static.copy()
            return cast(FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]], details)
        return self.evaluate(flag_key, OBJECT, default_value, ctx, now)

    def evaluate(
        self,
        flag_key: str,
        kind: int,
        default_value: T,
        ctx: EvaluationContext | None,
        now: int | None = None,
    ) -> FlagResolutionDetails[T]:
        """Resolve ``flag_key`` as result type ``kind`` (BOOLEAN ... OBJECT)."""
        flag = self._set.flags.get(flag_key)
        if flag is None:
            raise FlagNotFoundError(f"Flag with key {flag_key} not present in flag store.")
        targeting = flag.targeting
        if targeting is None:
            outcome = flag.immediate[kind]
        else:
            if now is None:
                now = int(self._clock()) if flag.uses_now else 0
            root: Root
            if ctx is None:
                root = (_EMPTY_ATTRIBUTES, None, now)
            else:
                root = (ctx.attributes, ctx.targeting_key, now)
            try:
                result = targeting(root)
            except OpenFeatureError:
                raise
            except UnknownOperation as error:
                raise ParseError(f"Invalid targeting in flag {flag_key}: {error}") from error
            except Exception as error:
                raise GeneralError(f"targeting of flag {flag_key} failed: {error!r}") from error
            if result is None:
                outcome = flag.on_null[kind]
            else:
                if type(result) is not str:
                    result = ("true" if result else "false") if isinstance(result, bool) else str(result)
                outcomes = flag.by_variant.get(result)
                if outcomes is None:
                    raise GeneralError(f"Resolved variant {result} not in variants config.")
                outcome = outcomes[kind]
        if type(outcome) is dict:
            details = _new_details(FlagResolutionDetails)
            details.__dict__ = outcome.copy()
            return cast(FlagResolutionDetails[T], details)
        if type(outcome) is _CallerDefault:
            value: Any = default_value
            if kind == FLOAT and isinstance(value, int):
                value = float(value)
            return FlagResolutionDetails(value, reason=outcome.reason, flag_metadata=flag.metadata)
        cast(_Failure, outcome).raise_()
