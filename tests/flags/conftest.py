"""pytest setup for the flag-service tests.

The flagd testbed's gherkin tags (``@fractional-v2``, ``@operator-errors``, ...)
are not pytest markers: pytest-bdd would turn each into an unregistered marker,
which ``--strict-markers`` refuses. Here every gherkin tag becomes the one
registered ``testbed_tag(name)`` marker instead, and test_testbed.py reads it
to select scenarios per fractional algorithm. Tags on ``Examples:`` blocks skip
that hook (pytest-bdd marks the examples directly), so the fractional algorithm
tags, the only ones the testbed puts there, are registered as markers too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "testbed_tag(name): a flagd-testbed gherkin tag on a scenario")
    for version in ("v1", "v2", "v3"):
        config.addinivalue_line(
            "markers", f"fractional-{version}: flagd-testbed vectors for fractional {version}"
        )


def pytest_bdd_apply_tag(tag: str, function: Callable[..., Any]) -> bool:
    pytest.mark.testbed_tag(tag)(function)
    return True
