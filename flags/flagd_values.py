"""Values between ``google.protobuf.Struct`` (the flagd protocols) and the evaluator's Python values.

A Struct number is a double. The flagd provider builds the request context
with ``Struct.update(attributes)``, so an application's ``age=42`` arrives as
``42.0``; flagd (Go) reads it back into JSON, where it is ``42`` again. The
in-process provider hands the evaluator the application's own ``42``. So a
context number that is integral (and exactly representable: |x| <= 2^53) is
turned back into an ``int``: ``cat``, ``var`` used as a variant name, string
``in`` and fractional bucketing then see what they see in-process and in flagd.

The provider sends the targeting key as the context field ``targetingKey``
(null when the application set none); it becomes
``EvaluationContext.targeting_key`` (a string, or None) and leaves the
attributes, as in-process.

Invariants: conversion is total (every Struct converts; a null or unset
``Value`` is None) and pure; outgoing Structs are new messages (nothing the
evaluator holds, e.g. read-only metadata, is shared with protobuf).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.struct_pb2 import ListValue, Struct, Value
from openfeature.evaluation_context import EvaluationContext

__all__ = ["TARGETING_KEY", "context_from_struct", "plain_value", "struct_from_mapping"]

TARGETING_KEY = "targetingKey"
MAX_EXACT_INTEGER = 1 << 53


def plain_value(value: Value) -> Any:
    """One ``Value`` as JSON-like Python (integral numbers as ints, see the module docstring)."""
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        if number.is_integer() and -MAX_EXACT_INTEGER <= number <= MAX_EXACT_INTEGER:
            return int(number)
        return number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "struct_value":
        return plain_mapping(value.struct_value)
    if kind == "list_value":
        return plain_list(value.list_value)
    return None  # null_value, or no kind at all


def plain_mapping(struct: Struct) -> dict[str, Any]:
    return {key: plain_value(item) for key, item in struct.fields.items()}


def plain_list(values: ListValue) -> list[Any]:
    return [plain_value(item) for item in values.values]


def context_from_struct(struct: Struct | None) -> EvaluationContext | None:
    """The evaluation context of a request (None when it carries none)."""
    if struct is None or not struct.fields:
        return None
    attributes = plain_mapping(struct)
    targeting_key = attributes.pop(TARGETING_KEY, None)
    if not isinstance(targeting_key, str):
        # Only a string is a targeting key (OpenFeature's type). A null is "none set";
        # anything else stays an ordinary attribute that rules may still read by name.
        if targeting_key is not None:
            attributes[TARGETING_KEY] = targeting_key
        targeting_key = None
    return EvaluationContext(targeting_key=targeting_key, attributes=attributes)


def struct_from_mapping(mapping: Mapping[str, Any], into: Struct | None = None) -> Struct:
    """``mapping`` written into ``into`` (or a new Struct); nested lists and dicts copy."""
    struct = Struct() if into is None else into
    if mapping:
        struct.update(mapping)
    return struct
