"""Fixtures for the partition storage tests: a fresh node store per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from partitions.node_store import NodeStore


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "node-store"


@pytest.fixture
def store(store_path: Path) -> Iterator[NodeStore]:
    node_store = NodeStore(store_path)
    yield node_store
    node_store.close()
