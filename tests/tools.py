"""Where the suite finds the non-Python tools it runs.

``promtool`` (Debian package ``prometheus``) checks every /metrics page and
the chart's alert rules. A test that needs it fails, never skips, when it is
missing: a skipped check looks like a passing one in CI. ``make test-tools``
installs it (and itself fails where it cannot).
"""

from __future__ import annotations

import shutil

import pytest

__all__ = ["promtool"]


def promtool() -> str:
    """The path of ``promtool`` on PATH; fails the calling test when absent."""
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found on PATH: run make test-tools (installs Debian package prometheus)")
    return found
