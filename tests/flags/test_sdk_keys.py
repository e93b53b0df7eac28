"""SDK keys: clear key shape, record round trips, strict decoding, verification."""

from __future__ import annotations

import json
import re

import pytest

from flags.changes import UnsupportedChange
from flags.sdk_keys import (
    CLEAR_KEY_LENGTH,
    MalformedSdkKeyRecord,
    SdkKeyCreate,
    SdkKeyRevoke,
    decode_record,
    encode_record,
    is_sdk_key_record,
    issue_sdk_key,
    parse_sdk_key,
    record_key,
    revoke_record,
    secret_digest,
    verify_secret,
    verify_unknown,
)

KEY_ID = "0123456789abcdef"


def create_doc(**changes: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "format": 1,
        "kind": "sdk-key-create",
        "id": KEY_ID,
        "env": "prod",
        "name": "web",
        "salt": "00" * 16,
        "digest": "11" * 32,
        "who": "key-1",
        "when": 5,
    }
    doc.update(changes)
    return {k: v for k, v in doc.items() if v is not None}


def canonical(doc: dict[str, object]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_issued_key_has_the_documented_shape_and_verifies() -> None:
    issued = issue_sdk_key("prod", "web app", "key-1", 1_700_000_000_000)
    assert re.fullmatch(r"rlf_[0-9a-f]{16}_[A-Za-z0-9_-]{43}", issued.clear_key)
    assert len(issued.clear_key) == CLEAR_KEY_LENGTH
    assert issued.record_key == f"@sdk-key/{issued.key_id}" and is_sdk_key_record(issued.record_key)
    assert issued.clear_key not in repr(issued)
    record = decode_record(issued.record_key, issued.record_value)
    assert isinstance(record, SdkKeyCreate)
    assert (record.id, record.env, record.name, record.who) == (issued.key_id, "prod", "web app", "key-1")
    parsed = parse_sdk_key(issued.clear_key)
    assert parsed is not None and parsed[0] == issued.key_id
    assert verify_secret(record.salt, record.digest, parsed[1])
    assert issued.clear_key.split("_")[2] not in issued.record_value.decode()
    other = issue_sdk_key("prod", "web app", "key-1", 1)
    assert other.key_id != issued.key_id
    assert not verify_secret(record.salt, record.digest, parse_sdk_key(other.clear_key)[1])  # type: ignore[index]


def test_records_round_trip_canonically() -> None:
    create = SdkKeyCreate(KEY_ID, "prod", "ünïcode name", bytes(16), bytes(range(32)), "key-1", 7)
    value = encode_record(create)
    assert decode_record(record_key(KEY_ID), value) == create
    assert encode_record(decode_record(record_key(KEY_ID), value)) == value
    key, revoke_value = revoke_record(KEY_ID, "prod", "key-2", 9)
    assert key == record_key(KEY_ID)
    assert decode_record(key, revoke_value) == SdkKeyRevoke(KEY_ID, "prod", "key-2", 9)
    assert json.loads(revoke_value) == {
        "format": 1,
        "kind": "sdk-key-revoke",
        "id": KEY_ID,
        "env": "prod",
        "who": "key-2",
        "when": 9,
    }


@pytest.mark.parametrize(
    ("key", "value"),
    [
        pytest.param(record_key(KEY_ID), None, id="tombstone"),
        pytest.param(record_key(KEY_ID), b"not json", id="not-json"),
        pytest.param(record_key(KEY_ID), b"[1]", id="not-object"),
        pytest.param(record_key(KEY_ID), b"\xff", id="not-utf8"),
        pytest.param(record_key("0123"), canonical(create_doc()), id="short-id-in-key"),
        pytest.param(record_key(KEY_ID.upper()), canonical(create_doc(id=KEY_ID.upper())), id="uppercase-id"),
        pytest.param("prod/flag", canonical(create_doc()), id="not-a-key-record"),
        pytest.param(record_key("fedcba9876543210"), canonical(create_doc()), id="id-differs-from-key"),
        pytest.param(record_key(KEY_ID), json.dumps(create_doc()).encode(), id="not-canonical"),
        pytest.param(record_key(KEY_ID), canonical(create_doc(extra=1)), id="unknown-field"),
        pytest.param(record_key(KEY_ID), canonical(create_doc(name=None)), id="missing-name"),
        pytest.param(record_key(KEY_ID), canonical(create_doc(when=None)), id="missing-when"),
        pytest.param(record_key(KEY_ID), canonical(create_doc(kind="sdk-key-rename")), id="unknown-kind"),
        pytest.param(record_key(KEY_ID), canonical(create_doc(env="Prod")), id="bad-env"),
        pytest.param(record_key(KEY_ID), canonical(create_doc(who="")), id="empty-who"),
        pytest.param(record_key(KEY_ID), canonical(create_doc(when=-1)), id="negative-when"),
        pytest.param(record_key(KEY_ID), canonical(create_doc(when=True)), id="bool-when"),
        pytest.param(record_key(KEY_ID), canonical(create_doc(name="a\nb")), id="control-in-name"),
        pytest.param(record_key(KEY_ID), canonical(create_doc(name="x" * 129)), id="long-name"),
        pytest.param(record_key(KEY_ID), canonical(create_doc(salt="AA" * 16)), id="uppercase-hex"),
        pytest.param(record_key(KEY_ID), canonical(create_doc(digest="11" * 31)), id="short-digest"),
        pytest.param(record_key(KEY_ID), canonical(create_doc(format=0)), id="format-0"),
        pytest.param(record_key(KEY_ID), b'{"format":1,"format":1}', id="duplicate-field"),
        pytest.param(record_key(KEY_ID), b'{"format":NaN}', id="nan"),
    ],
)
def test_malformed_records_are_refused(key: str, value: bytes | None) -> None:
    with pytest.raises(MalformedSdkKeyRecord):
        decode_record(key, value)


def test_the_canonical_create_doc_of_the_malformed_cases_is_itself_valid() -> None:
    # The parametrised cases above each break one thing in this document.
    assert isinstance(decode_record(record_key(KEY_ID), canonical(create_doc())), SdkKeyCreate)


def test_a_newer_format_is_unsupported_not_malformed() -> None:
    with pytest.raises(UnsupportedChange):
        decode_record(record_key(KEY_ID), canonical(create_doc(format=2)))


def test_writers_cannot_encode_bad_records() -> None:
    with pytest.raises(MalformedSdkKeyRecord):
        issue_sdk_key("Not An Env", "web", "key-1", 1)
    with pytest.raises(MalformedSdkKeyRecord):
        revoke_record("xyz", "prod", "key-1", 1)
    with pytest.raises(MalformedSdkKeyRecord):
        encode_record(SdkKeyCreate(KEY_ID, "prod", "web", bytes(15), bytes(32), "key-1", 1))


def test_parse_accepts_only_canonical_clear_keys() -> None:
    clear = issue_sdk_key("prod", "web", "key-1", 1).clear_key
    assert parse_sdk_key(clear) is not None
    secret_text = clear.split("_", 2)[2]
    # The last base64 character carries 2 unused bits: a sibling spelling decodes
    # to the same bytes but is not the key.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    index = alphabet.index(secret_text[-1])
    sibling = alphabet[index ^ 1]
    assert parse_sdk_key(clear[:-1] + sibling) is None
    for bad in (
        "",
        clear[:-1],
        clear + "A",
        "rlk_" + clear[4:],
        clear[:4] + clear[4:20].upper() + clear[20:],
        clear[:20] + "-" + clear[21:],
        clear[:-1] + "!",
    ):
        assert parse_sdk_key(bad) is None, bad


def test_verification_uses_the_salt_and_digest() -> None:
    salt, secret = b"s" * 16, b"k" * 32
    digest = secret_digest(salt, secret)
    assert verify_secret(salt, digest, secret)
    assert not verify_secret(b"t" * 16, digest, secret)
    assert not verify_secret(salt, digest, b"j" * 32)
    assert not verify_secret(salt, bytes(32), secret)
    assert not verify_secret(salt, digest[:-1] + bytes([digest[-1] ^ 1]), secret)  # every byte counts
    assert not verify_secret(salt, digest[:16], secret)
    verify_unknown(secret)  # same work, no answer: it must not raise
