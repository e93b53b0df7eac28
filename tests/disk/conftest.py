"""Failure notes for the full-disk tests.

A test's data lives on a small filesystem that is unmounted when the test
ends, node logs included; a CI failure would leave nothing to read. A
fixture stores a callable in ``item.stash[FAILURE_NOTES]``; when the test's
setup or call fails, the hook below calls it (before any teardown unmounts
the filesystem) and adds what it returns (it copies the logs somewhere that
outlives the mount and gives their tails) to the failure report.
"""

from __future__ import annotations

from collections.abc import Callable, Generator

import pytest

FAILURE_NOTES = pytest.StashKey[Callable[[], str]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    notes = item.stash.get(FAILURE_NOTES, None)
    if notes is not None and report.failed and report.when in ("setup", "call"):
        report.sections.append(("node logs", notes()))
    return report
