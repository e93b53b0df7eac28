"""Validation of flagd flag definitions: each class of problem, with its path."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest

from flags.model import (
    FlagState,
    InvalidDefinition,
    VariantType,
    check_environment_name,
    flagd_json,
    validate_flag,
    validate_flag_set,
)

EXAMPLE = {
    "$evaluators": {"is-staff": {"ends_with": [{"var": "email"}, "@example.com"]}},
    "metadata": {"flagSetId": "web", "version": "3"},
    "flags": {
        "new-welcome": {
            "state": "ENABLED",
            "variants": {"red": "#f00", "blue": "#00f"},
            "defaultVariant": "red",
            "targeting": {"if": [{"$ref": "is-staff"}, "blue", None]},
            "metadata": {"owner": "web", "weight": 2, "beta": True},
        },
        "rollout": {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
            "targeting": {"fractional": [{"var": "$flagd.flagKey"}, ["on", 10], ["off", 90]]},
        },
        "ratio": {
            "state": "DISABLED",
            "variants": {"low": 1, "high": 2.5},
            "defaultVariant": None,
            "targeting": {},
        },
        "limit": {"state": "ENABLED", "variants": {"small": 1, "big": 100}, "defaultVariant": "small"},
        "theme": {"state": "ENABLED", "variants": {"a": {"x": [1, 2]}}, "defaultVariant": "a"},
        "versioned": {
            "state": "ENABLED",
            "variants": {"new": "n", "old": "o"},
            "defaultVariant": "old",
            "targeting": {"if": [{"sem_ver": [{"var": "version"}, ">=", "1.2.0"]}, "new", "old"]},
        },
    },
}


def problems(document: object) -> list[str]:
    with pytest.raises(InvalidDefinition) as info:
        validate_flag_set(document)
    return [str(p) for p in info.value.problems]


def with_flag(flag: Mapping[str, Any], evaluators: Mapping[str, Any] | None = None) -> dict[str, object]:
    doc: dict[str, object] = {"flags": {"f": flag}}
    if evaluators is not None:
        doc["$evaluators"] = evaluators
    return doc


def test_valid_example_passes_with_types_and_round_trips() -> None:
    flag_set = validate_flag_set(EXAMPLE)
    assert flag_set.flags["new-welcome"].variant_type is VariantType.STRING
    assert flag_set.flags["rollout"].variant_type is VariantType.BOOLEAN
    assert flag_set.flags["ratio"].variant_type is VariantType.FLOAT
    assert flag_set.flags["limit"].variant_type is VariantType.INTEGER
    assert flag_set.flags["theme"].variant_type is VariantType.OBJECT
    assert flag_set.flags["ratio"].state is FlagState.DISABLED
    text = flagd_json(flag_set)
    assert validate_flag_set(json.loads(text)) == flag_set
    assert flagd_json(validate_flag_set(json.loads(text))) == text
    assert json.loads(text)["flags"]["limit"]["defaultVariant"] == "small"


def test_unknown_variant_in_targeting_points_at_the_branch() -> None:
    flag = {"state": "ENABLED", "variants": {"red": 1}, "defaultVariant": "red"}
    assert problems(with_flag({**flag, "targeting": {"if": [True, "blu", "red"]}})) == [
        'flags.f.targeting.if[1]: unknown variant "blu"'
    ]
    assert problems(with_flag({**flag, "targeting": {"fractional": [["red", 50], ["x", 50]]}})) == [
        'flags.f.targeting.fractional[1][0]: unknown variant "x"'
    ]
    nested = {"if": [True, {"if": [False, "red", "nope"]}, "red"]}
    assert problems(with_flag({**flag, "targeting": nested})) == [
        'flags.f.targeting.if[1].if[2]: unknown variant "nope"'
    ]


def test_default_variant_and_required_fields() -> None:
    assert problems(with_flag({"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "b"})) == [
        'flags.f.defaultVariant: unknown variant "b"'
    ]
    assert problems(with_flag({"variants": {"a": 1}})) == ["flags.f.state: required field is missing"]
    assert problems(with_flag({"state": "ON", "variants": {"a": 1}})) == [
        'flags.f.state: must be "ENABLED" or "DISABLED", not "ON"'
    ]
    assert problems(with_flag({"state": "ENABLED"})) == ["flags.f.variants: required field is missing"]
    assert problems(with_flag({"state": "ENABLED", "variants": {"a": 1}, "colour": 1})) == [
        "flags.f.colour: unknown field"
    ]
    assert problems({"flag": {}}) == ["flag: unknown field", "flags: required field is missing"]


def test_variant_types() -> None:
    mixed = {"state": "ENABLED", "variants": {"a": 1, "b": "x"}, "defaultVariant": "a"}
    assert problems(with_flag(mixed)) == [
        "flags.f.variants: all variants of a flag have one type, found integer, string"
    ]
    array = {"state": "ENABLED", "variants": {"a": [1]}, "defaultVariant": "a"}
    assert problems(with_flag(array)) == [
        "flags.f.variants.a: a variant is a boolean, string, number or object, not [1]"
    ]
    huge = {"state": "ENABLED", "variants": {"a": 2**60}, "defaultVariant": "a"}
    assert "outside the safe range" in problems(with_flag(huge))[0]


def test_jsonlogic_shape() -> None:
    base = {"state": "ENABLED", "variants": {"a": True}, "defaultVariant": "a"}
    assert problems(with_flag({**base, "targeting": {"frobnicate": [1]}})) == [
        'flags.f.targeting: unknown operation "frobnicate"'
    ]
    assert problems(with_flag({**base, "targeting": {"==": [1, 1], "!=": [1, 2]}})) == [
        "flags.f.targeting: a JsonLogic rule has exactly one operation, this has 2"
    ]
    assert problems(with_flag({**base, "targeting": {"sem_ver": ["1.0.0", "?", "2.0.0"]}})) == [
        'flags.f.targeting.sem_ver[1]: unknown operator "?"'
    ]
    assert problems(with_flag({**base, "targeting": {"starts_with": [{"var": "x"}]}})) == [
        "flags.f.targeting.starts_with: takes 2 arguments, got 1"
    ]
    assert problems(with_flag({**base, "targeting": {"fractional": [["a", "ten"]]}})) == [
        'flags.f.targeting.fractional[0][1]: a weight is an integer or a rule, not "ten"'
    ]


def test_refs_resolve_and_have_no_cycles() -> None:
    base = {"state": "ENABLED", "variants": {"a": True}, "defaultVariant": "a"}
    assert problems(with_flag({**base, "targeting": {"$ref": "missing"}}, {})) == [
        'flags.f.targeting.$ref: unknown evaluator "missing"'
    ]
    cyclic = {"x": {"$ref": "y"}, "y": {"or": [{"$ref": "x"}]}}
    assert problems(with_flag(base, cyclic)) == [
        "$evaluators.x: $ref cycle: x -> y -> x",
    ]  # one report per cycle
    returns = {"pick": {"if": [True, "zzz", None]}}
    assert problems(with_flag({**base, "targeting": {"$ref": "pick"}}, returns)) == [
        'flags.f.targeting.$ref: unknown variant "zzz" (at $evaluators.pick.if[1])'
    ]


def test_names_and_limits() -> None:
    flag = {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a"}
    assert problems({"flags": {"bad/key": flag}})[0].startswith("flags.bad/key: flag key 'bad/key'")
    assert problems({"flags": {"k" * 129: flag}})[0].endswith("at most 128 characters, this one has 129")
    deep: object = "a"
    for _ in range(40):
        deep = {"!": [deep]}
    assert "nested deeper than 32 levels" in problems(with_flag({**flag, "targeting": deep}))[0]
    big = {"flags": {f"f{i}": {**flag, "metadata": {"pad": "x" * 1000}} for i in range(1100)}}
    assert problems(big)[0].startswith("a flag set has at most 1048576 bytes")
    assert check_environment_name("production") is None
    assert check_environment_name("Prod") is not None
    assert check_environment_name("a/b") is not None


def test_validate_flag_without_evaluators_checks_ref_shape_only() -> None:
    flag = validate_flag("f", {"state": "ENABLED", "variants": {"a": 1}, "targeting": {"$ref": "anything"}})
    assert flag.default_variant is None
    with pytest.raises(InvalidDefinition, match=r"flags.f.targeting.\$ref: names an evaluator"):
        validate_flag("f", {"state": "ENABLED", "variants": {"a": 1}, "targeting": {"$ref": 3}})


def test_metadata_values() -> None:
    flag = {"state": "ENABLED", "variants": {"a": 1}, "metadata": {"bad": [1]}}
    assert problems(with_flag(flag)) == [
        "flags.f.metadata.bad: metadata values are strings, numbers or booleans"
    ]
