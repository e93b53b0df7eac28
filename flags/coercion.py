"""JsonLogic value semantics as flagd's Python evaluator applies them.

The reference is ``openfeature-flagd-core`` (the in-process flagd provider's
evaluator), whose JsonLogic engine follows JavaScript's coercions with
Python's arithmetic. Bit-compatibility with it is the contract, so the rules
here reproduce its observable behaviour, quirks included:

- truthiness: ``None``, ``False``, ``0``, ``0.0``, NaN, ``""`` and ``[]`` are
  false; every object (even ``{}``) is true;
- ``to_string`` formats floats with ``%.15g`` and, because ``bool`` is an
  ``int`` in Python, writes booleans as ``True``/``False``;
- ``to_number`` maps ``None`` and ``[]`` to 0, a one-item list to its item,
  objects and unparsable strings to NaN, and refuses ``"inf"`` spellings;
- loose equality (``==``) compares lists and objects by identity;
- ordering compares numbers numerically when either side is a number, strings
  lexically when either side is a string, numbers otherwise.

Invariants: every function is pure (no I/O, no state) and never mutates its
arguments. They raise only where the reference raises (``TypeError`` for
non-JSON operands of ``==``; ``int()`` overflow for infinite indexes).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

NAN = float("nan")
NUMERIC = (int, float)
_INFINITY_SPELLINGS = frozenset({"inf", "-inf", "+inf"})


def truthy(value: Any) -> bool:
    """JavaScript truthiness over JSON values (objects are always true)."""
    if value is None:
        return False
    if value is True or value is False:
        return value
    if isinstance(value, float):
        return not math.isnan(value) and value != 0.0
    if isinstance(value, (str, int, list)):
        return bool(value)
    return True


def to_number(value: Any) -> int | float:
    if isinstance(value, NUMERIC):
        return value
    if value is None:
        return 0
    if isinstance(value, list):
        if not value:
            return 0
        if len(value) > 1:
            return NAN
        return to_number(value[0])
    if isinstance(value, dict):
        return NAN
    if isinstance(value, str) and value.strip().lower() in _INFINITY_SPELLINGS:
        return NAN
    try:
        return float(value)
    except (ValueError, TypeError):
        return NAN


def to_string(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, float):
        return f"{value:.15g}"  # what the reference's "%.15g" writes
    if isinstance(value, int):  # booleans too: the reference writes True/False
        return str(value)
    if value is None:
        return "null"
    if isinstance(value, list):
        return ",".join(to_string(item) for item in value)
    if isinstance(value, dict):
        return "[object Object]"
    return str(value)


def loose_equals(a: Any, b: Any) -> bool:
    """JsonLogic ``==``."""
    a_type = type(a)
    if a_type is type(b):
        if a_type is list or a_type is dict:
            return a is b
        return bool(a == b)
    if isinstance(a, NUMERIC):
        return a == (b if isinstance(b, NUMERIC) else to_number(b))
    if isinstance(b, NUMERIC):
        return to_number(a) == b
    if a is None or b is None:
        return False
    if isinstance(a, str):
        if isinstance(b, bool):
            return to_number(a) == to_number(b)
        if isinstance(b, (list, dict)):
            return a == to_string(b)
        raise TypeError("== between a string and a non-JSON value")
    if isinstance(a, bool):
        return to_number(a) == to_number(b)
    if isinstance(a, (list, dict)):
        if isinstance(b, (list, dict)):
            return False
        if isinstance(b, str):
            return to_string(a) == b
        if isinstance(b, bool):
            return to_number(a) == to_number(b)
    raise TypeError("== between non-JSON values")


def _ordering(compare: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    """The reference's coercion ladder for <, <=, >, >= around one comparison."""

    def ordered(a: Any, b: Any) -> bool:
        if isinstance(a, NUMERIC):
            return compare(a, to_number(b))
        if isinstance(b, NUMERIC):
            return compare(to_number(a), b)
        if isinstance(a, str):
            return compare(a, to_string(b))
        if isinstance(b, str):
            return compare(to_string(a), b)
        return compare(to_number(a), to_number(b))

    return ordered


less = _ordering(lambda a, b: a < b)
less_or_equal = _ordering(lambda a, b: a <= b)
greater = _ordering(lambda a, b: a > b)
greater_or_equal = _ordering(lambda a, b: a >= b)


def walk(data: Any, props: list[str], default: Any) -> Any:
    """Follow a dotted ``var`` path already split into ``props``.

    Lists and strings take decimal indexes and answer ``length`` (ending the
    walk, as JavaScript would); anything that is not a container ends it
    with the default, and so does a final ``None``.
    """
    for prop in props:
        if isinstance(data, (list, str)):
            if prop == "length":
                return len(data)
            try:
                index = int(prop, 10)
            except ValueError:
                return default
            if prop != str(index) or index < 0 or index >= len(data):
                return default
            data = data[index]
        elif isinstance(data, dict):
            data = data.get(prop)
        else:
            return default
    return default if data is None else data


def lookup(data: Any, key: Any, default: Any = None) -> Any:
    """JsonLogic ``var`` against a plain JSON value."""
    if key is None or key == "":
        return data
    if isinstance(key, NUMERIC):
        if isinstance(data, (list, str)):
            try:
                index = int(key)
            except ValueError:
                return default
            if index != key or index < 0 or index >= len(data):
                return default
            return data[index]
        if isinstance(data, dict):
            data = data.get(key)
            if data is None:
                return default
        else:
            return default
    return walk(data, to_string(key).split("."), default)


def substring(text: Any, start: Any, length: Any = None) -> str:
    """JsonLogic ``substr`` (negative start counts from the end, negative length stops short)."""
    string = to_string(text)
    index = to_number(start)
    size = len(string)
    if math.isnan(index):
        index = 0
    elif index < 0:
        index = -index
        index = 0 if index >= size else size - int(index)
    else:
        index = min(int(index), size)
    if length is None:
        end = size
    else:
        count = to_number(length)
        if math.isnan(count):
            end = index
        else:
            count = int(count)
            end = max(size + count, index) if count < 0 else index + count
    return string[index:end]


def contains(needle: Any, haystack: Any) -> bool:
    """JsonLogic ``in``: list membership (Python equality) or substring."""
    if isinstance(haystack, list):
        return needle in haystack
    if isinstance(haystack, str):
        return to_string(needle) in haystack
    return False


def merge(args: list[Any]) -> list[Any]:
    items: list[Any] = []
    for arg in args:
        if isinstance(arg, list):
            items.extend(arg)
        else:
            items.append(arg)
    return items


def missing(data: Any, args: list[Any]) -> list[Any]:
    """JsonLogic ``missing``: keys whose ``var`` is null or empty."""
    keys = args[0] if args and isinstance(args[0], list) else args
    absent = []
    for key in keys:
        value = lookup(data, key)
        if value is None or value == "":
            absent.append(key)
    return absent


def missing_some(data: Any, need: Any, keys: Any) -> list[Any]:
    if not isinstance(keys, list):
        return []
    absent = missing(data, [keys])
    if len(keys) - len(absent) >= to_number(need):
        return []
    return absent
