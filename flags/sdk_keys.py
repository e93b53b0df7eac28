"""SDK keys: what a flagd client presents to be served one tenant's environment (pure).

A clear key is ``rlf_<key id>_<secret>``, 64 ASCII characters, the shape of the
cluster's ``rlk_`` keys: the key id is 16 lowercase hex digits (8 random bytes;
public: it names the key in listings, records and revocations), the secret 32
random bytes in base64url without padding (43 characters). Only the canonical
spelling of a secret is a key, so one secret has exactly one clear text.

Keys live in the tenant's flag topic (``__flags``) under the record key
``@sdk-key/<key id>`` (environment names are ``[a-z0-9-]``, so ``@`` never
collides with ``<env>`` or ``<env>/<flag>``). The tenant of a key is the topic it
is in; one key serves one (tenant, environment). Record values are canonical
JSON, UTF-8 (sorted keys, no whitespace, non-ASCII characters as themselves,
the way flags/changes.py writes change records):

- create: ``{"format":1,"kind":"sdk-key-create","id","env","name","salt","digest","who","when"}``
  with ``salt`` 16 random bytes and ``digest = HMAC-SHA256(key=salt, msg=secret)``,
  both lowercase hex. The secret itself is never written anywhere.
  A client key's create also has ``"keyKind":"client"`` (absent: a server key, so
  records written before key kinds existed keep their bytes and meaning).
- revoke: ``{"format":1,"kind":"sdk-key-revoke","id","env","who","when"}``: a record,
  not a tombstone, so who revoked a key stays in the audit trail (and compaction,
  which keeps the latest record per key, keeps the revocation).

Key kinds: a *server* key (``rlf_``, secret) reads its environment through the
flagd protocols and OFREP; a *client* key (``rlc_``, public by design: it ships
inside mobile and web apps) only through OFREP (evaluation, change pings,
tracking). The clear prefix and the record must agree: a client key's secret
spelled with ``rlf_`` is no key at all, so a client key cannot be promoted to a
server key by editing its prefix.

Why HMAC-SHA256 and not a slow hash: the secret has 256 random bits, so offline
guessing is hopeless however fast the hash, while a slow hash would cost
milliseconds on every authenticated request and let anyone burn CPU with bogus
keys. The per-key salt keeps equal secrets from giving equal digests.

Invariants:

- ``decode_record(key, encode_record(r)) == r`` and ``encode_record(decode_record(key, b)) == b``
  for any bytes ``decode_record`` accepts; it raises only ``MalformedSdkKeyRecord``
  (bytes this format never produces: a caller reports it and goes on) or
  ``UnsupportedChange`` (a newer ``format``: the reader must be upgraded).
- ``verify_secret`` compares digests with ``hmac.compare_digest``; ``verify_unknown``
  does the same work for a key id nobody holds, so an unknown id costs what a
  known one costs.
- Randomness (``secrets``) is used only by ``issue_sdk_key``; everything else is
  deterministic.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass, field
from typing import Any

from flags.canonical_json import canonical, load_record
from flags.model import check_environment_name

__all__ = [
    "CLEAR_KEY_LENGTH",
    "KEY_ID_LENGTH",
    "RECORD_KEY_PREFIX",
    "IssuedSdkKey",
    "KeyKind",
    "MalformedSdkKeyRecord",
    "SdkKeyCreate",
    "SdkKeyRecord",
    "SdkKeyRevoke",
    "decode_record",
    "encode_record",
    "is_sdk_key_record",
    "issue_sdk_key",
    "parse_clear_key",
    "parse_sdk_key",
    "record_key",
    "revoke_record",
    "secret_digest",
    "verify_secret",
    "verify_unknown",
]

FORMAT_VERSION = 1
CLEAR_PREFIX = "rlf_"
CLIENT_CLEAR_PREFIX = "rlc_"
RECORD_KEY_PREFIX = "@sdk-key/"
KIND_CREATE = "sdk-key-create"
KIND_REVOKE = "sdk-key-revoke"
KEY_ID_LENGTH = 16
SECRET_BYTES = 32
SALT_LENGTH = 16
DIGEST_LENGTH = 32
MAX_NAME_LENGTH = 128
MAX_WHO_LENGTH = 128
MAX_INT = (1 << 63) - 1
_SECRET_TEXT_LENGTH = 43
CLEAR_KEY_LENGTH = len(CLEAR_PREFIX) + KEY_ID_LENGTH + 1 + _SECRET_TEXT_LENGTH

_KEY_ID = re.compile(f"[0-9a-f]{{{KEY_ID_LENGTH}}}")
_SECRET_TEXT = re.compile(f"[A-Za-z0-9_-]{{{_SECRET_TEXT_LENGTH}}}")
_HEX = re.compile("[0-9a-f]*")
# Names are shown in listings and logs: printable text only (no control characters).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

# What an unknown key id is checked against so that it costs what a known one
# costs. No secret hashes to this digest (it is not an HMAC output anyone can hit).
_DUMMY_SALT = bytes(SALT_LENGTH)
_DUMMY_DIGEST = bytes(DIGEST_LENGTH)


class KeyKind(enum.Enum):
    """What a key may read (module docstring)."""

    SERVER = "server"
    CLIENT = "client"

    @property
    def prefix(self) -> str:
        return CLIENT_CLEAR_PREFIX if self is KeyKind.CLIENT else CLEAR_PREFIX


class MalformedSdkKeyRecord(ValueError):
    """Bytes (or a record key) this format never produces."""


@dataclass(frozen=True, slots=True)
class SdkKeyCreate:
    id: str
    env: str
    name: str
    salt: bytes
    digest: bytes
    who: str
    when: int
    key_kind: KeyKind = KeyKind.SERVER
    """``"keyKind"`` in the record (absent: server)."""


@dataclass(frozen=True, slots=True)
class SdkKeyRevoke:
    id: str
    env: str
    who: str
    when: int


SdkKeyRecord = SdkKeyCreate | SdkKeyRevoke


# --- checking keys (pure) ----------------------------------------------------------


def secret_digest(salt: bytes, secret: bytes) -> bytes:
    """The stored form of ``secret``."""
    return hmac.new(salt, secret, hashlib.sha256).digest()


def verify_secret(salt: bytes, digest: bytes, secret: bytes) -> bool:
    """Whether ``secret`` hashes to ``digest``, compared in constant time."""
    return hmac.compare_digest(secret_digest(salt, secret), digest)


def verify_unknown(secret: bytes) -> None:
    """The work of ``verify_secret`` for a key id nobody holds."""
    verify_secret(_DUMMY_SALT, _DUMMY_DIGEST, secret)


def _encode_secret(secret: bytes) -> str:
    return base64.urlsafe_b64encode(secret).rstrip(b"=").decode("ascii")


def parse_sdk_key(text: str) -> tuple[str, bytes] | None:
    """``(key id, secret)`` of a clear *server* key, or None if ``text`` is not one."""
    parsed = parse_clear_key(text)
    if parsed is None or parsed[0] is not KeyKind.SERVER:
        return None
    return parsed[1], parsed[2]


def parse_clear_key(text: str) -> tuple[KeyKind, str, bytes] | None:
    """``(kind, key id, secret)`` of a clear key of either kind, or None."""
    if not isinstance(text, str) or len(text) != CLEAR_KEY_LENGTH:
        return None
    if text.startswith(CLEAR_PREFIX):
        kind = KeyKind.SERVER
    elif text.startswith(CLIENT_CLEAR_PREFIX):
        kind = KeyKind.CLIENT
    else:
        return None
    start = len(CLEAR_PREFIX)  # both prefixes are 4 characters
    key_id = text[start : start + KEY_ID_LENGTH]
    separator = text[start + KEY_ID_LENGTH]
    secret_text = text[start + KEY_ID_LENGTH + 1 :]
    if separator != "_" or not _KEY_ID.fullmatch(key_id) or not _SECRET_TEXT.fullmatch(secret_text):
        return None
    secret = base64.urlsafe_b64decode(secret_text + "=")
    # The last character carries 2 unused bits: only the canonical spelling counts.
    if _encode_secret(secret) != secret_text:
        return None
    return kind, key_id, secret


# --- records -----------------------------------------------------------------------


def record_key(key_id: str) -> str:
    return RECORD_KEY_PREFIX + key_id


def is_sdk_key_record(key: str) -> bool:
    return key.startswith(RECORD_KEY_PREFIX)


def _problem(record: SdkKeyRecord) -> str | None:
    """What breaks the format's rules in ``record``, or None."""
    if not isinstance(record.id, str) or not _KEY_ID.fullmatch(record.id):
        return f"key id {record.id!r}: expected {KEY_ID_LENGTH} lowercase hex digits"
    if problem := check_environment_name(record.env):
        return problem
    if not isinstance(record.who, str) or not 0 < len(record.who) <= MAX_WHO_LENGTH:
        return f"who is 1-{MAX_WHO_LENGTH} characters"
    if isinstance(record.when, bool) or not isinstance(record.when, int) or not 0 <= record.when <= MAX_INT:
        return f"when must be an integer in 0..2^63-1, not {record.when!r}"
    if isinstance(record, SdkKeyCreate):
        if (
            not isinstance(record.name, str)
            or len(record.name) > MAX_NAME_LENGTH
            or _CONTROL.search(record.name)
        ):
            return f"a key name is at most {MAX_NAME_LENGTH} printable characters"
        if not isinstance(record.salt, bytes) or len(record.salt) != SALT_LENGTH:
            return f"salt must be {SALT_LENGTH} bytes"
        if not isinstance(record.digest, bytes) or len(record.digest) != DIGEST_LENGTH:
            return f"digest must be {DIGEST_LENGTH} bytes"
        if not isinstance(record.key_kind, KeyKind):
            return f"key kind must be one of {[k.value for k in KeyKind]}, not {record.key_kind!r}"
    return None


def encode_record(record: SdkKeyRecord) -> bytes:
    """The record value. Raises ``MalformedSdkKeyRecord`` for a record the
    format does not allow (a writer bug: it is never written)."""
    if problem := _problem(record):
        raise MalformedSdkKeyRecord(problem)
    doc: dict[str, Any] = {"format": FORMAT_VERSION, "id": record.id, "env": record.env}
    doc["who"] = record.who
    doc["when"] = record.when
    if isinstance(record, SdkKeyCreate):
        doc.update(kind=KIND_CREATE, name=record.name, salt=record.salt.hex(), digest=record.digest.hex())
        if record.key_kind is not KeyKind.SERVER:  # absent = server: older records keep their bytes
            doc["keyKind"] = record.key_kind.value
    else:
        doc["kind"] = KIND_REVOKE
    return canonical(doc)


def _hex_field(doc: dict[str, Any], name: str, length: int) -> bytes:
    value = doc.get(name)
    if not isinstance(value, str) or len(value) != 2 * length or not _HEX.fullmatch(value):
        raise MalformedSdkKeyRecord(f"{name} must be {2 * length} lowercase hex digits")
    return bytes.fromhex(value)


def decode_record(key: str, value: bytes | None) -> SdkKeyRecord:
    """The SDK key record under ``key`` with ``value``. Raises
    ``MalformedSdkKeyRecord`` (report it, go on) or ``UnsupportedChange``."""
    if not is_sdk_key_record(key):
        raise MalformedSdkKeyRecord(f"record key {key!r} is not {RECORD_KEY_PREFIX}<key id>")
    key_id = key[len(RECORD_KEY_PREFIX) :]
    if not _KEY_ID.fullmatch(key_id):
        raise MalformedSdkKeyRecord(f"record key {key!r}: the key id is {KEY_ID_LENGTH} lowercase hex digits")
    if value is None:
        raise MalformedSdkKeyRecord(f"tombstone on {key!r}: keys are revoked with a record, never deleted")
    doc = load_record(key, value, MalformedSdkKeyRecord, FORMAT_VERSION)
    if doc.get("id") != key_id:
        raise MalformedSdkKeyRecord(f"record {key!r} names key id {doc.get('id')!r}")
    kind = doc.get("kind")
    # Field types are checked by encode_record below (through _problem).
    env: Any = doc.get("env")
    who: Any = doc.get("who")
    when: Any = doc.get("when")
    record: SdkKeyRecord
    if kind == KIND_CREATE:
        salt = _hex_field(doc, "salt", SALT_LENGTH)
        digest = _hex_field(doc, "digest", DIGEST_LENGTH)
        name: Any = doc.get("name")
        key_kind: Any = doc.get("keyKind", KeyKind.SERVER.value)
        try:
            kind_of_key = KeyKind(key_kind)
        except ValueError:
            raise MalformedSdkKeyRecord(f"record {key!r}: unknown keyKind {key_kind!r}") from None
        record = SdkKeyCreate(key_id, env, name, salt, digest, who, when, kind_of_key)
    elif kind == KIND_REVOKE:
        record = SdkKeyRevoke(key_id, env, who, when)
    else:
        raise MalformedSdkKeyRecord(f"record {key!r}: unknown kind {kind!r}")
    try:
        again = encode_record(record)
    except (TypeError, ValueError) as exc:
        raise MalformedSdkKeyRecord(f"record {key!r}: {exc}") from None
    if again != value:
        raise MalformedSdkKeyRecord(
            f"record {key!r} is not in canonical form (or has unknown or missing fields)"
        )
    return record


# --- issuing and revoking (writer side) --------------------------------------------


@dataclass(frozen=True, slots=True)
class IssuedSdkKey:
    """A new key: append ``record_key``/``record_value``; once it is applied,
    hand ``clear_key`` to the caller (the only time anyone sees it)."""

    key_id: str
    record_key: str
    record_value: bytes
    clear_key: str = field(repr=False)


def issue_sdk_key(env: str, name: str, who: str, when: int, kind: KeyKind = KeyKind.SERVER) -> IssuedSdkKey:
    """A fresh random key of ``kind`` for ``env`` of the tenant whose topic the
    record goes to. Raises ``MalformedSdkKeyRecord`` for a bad env, name, who or when."""
    key_id = secrets.token_hex(KEY_ID_LENGTH // 2)
    secret = secrets.token_bytes(SECRET_BYTES)
    salt = secrets.token_bytes(SALT_LENGTH)
    record = SdkKeyCreate(key_id, env, name, salt, secret_digest(salt, secret), who, when, kind)
    value = encode_record(record)
    return IssuedSdkKey(key_id, record_key(key_id), value, f"{kind.prefix}{key_id}_{_encode_secret(secret)}")


def revoke_record(key_id: str, env: str, who: str, when: int) -> tuple[str, bytes]:
    """``(record key, record value)`` that revokes ``key_id`` (of ``env``)."""
    return record_key(key_id), encode_record(SdkKeyRevoke(key_id, env, who, when))
