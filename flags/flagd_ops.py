"""flagd's custom JsonLogic operations: ``fractional``, ``sem_ver``, ``starts_with``, ``ends_with``.

Each is an ``OperationCompiler`` (see ``flags.jsonlogic``): it receives its
compiled arguments, evaluates them all at evaluation time (as flagd does) and
precomputes what only depends on constants (parsed weights, the hash of a
constant bucketing value, a parsed constant version).

Fractional bucketing has three published algorithms (``FractionalVersion``):

- ``v1`` (flagd before April 2026): the bucketing string is the first argument
  if it is a string, else flag key + targeting key; ``abs(int32 murmur3)`` /
  MaxInt32 * 100 is compared with cumulative percentages ``100 * w / total``.
- ``v2`` (flagd Go today): the same key; ``bucket = (uint32 murmur3 * total) >> 32``,
  the first variant whose cumulative weight exceeds it.
- ``v3`` (openfeature-flagd-core 2.0, the in-process provider): the first
  argument unless it is a list, else the CBOR array ``[flagKey, targetingKey]``;
  the value is normalised (integral floats become integers), encoded as
  deterministic CBOR and hashed; then v2's bucketing.

Invariants: murmur3 is MurmurHash3 x86 32-bit, seed 0 (``mmh3``); CBOR is
``cbor2``'s canonical encoding, never hand-written; a weight is an integer
(not a boolean), negative weights count as 0, a total of 0 or above MaxInt32
buckets nobody (null). Invalid input to any of these operations yields null
(``starts_with``/``ends_with`` too, so the default variant applies rather than
a "false" variant), never an exception.
"""

from __future__ import annotations

import enum
import io
import threading
from collections.abc import Callable
from typing import Any

import cbor2
import mmh3
import semver

from flags.jsonlogic import VARIES, CompileContext, Node, OperationCompiler, const, fold

MAX_TOTAL_WEIGHT = 2_147_483_647  # MaxInt32


class FractionalVersion(enum.StrEnum):
    V1 = "v1"
    V2 = "v2"
    V3 = "v3"


DEFAULT_FRACTIONAL_VERSION = FractionalVersion.V3
"""What the in-process flagd provider uses: server and provider bucket users alike."""


class _InvalidFractions(ValueError):
    pass


def parse_fractions(entries: list[Any]) -> tuple[list[tuple[Any, int]], int]:
    """``[[variant, weight?], ...]`` -> ([(variant, weight)], total); raises on bad shape."""
    fractions = []
    total = 0
    for entry in entries:
        if not isinstance(entry, (list, tuple)) or not entry or len(entry) > 2:
            raise _InvalidFractions("a fraction is [variant] or [variant, weight]")
        weight = 1
        if len(entry) == 2:
            raw = entry[1]
            if isinstance(raw, bool) or not isinstance(raw, int):
                raise _InvalidFractions("a fraction weight is an integer")
            weight = max(0, raw)  # rollout arithmetic may go negative: clamp, as flagd does
        fractions.append((entry[0], weight))
        total += weight
    return fractions, total


def pick_by_weight(hash32: int, fractions: list[tuple[Any, int]], total: int) -> Any:
    """v2/v3 bucketing of an unsigned 32-bit hash."""
    bucket = (hash32 * total) >> 32
    end = 0
    for variant, weight in fractions:
        end += weight
        if bucket < end:
            return variant
    return None


def pick_by_percentage(signed_hash: int, fractions: list[tuple[Any, int]], total: int) -> Any:
    """v1 bucketing of a signed 32-bit hash."""
    bucket = abs(signed_hash) / MAX_TOTAL_WEIGHT * 100
    end = 0.0
    for variant, weight in fractions:
        end += 100 * weight / total
        if bucket < end:
            return variant
    return None


def _normalize_numbers(value: Any) -> Any:
    """Integral floats as integers (within the 64-bit range), recursively: the v3 hash input."""
    if isinstance(value, dict):
        return {k: _normalize_numbers(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalize_numbers(v) for v in value]
    if isinstance(value, float) and value.is_integer() and -(2**63) <= value <= 2**64 - 1:
        return int(value)
    return value


class _Encoders(threading.local):
    """One reusable canonical CBOR encoder per thread (building one per call costs microseconds)."""

    def __init__(self) -> None:
        self.buffer = io.BytesIO()
        self.encoder = cbor2.CBOREncoder(self.buffer, canonical=True)


_ENCODERS = _Encoders()


def cbor_hash(value: Any) -> int | None:
    """Unsigned murmur3 of the deterministic CBOR of ``value``; None if it cannot be encoded."""
    return cbor_hash_normalized(value if type(value) is str else _normalize_numbers(value))


def cbor_hash_normalized(value: Any) -> int | None:
    """``cbor_hash`` of a value with no integral floats in it (e.g. ``[flag key, targeting key]``)."""
    local = _ENCODERS
    buffer = local.buffer
    buffer.seek(0)
    buffer.truncate()
    try:
        local.encoder.encode(value)
    except Exception:
        # An encoder left mid-value is not reused.
        local.buffer = io.BytesIO()
        local.encoder = cbor2.CBOREncoder(local.buffer, canonical=True)
        return None
    return mmh3.hash(buffer.getvalue(), signed=False)


def _null_after(_evaluated: Any) -> None:
    return None


def _shorthand_keys(cx: CompileContext) -> Callable[[Any], tuple[Any, Any]]:
    """(flag key, targeting key) as flagd's data holds them: the root's, or an item's."""
    if cx.root:
        flag_key = cx.flag_key
        return lambda root: (flag_key, root[1])
    # Inside map/filter bodies the data is the item; a non-dict item raises, as in the reference.
    return lambda item: (item.get("$flagd", {}).get("flagKey", ""), item.get("targetingKey"))


def fractional(version: FractionalVersion) -> OperationCompiler:
    def build(args: list[Node], cx: CompileContext) -> Node:
        if not args:
            return const(None)
        read_keys = _shorthand_keys(cx)
        fns = [fn for fn, _value in args]
        _first_fn, first = args[0]
        explicit: bool | None = None  # is the first argument the bucketing value? (None: decided per call)
        if first is not VARIES:
            if version is FractionalVersion.V3:
                explicit = not isinstance(first, (list, tuple))
            else:
                explicit = isinstance(first, str)
        # Weights parsed once when every fraction is a constant.
        constant_fractions: tuple[list[tuple[Any, int]], int] | _InvalidFractions | None = None
        dist_nodes = args[1:] if explicit else args if explicit is False else None
        if dist_nodes is not None and all(value is not VARIES for _fn, value in dist_nodes):
            try:
                constant_fractions = parse_fractions([value for _fn, value in dist_nodes])
            except _InvalidFractions as error:
                constant_fractions = error
        pick = pick_by_percentage if version is FractionalVersion.V1 else pick_by_weight

        def hash_of(key: Any) -> int | None:
            if version is FractionalVersion.V3:
                return cbor_hash(key)
            return mmh3.hash(key, signed=version is FractionalVersion.V1)

        # A constant bucketing value hashes once.
        constant_hash: int | None = None
        if explicit and first is not None and (version is FractionalVersion.V3 or isinstance(first, str)):
            constant_hash = hash_of(first)

        def fractional_(data: Any) -> Any:
            values = [fn(data) for fn in fns]
            head = values[0]
            is_explicit = explicit
            if is_explicit is None:
                if version is FractionalVersion.V3:
                    is_explicit = not isinstance(head, (list, tuple))
                else:
                    is_explicit = isinstance(head, str)
            if is_explicit:
                if head is None:
                    return None
                hashed = constant_hash if constant_hash is not None else hash_of(head)
                entries = values[1:]
            else:
                flag_key, targeting_key = read_keys(data)
                if not isinstance(targeting_key, str) or not targeting_key:
                    return None
                if version is FractionalVersion.V3:
                    pair = [flag_key, targeting_key]
                    hashed = cbor_hash_normalized(pair) if type(flag_key) is str else cbor_hash(pair)
                else:
                    hashed = hash_of(flag_key + targeting_key)
                entries = values
            if hashed is None:
                return None
            if constant_fractions is not None:
                if isinstance(constant_fractions, _InvalidFractions):
                    return None
                fractions, total = constant_fractions
            else:
                try:
                    fractions, total = parse_fractions(entries)
                except _InvalidFractions:
                    return None
            if total <= 0 or total > MAX_TOTAL_WEIGHT:
                return None
            return pick(hashed, fractions, total)

        return fractional_, VARIES

    return build


# --- sem_ver ----------------------------------------------------------------------------

_VERSION_CACHE: dict[str, semver.Version] = {}
_VERSION_CACHE_LIMIT = 4096


def parse_version(value: Any) -> semver.Version:
    """flagd's lenient semantic version: optional v/V prefix, missing minor/patch padded with 0.

    Raises ValueError for anything else (build metadata is kept but never compared).
    """
    text = str(value)
    cached = _VERSION_CACHE.get(text)
    if cached is not None:
        return cached
    version = text[1:] if text.startswith(("v", "V")) else text
    numeric = version.split("-")[0].split("+")[0]
    dots = numeric.count(".")
    if dots < 2:
        version = numeric + ".0" * (2 - dots) + version[len(numeric) :]
    parsed = semver.Version.parse(version)
    if len(_VERSION_CACHE) >= _VERSION_CACHE_LIMIT:
        _VERSION_CACHE.clear()
    _VERSION_CACHE[text] = parsed
    return parsed


_SEMVER_COMPARISONS: dict[str, Callable[[semver.Version, semver.Version], bool]] = {
    "=": lambda a, b: a == b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    "<=": lambda a, b: a <= b,
    ">": lambda a, b: a > b,
    ">=": lambda a, b: a >= b,
    "^": lambda a, b: a.major == b.major,
    "~": lambda a, b: a.major == b.major and a.minor == b.minor,
}


def sem_ver_values(values: list[Any]) -> bool | None:
    if len(values) != 3:
        return None
    left, op, right = values
    try:
        a, b = parse_version(left), parse_version(right)
    except ValueError:
        return None
    compare = _SEMVER_COMPARISONS.get(op) if isinstance(op, str) else None
    return None if compare is None else compare(a, b)


def sem_ver(args: list[Node], cx: CompileContext) -> Node:
    fns = [fn for fn, _value in args]
    if len(args) == 3 and args[0][1] is VARIES and args[1][1] is not VARIES and args[2][1] is not VARIES:
        left_fn, op, right = args[0][0], args[1][1], args[2][1]
        compare = _SEMVER_COMPARISONS.get(op) if isinstance(op, str) else None
        try:
            right_version = parse_version(right)
        except ValueError:
            right_version = None
        if compare is None or right_version is None:
            return (lambda data: _null_after(left_fn(data))), VARIES  # evaluated, always null

        def sem_ver_constant(data: Any) -> bool | None:
            try:
                left = parse_version(left_fn(data))
            except ValueError:
                return None
            return compare(left, right_version)

        return sem_ver_constant, VARIES
    return fold(lambda data: sem_ver_values([fn(data) for fn in fns]), args)


# --- starts_with / ends_with -----------------------------------------------------------


def _string_test(test: Callable[[str, str], bool]) -> OperationCompiler:
    def build(args: list[Node], cx: CompileContext) -> Node:
        if len(args) != 2:
            fns = [fn for fn, _value in args]
            return fold(lambda data: _null_after([fn(data) for fn in fns]), args)
        (fa, a), (fb, b) = args
        if a is VARIES and isinstance(b, str):

            def against_constant(data: Any) -> bool | None:
                value = fa(data)
                return test(value, b) if isinstance(value, str) else None

            return against_constant, VARIES

        def both(data: Any) -> bool | None:
            left, right = fa(data), fb(data)
            if isinstance(left, str) and isinstance(right, str):
                return test(left, right)
            return None

        return fold(both, args)

    return build


def flagd_operations(version: FractionalVersion) -> dict[str, OperationCompiler]:
    """The custom operations, with the chosen fractional algorithm."""
    return {
        "fractional": fractional(version),
        "sem_ver": sem_ver,
        "starts_with": _string_test(str.startswith),
        "ends_with": _string_test(str.endswith),
    }
