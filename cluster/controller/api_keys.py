"""API keys: issuing them (proposer side) and checking them (pure).

A clear key is ``rlk_<key id>_<secret>``, 64 ASCII characters: the key id is
16 lowercase hex digits (8 random bytes, public: it names the key in
listings, logs and revocations); the secret is 32 random bytes in base64url
without padding (43 characters).

The controller stores only ``salt`` (16 random bytes per key) and
``digest = HMAC-SHA256(key=salt, message=secret)``. Why not scrypt or
PBKDF2: those slow hashes protect low-entropy secrets (passwords) from
offline guessing. A 256-bit random secret cannot be guessed however fast
the hash is, while a slow hash would cost tens of milliseconds of CPU on
*every authenticated request* and let anyone burn server CPU with bogus
keys. The per-key salt keeps equal inputs from giving equal digests and
rules out precomputed tables across clusters.

Two halves, kept apart:

- Issuing (``issue_api_key``) draws from ``secrets``: it runs once, on the
  proposer, and the command it builds carries only the salt and digest, so
  applying it is deterministic. The clear key is returned to the caller
  once, never logged, never stored, and left out of ``repr``.
- Checking (``parse_api_key``, ``verify_secret``) is pure; the digest
  comparison is ``hmac.compare_digest``, constant-time in the digest
  contents. An unknown key id costs the same HMAC and comparison (against a
  dummy) as a known one; the key id itself is not secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field

from cluster.controller.commands import CreateApiKey
from cluster.controller.model import KeyScope, default_scope, shown

__all__ = [
    "DIGEST_LENGTH",
    "KEY_ID_LENGTH",
    "SALT_LENGTH",
    "IssuedApiKey",
    "check_key_id",
    "check_key_shape",
    "issue_api_key",
    "key_command",
    "parse_api_key",
    "secret_digest",
    "verify_secret",
    "verify_unknown",
]

PREFIX = "rlk_"
KEY_ID_LENGTH = 16
SECRET_BYTES = 32
SALT_LENGTH = 16
DIGEST_LENGTH = 32
_SECRET_TEXT_LENGTH = 43
CLEAR_KEY_LENGTH = len(PREFIX) + KEY_ID_LENGTH + 1 + _SECRET_TEXT_LENGTH

_KEY_ID = re.compile(f"[0-9a-f]{{{KEY_ID_LENGTH}}}")
_SECRET_TEXT = re.compile(f"[A-Za-z0-9_-]{{{_SECRET_TEXT_LENGTH}}}")

# What an unknown key id is checked against, so that it costs what a known
# one costs. No secret hashes to this digest (it is not an HMAC output).
_DUMMY_SALT = bytes(SALT_LENGTH)
_DUMMY_DIGEST = bytes(DIGEST_LENGTH)


# --- checking (pure) -------------------------------------------------------------


def secret_digest(salt: bytes, secret: bytes) -> bytes:
    """The stored form of ``secret``."""
    return hmac.new(salt, secret, hashlib.sha256).digest()


def verify_secret(salt: bytes, digest: bytes, secret: bytes) -> bool:
    """Whether ``secret`` hashes to ``digest``, compared in constant time."""
    return hmac.compare_digest(secret_digest(salt, secret), digest)


def verify_unknown(secret: bytes) -> None:
    """The work of ``verify_secret`` for a key id that is not stored."""
    verify_secret(_DUMMY_SALT, _DUMMY_DIGEST, secret)


def parse_api_key(text: str) -> tuple[str, bytes] | None:
    """``(key id, secret)`` of a clear key, or None if ``text`` is not one."""
    if len(text) != CLEAR_KEY_LENGTH or not text.startswith(PREFIX):
        return None
    key_id = text[len(PREFIX) : len(PREFIX) + KEY_ID_LENGTH]
    separator = text[len(PREFIX) + KEY_ID_LENGTH]
    secret_text = text[len(PREFIX) + KEY_ID_LENGTH + 1 :]
    if separator != "_" or not _KEY_ID.fullmatch(key_id) or not _SECRET_TEXT.fullmatch(secret_text):
        return None
    secret = base64.urlsafe_b64decode(secret_text + "=")
    # The last character carries 2 unused bits: only the canonical spelling
    # is a key, so one secret has exactly one clear text.
    if _encode_secret(secret) != secret_text:
        return None
    return key_id, secret


def check_key_id(key_id: str) -> str | None:
    """What is wrong with a key id, or None."""
    if not _KEY_ID.fullmatch(key_id):
        return f"API key id {shown(key_id)}: expected {KEY_ID_LENGTH} lowercase hex digits"
    return None


def check_key_shape(key_id: str, salt: bytes, digest: bytes) -> str | None:
    """What is wrong with a stored key's fields, or None."""
    if problem := check_key_id(key_id):
        return problem
    if len(salt) != SALT_LENGTH or len(digest) != DIGEST_LENGTH:
        return (
            f"API key {key_id}: salt and digest must be {SALT_LENGTH} and {DIGEST_LENGTH} bytes, "
            f"got {len(salt)} and {len(digest)}"
        )
    return None


def _encode_secret(secret: bytes) -> str:
    return base64.urlsafe_b64encode(secret).rstrip(b"=").decode("ascii")


# --- issuing (proposer side: randomness) -----------------------------------------


@dataclass(frozen=True, slots=True)
class IssuedApiKey:
    """A new key: propose ``command``; once it is applied, hand
    ``clear_text`` to the caller (the only time anyone sees it)."""

    command: CreateApiKey
    clear_text: str = field(repr=False)

    @property
    def key_id(self) -> str:
        return self.command.key_id


def key_command(
    key_id: str, tenant: str | None, secret: bytes, scope: KeyScope | None = None, expires_at_ms: int = 0
) -> CreateApiKey:
    """The command that stores ``secret`` under ``key_id``, hashed with a
    fresh random salt; ``scope`` None: the tenant's default."""
    salt = secrets.token_bytes(SALT_LENGTH)
    scope = scope or default_scope(tenant)
    return CreateApiKey(key_id, tenant, salt, secret_digest(salt, secret), scope, expires_at_ms)


def issue_api_key(tenant: str | None, scope: KeyScope | None = None, expires_at_ms: int = 0) -> IssuedApiKey:
    """A fresh random key for ``tenant`` (None: an operator key) with
    ``scope`` (None: the tenant's default) and expiry (0: never)."""
    key_id = secrets.token_hex(KEY_ID_LENGTH // 2)
    secret = secrets.token_bytes(SECRET_BYTES)
    command = key_command(key_id, tenant, secret, scope, expires_at_ms)
    return IssuedApiKey(command, f"{PREFIX}{key_id}_{_encode_secret(secret)}")
