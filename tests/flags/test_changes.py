"""The change-record format: round trips, canonical bytes, every malformed input refused."""

from __future__ import annotations

import json

import pytest

from flags.changes import (
    Change,
    Kind,
    MalformedChange,
    UnsupportedChange,
    decode,
    encode,
    parse_record_key,
    record_key,
)
from flags.model import validate_flag, validate_flag_set

FLAG = validate_flag(
    "new-welcome", {"state": "ENABLED", "variants": {"a": 1.0, "b": 2}, "defaultVariant": "a"}
)
OFF = validate_flag(
    "new-welcome", {"state": "DISABLED", "variants": {"a": 1.0, "b": 2}, "defaultVariant": "a"}
)
SET = validate_flag_set(
    {"flags": {"x": {"state": "ENABLED", "variants": {"on": True}}}, "metadata": {"v": "1"}}
)

CHANGES = [
    Change(Kind.CREATE, "production", "new-welcome", "key-7", 1_700_000_000_000, 0, FLAG),
    Change(Kind.UPDATE, "production", "new-welcome", "key-7", 5, 12, FLAG),
    Change(Kind.ENABLE, "production", "new-welcome", "key-7", 5, 12, FLAG),
    Change(Kind.DISABLE, "production", "new-welcome", "key-7", 5, 12, OFF),
    Change(Kind.ROLLBACK, "production", "new-welcome", "key-7", 5, 12, FLAG, rollback_to=3),
    Change(Kind.DELETE, "production", "new-welcome", "ops", 5, 12),
    Change(Kind.RESTATE, "production", "new-welcome", "ops", 5, 0, FLAG, version=4, as_of=9),
    Change(Kind.RESTATE, "production", "new-welcome", "ops", 5, 0, None, version=4, as_of=9),
    Change(Kind.ENV_CREATE, "staging", None, "ops", 5, 0),
    Change(Kind.IMPORT, "staging", None, "ops", 5, 3, SET),
    Change(Kind.ENV_DELETE, "staging", None, "ops", 5, 3),
]


@pytest.mark.parametrize("change", CHANGES, ids=lambda c: c.kind.value)
def test_round_trip_is_canonical(change: Change) -> None:
    value = encode(change)
    assert decode(change.key, value) == change
    assert encode(decode(change.key, value)) == value
    doc = json.loads(value)
    assert doc["format"] == 1 and doc["kind"] == change.kind.value
    assert value == json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def test_float_variants_stay_floats() -> None:
    value = encode(CHANGES[0])
    assert b'"a":1.0' in value
    assert decode("production/new-welcome", value).definition == FLAG


def test_record_keys() -> None:
    assert record_key("production", "f") == "production/f"
    assert parse_record_key("production/f") == ("production", "f")
    assert parse_record_key("production") == ("production", None)
    for bad in ("", "Prod", "production/", "production/a/b", "/f"):
        with pytest.raises(MalformedChange):
            parse_record_key(bad)


def mutate(change: Change, **fields: object) -> bytes:
    doc = json.loads(encode(change))
    for name, value in fields.items():
        if value is ...:
            del doc[name]
        else:
            doc[name] = value
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\xff\xfe",
        b"[]",
        b"null",
        b'{"format":1}',
        mutate(CHANGES[1], kind="frobnicate"),
        mutate(CHANGES[1], format=0),
        mutate(CHANGES[1], format=True),
        mutate(CHANGES[1], who=""),
        mutate(CHANGES[1], when=-1),
        mutate(CHANGES[1], when=1.5),
        mutate(CHANGES[1], expected=...),
        mutate(CHANGES[1], definition=...),
        mutate(CHANGES[1], definition={"state": "ENABLED"}),
        mutate(CHANGES[1], extra=1),
        mutate(CHANGES[1], env="staging"),
        mutate(CHANGES[1], flag="other"),
        mutate(CHANGES[1], version=3),
        mutate(CHANGES[2], definition=OFF.to_json()),
        mutate(CHANGES[5], definition=FLAG.to_json()),
        mutate(CHANGES[6], version=10),
        mutate(CHANGES[8], flag="new-welcome"),
        encode(CHANGES[1]).replace(b",", b", ", 1),
        encode(CHANGES[1]).replace(b'"expected":12', b'"expected":12,"expected":12'),
        encode(CHANGES[1]).replace(b'"when":5', b'"when":NaN'),
    ],
)
def test_malformed_records_are_refused(value: bytes) -> None:
    with pytest.raises(MalformedChange):
        decode("production/new-welcome", value)


def test_env_records_need_an_env_key() -> None:
    with pytest.raises(MalformedChange):
        decode("staging/x", encode(CHANGES[8]))


def test_newer_format_is_reported_not_skipped() -> None:
    with pytest.raises(UnsupportedChange, match="format 2"):
        decode("production/new-welcome", mutate(CHANGES[1], format=2, novelty=True))


def test_encode_refuses_changes_the_table_does_not_allow() -> None:
    with pytest.raises(MalformedChange):
        encode(Change(Kind.UPDATE, "production", "f", "k", 1, 0, None))
    with pytest.raises(MalformedChange):
        encode(Change(Kind.IMPORT, "production", "f", "k", 1, 0, SET))
    with pytest.raises(MalformedChange):
        encode(Change(Kind.DELETE, "production", "f", "k" * 129, 1, 0))
