"""Listings page through every row once, and a page token works only for
the listing that issued it."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import TypeVar

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cluster.controller.api_keys import issue_api_key
from cluster.controller.commands import (
    CreateTenant,
    DecommissionNode,
    DeleteTenant,
    DeleteTopic,
    RegisterNode,
    RemoveNode,
)
from cluster.primitives.pagination import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    InvalidPageSize,
    InvalidPageToken,
    Listing,
    Page,
    paginate,
    text_key,
)
from tests.controller.harness import Log, cluster, create_topic

T = TypeVar("T")


def all_pages(fetch: Callable[[int, str], Page[T]], page_size: int) -> list[list[T]]:
    pages: list[list[T]] = []
    token = ""
    while True:
        page = fetch(page_size, token)
        pages.append(list(page.items))
        token = page.next_page_token
        if not token:
            return pages


@given(st.sets(st.text(alphabet="abcdef", min_size=1, max_size=4), max_size=30), st.integers(1, 7))
def test_pages_return_every_row_once_in_order(names: set[str], page_size: int) -> None:
    rows = [(text_key(n), n) for n in sorted(names)]
    listing = Listing("things")
    pages = all_pages(lambda size, token: paginate(listing, rows, size, token), page_size)
    assert [n for page in pages for n in page] == sorted(names)
    assert all(len(page) == page_size for page in pages[:-1])
    assert len(pages[-1]) <= page_size
    assert len(pages) == max(1, -(-len(names) // page_size))


def test_state_listings_page_through_everything() -> None:
    log = cluster(7, tenants=[f"t{i:02}" for i in range(12)])
    for i in range(5):
        create_topic(log, "t03", f"topic-{i}", partitions=1)
    create_topic(log, "t03", "wide", partitions=11)
    state = log.state
    tenants = all_pages(state.list_tenants, 5)
    assert [len(p) for p in tenants] == [5, 5, 2]
    assert [t.name for p in tenants for t in p] == [f"t{i:02}" for i in range(12)]
    nodes = all_pages(state.list_nodes, 3)
    assert [n.node_id for p in nodes for n in p] == list(range(1, 8))
    topics = all_pages(lambda size, token: state.list_topics("t03", size, token), 2)
    assert [t.name for p in topics for t in p] == [f"topic-{i}" for i in range(5)] + ["wide"]
    parts = all_pages(lambda size, token: state.list_partitions("t03", "wide", size, token), 4)
    assert [a.partition for p in parts for a in p] == list(range(11))


def test_rows_added_or_removed_between_pages_do_not_repeat_or_skip_others() -> None:
    log = cluster(1, tenants=["b", "d", "f", "h"])
    first = log.state.list_tenants(2)
    assert [t.name for t in first.items] == ["b", "d"]
    log.ok(CreateTenant("a"))  # before the cursor: not seen
    log.ok(CreateTenant("e"))  # after it: seen
    log.ok(DeleteTenant("f"))
    second = log.state.list_tenants(2, first.next_page_token)
    assert [t.name for t in second.items] == ["e", "h"]
    assert second.next_page_token == ""


def test_page_sizes() -> None:
    log = cluster(1, tenants=[f"t{i:04}" for i in range(DEFAULT_PAGE_SIZE + 1)])
    assert len(log.state.list_tenants(0).items) == DEFAULT_PAGE_SIZE
    assert len(log.state.list_tenants().items) == DEFAULT_PAGE_SIZE
    rows = [(i.to_bytes(4, "big"), i) for i in range(MAX_PAGE_SIZE + 5)]
    assert len(paginate(Listing("x"), rows, MAX_PAGE_SIZE * 10, "").items) == MAX_PAGE_SIZE
    with pytest.raises(InvalidPageSize, match="page_size"):
        log.state.list_tenants(-1)


def _two_tenants_with_tokens() -> tuple[Log, dict[str, str]]:
    log = cluster(5, tenants=["acme", "beta", "gamma"])
    for tenant in ("acme", "beta"):
        for i in range(3):
            create_topic(log, tenant, f"t{i}", partitions=3)
    state = log.state
    tokens = {
        "acme topics": state.list_topics("acme", 1).next_page_token,
        "beta topics": state.list_topics("beta", 1).next_page_token,
        "tenants": state.list_tenants(1).next_page_token,
        "nodes": state.list_nodes(1).next_page_token,
        "acme t0 partitions": state.list_partitions("acme", "t0", 1).next_page_token,
    }
    assert all(tokens.values())
    return log, tokens


def test_a_token_works_only_for_its_listing() -> None:
    log, tokens = _two_tenants_with_tokens()
    state = log.state
    listings: dict[str, Callable[[str], Page[object]]] = {
        "acme topics": lambda token: state.list_topics("acme", 1, token),
        "beta topics": lambda token: state.list_topics("beta", 1, token),
        "tenants": lambda token: state.list_tenants(1, token),
        "nodes": lambda token: state.list_nodes(1, token),
        "acme t0 partitions": lambda token: state.list_partitions("acme", "t0", 1, token),
    }
    for issued_by, token in tokens.items():
        for name, listing in listings.items():
            if name == issued_by:
                assert listing(token).items  # its own listing accepts it
            else:
                with pytest.raises(InvalidPageToken, match="different listing"):
                    listing(token)
    # Same tenant and topic name, but a re-created topic: a new listing.
    log.ok(DeleteTopic("acme", "t0"))
    create_topic(log, "acme", "t0", partitions=3)
    with pytest.raises(InvalidPageToken, match="different listing"):
        log.state.list_partitions("acme", "t0", 1, tokens["acme t0 partitions"])
    # A tenant's key listing is not the operator's, even for a tenant
    # named "operator".
    log.ok(CreateTenant("operator"))
    for _ in range(2):
        log.ok(issue_api_key("operator").command)
    token = log.state.list_api_keys("operator", 1).next_page_token
    assert token
    with pytest.raises(InvalidPageToken, match="different listing"):
        log.state.list_api_keys(None, 1, token)


@pytest.mark.parametrize(
    "token",
    [
        "not base64 !",
        "AAAA",
        base64.urlsafe_b64encode(b"\x01" * 30).decode().rstrip("="),
        "x",
    ],
)
def test_garbage_tokens_are_refused(token: str) -> None:
    state = cluster(3).state
    with pytest.raises(InvalidPageToken, match="not one this server issued"):
        state.list_nodes(1, token)


def test_a_damaged_token_is_refused() -> None:
    state = cluster(3).state
    token = state.list_nodes(1).next_page_token
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[-6] ^= 1  # inside the key: only the CRC tells
    damaged = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    with pytest.raises(InvalidPageToken):
        state.list_nodes(1, damaged)


def test_a_token_does_not_need_the_row_it_names_to_exist() -> None:
    log = Log()
    for n in (1, 2, 3):
        log.ok(RegisterNode(n, f"h{n}:1", "", False))
    page = log.state.list_nodes(1)
    assert [n.node_id for n in page.items] == [1]
    log.ok(DecommissionNode(1))
    log.ok(RemoveNode(1))
    rest = log.state.list_nodes(5, page.next_page_token)
    assert [n.node_id for n in rest.items] == [2, 3]
