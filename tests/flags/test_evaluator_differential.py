"""Differential test: ``FlagdEvaluator`` answers exactly as ``openfeature-flagd-core``.

A realistic flag set (every JsonLogic operation flagd supports, the custom
operations, fractional splits of 2-4 variants with weights, nested ifs,
``$ref``, non-string variant names, disabled and default-less flags, broken
targeting) is loaded into both evaluators; hypothesis draws contexts
(targeting keys, emails, numbers, numeric strings, semantic versions, lists,
nested objects) and every flag is resolved as every result type. Ours must give
the reference's value, variant, reason and metadata, or the same error code
(the reference lets a few Python errors such as ZeroDivisionError escape; the
OpenFeature SDK reports those as GENERAL, which is what we raise).

The reference reads ``time.time()`` itself, so the timestamp flag compares
with times far from now (equal results unless the clock jumps by years).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode, OpenFeatureError

from flags.evaluator import FlagdEvaluator

EMAIL_IS_INTERNAL = {"ends_with": [{"var": "email"}, "@corp.example"]}

FLAG_SET: dict[str, Any] = {
    "metadata": {"flagSetId": "differential", "version": 3},
    # Resolved in order (as flagd does): an evaluator may use only those after it.
    "$evaluators": {
        "uses_ref": {"and": [{"$ref": "is_adult"}, {"!": {"$ref": "is_internal"}}]},
        "is_internal": EMAIL_IS_INTERNAL,
        "is_adult": {">=": [{"var": "age"}, 18]},
    },
    "flags": {
        "static-bool": {"state": "ENABLED", "variants": {"on": True, "off": False}, "defaultVariant": "on"},
        "static-object": {
            "state": "ENABLED",
            "variants": {"a": {"x": 1, "y": [1, 2]}, "b": []},
            "defaultVariant": "a",
            "metadata": {"owner": "growth", "version": 7},
            "targeting": {},
        },
        "disabled-flag": {
            "state": "DISABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "on",
        },
        "no-default": {
            "state": "ENABLED",
            "variants": {"one": 1, "two": 2},
            "targeting": {"if": [{"==": [{"var": "name"}, "ab"]}, "two"]},
        },
        "email-and-age": {
            "state": "ENABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
            "targeting": {
                "if": [
                    {
                        "and": [
                            {"ends_with": [{"var": "email"}, "@example.com"]},
                            {">=": [{"var": "age"}, 18]},
                        ]
                    },
                    "on",
                    "off",
                ]
            },
        },
        "refs": {
            "state": "ENABLED",
            "variants": {"internal": "internal", "adult": "adult", "other": "other"},
            "defaultVariant": "other",
            "targeting": {
                "if": [
                    {"$ref": "is_internal"},
                    "internal",
                    {"$ref": "uses_ref"},
                    "adult",
                    {"if": [{"starts_with": [{"var": "email"}, "admin"]}, "internal", None]},
                ]
            },
        },
        "split-3": {
            "state": "ENABLED",
            "variants": {"red": "red", "green": "green", "blue": "blue"},
            "defaultVariant": "red",
            "targeting": {"fractional": [["red", 50], ["green", 30], ["blue", 20]]},
        },
        "split-4-keyed": {
            "state": "ENABLED",
            "variants": {"a": 1.5, "b": 2.5, "c": 3, "d": 4},
            "defaultVariant": "a",
            "targeting": {
                "fractional": [
                    {"cat": [{"var": "$flagd.flagKey"}, {"var": "user.id"}]},
                    ["a", 25],
                    ["b", 25],
                    ["c", 40],
                    ["d", 10],
                ]
            },
        },
        "split-2-by-number": {
            "state": "ENABLED",
            "variants": {"x": "x", "y": "y"},
            "defaultVariant": "x",
            "targeting": {"fractional": [{"var": "age"}, ["x"], ["y", 3]]},
        },
        "split-nested": {
            "state": "ENABLED",
            "variants": {"premium": "premium", "standard": "standard", "fallback": "fallback"},
            "defaultVariant": "fallback",
            "targeting": {
                "if": [
                    {"missing": ["email"]},
                    None,
                    {
                        "fractional": [
                            {"var": "email"},
                            [
                                {"if": [{"$ref": "is_adult"}, "premium", "standard"]},
                                {"if": [{"var": "vip"}, 90, 10]},
                            ],
                            ["standard", 50],
                        ]
                    },
                ]
            },
        },
        "semver": {
            "state": "ENABLED",
            "variants": {"new": "new", "patch": "patch", "major": "major", "old": "old"},
            "defaultVariant": "old",
            "targeting": {
                "if": [
                    {"sem_ver": [{"var": "version"}, ">=", "2.0.0"]},
                    "new",
                    {"sem_ver": [{"var": "version"}, "~", "1.2.0"]},
                    "patch",
                    {"sem_ver": [{"var": "version"}, "^", "v1"]},
                    "major",
                    "old",
                ]
            },
        },
        "arithmetic": {
            "state": "ENABLED",
            "variants": {"mid": 10, "pos": 20, "neg": 30, "odd": 40},
            "defaultVariant": "neg",
            "targeting": {
                "if": [
                    {"<": [10, {"+": [{"var": "age"}, {"*": [2, {"var": "score"}]}]}, 100]},
                    "mid",
                    {"==": [{"%": [{"var": "score"}, 2]}, 1]},
                    "odd",
                    {">": [{"-": [{"var": "score"}, {"var": "age"}]}, {"/": [{"var": "age"}, 4]}]},
                    "pos",
                    {
                        "<=": [
                            {"max": [{"var": "age"}, {"var": "score"}]},
                            {"min": [3, {"-": [{"var": "age"}]}]},
                        ]
                    },
                    "mid",
                    "neg",
                ]
            },
        },
        "strings": {
            "state": "ENABLED",
            "variants": {"listed": "listed", "exact": "exact", "inside": "inside", "none": "none"},
            "defaultVariant": "none",
            "targeting": {
                "if": [
                    {"in": [{"substr": [{"var": "name"}, 0, 2]}, ["ab", "cd", "ef"]]},
                    "listed",
                    {"===": [{"cat": [{"var": "name"}, "-", {"var": "age"}]}, "x-1"]},
                    "exact",
                    {"in": [{"substr": [{"var": "name"}, -3, -1]}, "xyzabc"]},
                    "inside",
                    {"!==": [{"var": "name"}, {"var": "email"}]},
                    None,
                    "none",
                ]
            },
        },
        "collections": {
            "state": "ENABLED",
            "variants": {"beta": "beta", "all": "all", "anon": "anon", "known": "known", "big": "big"},
            "defaultVariant": "known",
            "targeting": {
                "if": [
                    {"some": [{"var": "tags"}, {"==": [{"var": ""}, "beta"]}]},
                    "beta",
                    {
                        ">": [
                            {
                                "reduce": [
                                    {"var": "nums"},
                                    {"+": [{"var": "current"}, {"var": "accumulator"}]},
                                    0,
                                ]
                            },
                            10,
                        ]
                    },
                    "big",
                    {"all": [{"merge": [{"var": "tags"}, []]}, {"!!": {"var": ""}}]},
                    "all",
                    {
                        "none": [
                            {"filter": [{"var": "nums"}, {">": [{"var": ""}, 0]}]},
                            {"<": [{"var": ""}, 5]},
                        ]
                    },
                    "all",
                    {"!!": {"missing_some": [1, ["email", "name"]]}},
                    "anon",
                    {"==": [{"map": [{"var": "tags"}, {"cat": ["#", {"var": ""}]}]}, "#a,#b"]},
                    "beta",
                    "known",
                ]
            },
        },
        "boolean-variants": {
            "state": "ENABLED",
            "variants": {"true": "yes", "false": "no", "1": "one", "2.5": "two and a half"},
            "defaultVariant": "false",
            "targeting": {
                "if": [
                    {"==": [{"var": "name"}, "num"]},
                    {"if": [{"var": "vip"}, 1, 2.5]},
                    {"or": [{"==": [{"var": "age"}, "18"]}, {"!=": [{"var": "score"}, {"var": "age"}]}]},
                ]
            },
        },
        "timestamp": {
            "state": "ENABLED",
            "variants": {"past": "past", "future": "future"},
            "defaultVariant": "past",
            "targeting": {"if": [{">": [{"var": "$flagd.timestamp"}, {"var": "time"}]}, "past", "future"]},
        },
        "string-test-direct": {
            "state": "ENABLED",
            "variants": {"true": "yes", "false": "no", "fallback": "fallback"},
            "defaultVariant": "fallback",
            "targeting": {"ends_with": [{"var": "email"}, "@corp.example"]},
        },
        "cat-variant": {
            "state": "ENABLED",
            "variants": {"v-True": 1, "v-False": 2, "v-1": 3, "v-0": 4, "v-yes": 5, "v-": 6, "v-2.5": 7},
            "defaultVariant": "v-",
            "targeting": {"cat": ["v-", {"var": "vip"}]},
        },
        "missing-variant": {
            "state": "ENABLED",
            "variants": {"one": 1},
            "defaultVariant": "one",
            "targeting": {"if": [{"var": "vip"}, "three", "one"]},
        },
        "unknown-operation": {
            "state": "ENABLED",
            "variants": {"one": 1, "two": 2},
            "defaultVariant": "one",
            "targeting": {"if": [{"var": "vip"}, {"no_such_op": [1]}, "two"]},
        },
    },
}

KINDS = ("boolean", "string", "integer", "float", "object")
DEFAULTS: dict[str, Any] = {
    "boolean": False,
    "string": "dflt",
    "integer": -1,
    "float": -1.5,
    "object": {"d": 1},
}

semvers = st.builds(
    lambda prefix, major, minor, patch, pre, parts: (
        prefix + ".".join(str(n) for n in (major, minor, patch)[:parts]) + pre
    ),
    st.sampled_from(["", "", "v", "V"]),
    st.integers(0, 3),
    st.integers(0, 3),
    st.integers(0, 3),
    st.sampled_from(["", "", "-alpha", "-rc.1", "+build.5"]),
    st.integers(1, 3),
)
numbers = st.one_of(
    st.integers(-50, 200),
    st.floats(-50, 200, allow_nan=False),
    st.sampled_from(["18", "7.5", "abc", "", None, True]),
)
emails = st.one_of(
    st.builds(
        lambda user, domain: f"{user}@{domain}",
        st.sampled_from(["ann", "admin", "bob.smith", "x"]),
        st.sampled_from(["example.com", "example.com", "corp.example", "other.org"]),
    ),
    st.text(max_size=8),
    st.none(),
)
contexts = st.builds(
    lambda targeting_key, attributes: (
        targeting_key,
        {k: v for k, v in attributes.items() if v is not _ABSENT},
    ),
    st.one_of(st.none(), st.sampled_from(["", "user-1", "jon@company.com"]), st.text(max_size=12)),
    st.fixed_dictionaries(
        {
            "email": st.one_of(st.just(_ABSENT := object()), emails),
            "age": st.one_of(st.just(_ABSENT), numbers),
            "score": st.one_of(st.just(_ABSENT), numbers),
            "name": st.one_of(
                st.just(_ABSENT), st.sampled_from(["ab", "abc", "num", "x", "xyzab", ""]), st.text(max_size=6)
            ),
            "version": st.one_of(
                st.just(_ABSENT), semvers, st.sampled_from(["1", 2, 1.2, "2.0.0.0", "nope"])
            ),
            "tags": st.one_of(
                st.just(_ABSENT), st.lists(st.sampled_from(["a", "b", "beta", "", 0]), max_size=4)
            ),
            "nums": st.one_of(
                st.just(_ABSENT), st.lists(st.one_of(st.integers(-5, 9), st.floats(-5, 9)), max_size=4)
            ),
            "vip": st.one_of(st.just(_ABSENT), st.booleans(), st.sampled_from([0, 1, "", "yes", 2.5, 1.0])),
            "user": st.one_of(
                st.just(_ABSENT), st.fixed_dictionaries({"id": st.one_of(st.text(max_size=8), st.integers())})
            ),
            "time": st.one_of(st.just(_ABSENT), st.sampled_from([0, 1, 10**12, "later"])),
        }
    ),
)


def _outcome(evaluator: Any, kind: str, key: str, ctx: EvaluationContext) -> tuple[Any, ...]:
    resolve: Callable[..., Any] = getattr(evaluator, f"resolve_{kind}_value")
    try:
        details = resolve(key, DEFAULTS[kind], ctx)
    except OpenFeatureError as error:
        return ("error", error.error_code)
    except Exception:  # the reference lets Python errors escape; the SDK reports GENERAL
        return ("error", ErrorCode.GENERAL)
    value = details.value
    if isinstance(value, float) and math.isnan(value):
        value = "nan"
    reason = None if details.reason is None else str(details.reason)
    return (value, type(value).__name__, details.variant, reason, dict(details.flag_metadata or {}))


@pytest.fixture(scope="module")
def evaluators() -> tuple[FlagdEvaluator, FlagdCore]:
    ours, reference = FlagdEvaluator(), FlagdCore()
    ours.set_flags(copy.deepcopy(FLAG_SET))
    reference.set_flags(copy.deepcopy(FLAG_SET))
    return ours, reference


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(context=contexts)
def test_same_answers_as_flagd_core(
    evaluators: tuple[FlagdEvaluator, FlagdCore], context: tuple[str | None, dict[str, Any]]
) -> None:
    ours, reference = evaluators
    targeting_key, attributes = context
    for key in FLAG_SET["flags"]:
        for kind in KINDS:
            ctx = EvaluationContext(targeting_key, copy.deepcopy(attributes))
            ref_ctx = EvaluationContext(targeting_key, copy.deepcopy(attributes))
            mine = _outcome(ours, kind, key, ctx)
            theirs = _outcome(reference, kind, key, ref_ctx)
            assert mine == theirs, (key, kind, targeting_key, attributes)


def test_flag_set_metadata_and_changed_keys(evaluators: tuple[FlagdEvaluator, FlagdCore]) -> None:
    ours, reference = evaluators
    assert ours.get_flag_set_metadata() == reference.get_flag_set_metadata()
    changed = copy.deepcopy(FLAG_SET)
    changed["flags"]["static-bool"]["defaultVariant"] = "off"
    del changed["flags"]["semver"]
    changed["flags"]["brand-new"] = {"state": "ENABLED", "variants": {"a": 1}, "defaultVariant": "a"}
    fresh_ours, fresh_reference = FlagdEvaluator(), FlagdCore()
    fresh_ours.set_flags(copy.deepcopy(FLAG_SET))
    fresh_reference.set_flags(copy.deepcopy(FLAG_SET))
    assert sorted(fresh_ours.set_flags_and_get_changed_keys(copy.deepcopy(changed))) == sorted(
        fresh_reference.set_flags_and_get_changed_keys(copy.deepcopy(changed))
    )


def test_all_contexts_cover_the_distinct_paths() -> None:
    """The split flags really split: a few hundred targeting keys reach every variant."""
    evaluator = FlagdEvaluator()
    evaluator.set_flags(copy.deepcopy(FLAG_SET))
    seen = {
        evaluator.resolve_string_value("split-3", "", EvaluationContext(f"user-{n}")).variant
        for n in range(300)
    }
    assert seen == {"red", "green", "blue"}
    assert time.time() < 10**12  # the timestamp flag's far-future context stays in the future
