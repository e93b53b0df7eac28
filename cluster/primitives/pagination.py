"""Keyset pagination for the controller's listings, with opaque page tokens.

A listing is a sequence of rows sorted by a byte-string key. A page holds up
to ``page_size`` rows after the key its token names; its ``next_page_token``
names its last key ("" on the last page). Because a token names a key, not a
position, rows added or removed between two pages neither repeat nor skip
the rows that stay.

Token, before base64url (no padding): ``version u8 (=1) | listing digest (8
bytes) | last key (u16 length + bytes) | crc32 u32`` of the bytes before it.
The listing digest is BLAKE2b of the listing's identity (its name and scope,
e.g. "topics" of tenant "acme"), so a token from another listing — another
tenant's topics, or the nodes — is refused with ``InvalidPageToken`` rather
than quietly starting somewhere. Tokens are not secret: a forged one only
moves the start within the caller's own listing.

Invariants:

- Pages of one listing, followed token to token over unchanging rows, return
  every row exactly once, in key order.
- ``page_size`` 0 means ``DEFAULT_PAGE_SIZE``; more than ``MAX_PAGE_SIZE``
  means ``MAX_PAGE_SIZE``; negative raises ``InvalidPageSize``.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from cluster.primitives.wire import Reader, WireError, Writer

__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "InvalidPageSize",
    "InvalidPageToken",
    "Listing",
    "Page",
    "PageError",
    "int_key",
    "paginate",
    "text_key",
]

DEFAULT_PAGE_SIZE = 100
MAX_PAGE_SIZE = 1000
_TOKEN_VERSION = 1

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class PageError(ValueError):
    """A page request that cannot be served (bad size or token)."""


class InvalidPageSize(PageError):
    pass


class InvalidPageToken(PageError):
    pass


@dataclass(frozen=True, slots=True)
class Listing:
    """A listing's identity: ``name`` ("topics") and ``scope`` (("acme",))."""

    name: str
    scope: tuple[str, ...] = ()

    def digest(self) -> bytes:
        w = Writer().text(self.name).u16(len(self.scope))
        for part in self.scope:
            w.text(part)
        return hashlib.blake2b(bytes(w), digest_size=8, person=b"raftlog.page").digest()

    def describe(self) -> str:
        return self.name + "".join(f" of {part!r}" for part in self.scope)


@dataclass(frozen=True, slots=True)
class Page(Generic[T_co]):
    items: tuple[T_co, ...]
    next_page_token: str
    """"" when this is the last page."""


def text_key(value: str) -> bytes:
    """A sort key for a name (UTF-8 bytes sort in code point order)."""
    return value.encode("utf-8")


def int_key(value: int) -> bytes:
    """A sort key for a non-negative id."""
    return value.to_bytes(8, "big")


def _encode_token(listing: Listing, last_key: bytes) -> str:
    body = bytes(Writer().u8(_TOKEN_VERSION).raw(listing.digest()).blob(last_key))
    raw = body + zlib.crc32(body).to_bytes(4, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _decode_token(listing: Listing, token: str) -> bytes:
    bad = InvalidPageToken(
        f"page token {token[:40]!r} is not one this server issued; list again without a token"
    )
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise bad from None
    if len(raw) < 5 or zlib.crc32(raw[:-4]) != int.from_bytes(raw[-4:], "big"):
        raise bad
    reader = Reader(raw[:-4], "page token")
    try:
        version = reader.u8("version")
        digest = reader.raw(8, "listing")
        last_key = reader.blob("last key")
        reader.finish()
    except WireError:
        raise bad from None
    if version != _TOKEN_VERSION:
        raise bad
    if digest != listing.digest():
        raise InvalidPageToken(
            f"the page token belongs to a different listing, not {listing.describe()}; "
            "list again without a token"
        )
    return last_key


def paginate(listing: Listing, rows: Sequence[tuple[bytes, T]], page_size: int, page_token: str) -> Page[T]:
    """The page of ``rows`` (sorted by key, keys unique) after ``page_token``
    ("" for the first page)."""
    if page_size < 0:
        raise InvalidPageSize(
            f"page_size must be 0 (the default, {DEFAULT_PAGE_SIZE}) or more, got {page_size}"
        )
    size = min(page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
    start = 0
    if page_token:
        last_key = _decode_token(listing, page_token)
        start = bisect.bisect_right(rows, last_key, key=lambda row: row[0])
    chunk = rows[start : start + size]
    more = start + size < len(rows)
    token = _encode_token(listing, chunk[-1][0]) if more else ""
    return Page(tuple(item for _, item in chunk), token)
