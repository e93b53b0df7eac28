"""``FlagdEvaluator.uses_clock``: whether any flag's rules read ``$flagd.timestamp``
(OFREP keeps bulk answers only for sets where it is False)."""

from __future__ import annotations

from typing import Any

import pytest

from flags.evaluator import FlagdEvaluator


def flag(targeting: Any = None, state: str = "ENABLED") -> dict[str, Any]:
    doc: dict[str, Any] = {"state": state, "variants": {"on": True, "off": False}, "defaultVariant": "off"}
    if targeting is not None:
        doc["targeting"] = targeting
    return doc


CLOCK_RULE = {"if": [{">": [{"var": "$flagd.timestamp"}, 2_000_000_000]}, "on", "off"]}
CONTEXT_RULE = {"if": [{"==": [{"var": "country"}, "de"]}, "on", "off"]}


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({}, False),
        ({"static": flag()}, False),
        ({"by-country": flag(CONTEXT_RULE)}, False),
        ({"dated": flag(CLOCK_RULE)}, True),
        ({"static": flag(), "by-country": flag(CONTEXT_RULE), "dated": flag(CLOCK_RULE)}, True),
        (
            {"dated-in-evaluator": flag({"$ref": "later"})},
            True,
        ),
    ],
    ids=["empty", "static", "context-only", "timestamp", "one-of-several", "through-$evaluators"],
)
def test_uses_clock(flags: dict[str, Any], expected: bool) -> None:
    evaluator = FlagdEvaluator()
    evaluator.set_flags({"flags": flags, "$evaluators": {"later": CLOCK_RULE}})
    assert evaluator.uses_clock() is expected


def test_uses_clock_follows_each_load() -> None:
    evaluator = FlagdEvaluator()
    assert evaluator.uses_clock() is False
    evaluator.set_flags({"flags": {"dated": flag(CLOCK_RULE)}})
    assert evaluator.uses_clock() is True
    evaluator.set_flags_and_get_changed_keys({"flags": {"dated": flag(CONTEXT_RULE)}})
    assert evaluator.uses_clock() is False
