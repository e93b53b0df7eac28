"""API keys: only a salted hash is stored, authentication works, refuses
what it should, and compares in constant time (``hmac.compare_digest``)."""

from __future__ import annotations

import ast
import base64
import hmac
import inspect
from collections.abc import Iterator

import pytest

from cluster.controller import api_keys
from cluster.controller.api_keys import issue_api_key, parse_api_key, secret_digest, verify_secret
from cluster.controller.commands import RevokeApiKey, encode_command
from cluster.controller.model import Principal
from tests.controller.harness import Log, cluster


@pytest.fixture
def log() -> Log:
    return cluster(1, tenants=["acme", "beta"])


def test_issued_keys_have_the_documented_shape() -> None:
    key = issue_api_key("acme")
    assert len(key.clear_text) == 64 and key.clear_text.startswith(f"rlk_{key.key_id}_")
    assert parse_api_key(key.clear_text) is not None
    assert len(key.command.salt) == 16 and len(key.command.digest) == 32
    assert key.command.tenant == "acme"
    other = issue_api_key("acme")
    assert other.clear_text != key.clear_text and other.command.salt != key.command.salt


def test_nothing_stored_reveals_the_clear_key(log: Log) -> None:
    key = issue_api_key("acme")
    parsed = parse_api_key(key.clear_text)
    assert parsed is not None
    _, secret = parsed
    # The whole base64url secret: it may itself contain "_", so split off
    # only the prefix and the key id.
    secret_text = key.clear_text.split("_", 2)[2]
    assert base64.urlsafe_b64decode(secret_text + "=") == secret and len(secret_text) == 43
    log.ok(key.command)
    stored = [encode_command(key.command), log.state.snapshot(), repr(key), repr(key.command)]
    stored.append(repr(log.state.list_api_keys("acme").items))
    for blob in stored:
        data = blob.encode() if isinstance(blob, str) else blob
        assert secret not in data
        assert key.clear_text.encode() not in data
        assert secret_text.encode() not in data
    assert key.command.digest != secret
    assert secret not in key.command.digest and key.command.digest not in secret
    assert key.command.digest == secret_digest(key.command.salt, secret)


def test_same_secret_with_another_salt_hashes_differently() -> None:
    secret = bytes(range(32))
    assert secret_digest(bytes(16), secret) != secret_digest(b"\x01" * 16, secret)


def test_authenticate_tenant_and_operator_keys(log: Log) -> None:
    tenant_key, operator_key = issue_api_key("acme"), issue_api_key(None)
    log.ok(tenant_key.command)
    log.ok(operator_key.command)
    principal = log.state.authenticate(tenant_key.clear_text)
    assert principal == Principal(tenant_key.key_id, "acme") and not principal.is_operator
    operator = log.state.authenticate(operator_key.clear_text)
    assert operator == Principal(operator_key.key_id, None) and operator.is_operator
    info = log.state.api_key(tenant_key.key_id)
    assert info is not None and info.tenant == "acme" and info.created_index > 0
    assert [k.key_id for k in log.state.list_api_keys(None).items] == [operator_key.key_id]
    assert [k.key_id for k in log.state.list_api_keys("acme").items] == [tenant_key.key_id]
    assert log.state.list_api_keys("beta").items == ()


def _flip_secret(clear: str) -> str:
    """The same key id with another (well-formed) secret."""
    parsed = parse_api_key(clear)
    assert parsed is not None
    key_id, secret = parsed
    other = bytes([secret[0] ^ 1]) + secret[1:]
    return f"rlk_{key_id}_" + base64.urlsafe_b64encode(other).rstrip(b"=").decode()


def test_authenticate_refuses(log: Log) -> None:
    key, unstored = issue_api_key("acme"), issue_api_key("acme")
    log.ok(key.command)
    refused = [
        "",
        "Bearer " + key.clear_text,
        key.clear_text + "x",
        key.clear_text[:-1],
        key.clear_text.upper(),
        key.clear_text.replace("rlk_", "rlx_"),
        _flip_secret(key.clear_text),
        unstored.clear_text,
        key.clear_text[:20] + "." + key.clear_text[21:],
    ]
    for text in refused:
        assert log.state.authenticate(text) is None, text
    assert log.state.authenticate(key.clear_text) is not None
    log.ok(RevokeApiKey(key.key_id))
    assert log.state.authenticate(key.clear_text) is None


def test_only_the_canonical_spelling_of_a_secret_is_a_key(log: Log) -> None:
    key = issue_api_key("acme")
    log.ok(key.command)
    last = key.clear_text[-1]
    # The final base64 character carries 2 padding bits: its neighbours in
    # the alphabet can decode to the same bytes.
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    variants = [key.clear_text[:-1] + c for c in alphabet if c != last]
    same_bytes = [
        v
        for v in variants
        if base64.urlsafe_b64decode(v[21:] + "=") == base64.urlsafe_b64decode(key.clear_text[21:] + "=")
    ]
    assert same_bytes  # there are such spellings ...
    for variant in same_bytes:
        assert parse_api_key(variant) is None  # ... and none is accepted
        assert log.state.authenticate(variant) is None


@pytest.fixture
def compare_calls(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[bytes, bytes]]]:
    calls: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        calls.append((bytes(a), bytes(b)))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    yield calls


def test_authentication_compares_digests_in_constant_time(
    log: Log, compare_calls: list[tuple[bytes, bytes]]
) -> None:
    key = issue_api_key("acme")
    log.ok(key.command)
    for text in (key.clear_text, _flip_secret(key.clear_text), issue_api_key("acme").clear_text):
        compare_calls.clear()
        log.state.authenticate(text)
        # One comparison per attempt, known key id or not, right secret or
        # not, and it is between digests: never the secret itself.
        assert len(compare_calls) == 1, text
        (a, b), parsed = compare_calls[0], parse_api_key(text)
        assert parsed is not None
        assert len(a) == len(b) == 32 and parsed[1] not in (a, b)
    compare_calls.clear()
    log.state.authenticate(key.clear_text)
    assert compare_calls[0][1] == key.command.digest


def test_verify_secret_uses_compare_digest(compare_calls: list[tuple[bytes, bytes]]) -> None:
    salt, secret = b"s" * 16, b"k" * 32
    assert verify_secret(salt, secret_digest(salt, secret), secret)
    assert not verify_secret(salt, secret_digest(salt, secret), b"j" * 32)
    assert len(compare_calls) == 2


def test_the_module_does_not_compare_with_eq() -> None:
    """A plain ``==`` on digests would short-circuit on the first differing
    byte: ``verify_secret`` and ``verify_unknown`` compare only through
    ``hmac.compare_digest``."""
    tree = ast.parse(inspect.getsource(api_keys))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in {"verify_secret", "verify_unknown"}:
            compares = [n for n in ast.walk(node) if isinstance(n, ast.Compare)]
            assert not compares, f"{node.name} compares with an operator"
