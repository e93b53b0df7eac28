"""Node proofs (proto/raftlog/internal/node_proof.py) and their checker
(cluster/internal/node_auth.py): what is accepted, once, and what is not."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cluster.internal.cluster_secret import SECRET_FILE_ENV, load_cluster_secret
from cluster.internal.node_auth import FRESHNESS_MS, MAX_METHODS, NodeCredentials, ProofChecker, claimed_node
from cluster.static_config import ConfigError, parse_cluster
from raftlog.internal.node_proof import (
    MAX_PROOF_CHARS,
    PROOF_METADATA_KEY,
    SecretFileError,
    ensure_secret_file,
    make_proof,
    parse_proof,
    proof_metadata,
    read_secret_file,
)

SECRET = bytes(range(32))
OTHER = bytes(range(1, 33))
METHOD = "/raftlog.internal.v1.NodeAdmin/Stats"
NOW = 1_700_000_000_000


def proof(
    node: int = 2, ms: int = NOW, nonce: str = "ab" * 16, secret: bytes = SECRET, method: str = METHOD
) -> str:
    return make_proof(secret, node, method, unix_ms=ms, nonce=nonce)


def test_a_valid_proof_names_its_node_once() -> None:
    checker = ProofChecker(SECRET)
    assert checker.check(proof(), METHOD, NOW) == 2
    assert checker.check(proof(), METHOD, NOW + 1) is None  # replayed
    assert checker.check(proof(nonce="cd" * 16), METHOD, NOW + 1) == 2


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        b"bytes are not a proof",
        proof(secret=OTHER),  # another cluster's secret
        proof(method="/raftlog.internal.v1.ClusterJoin/Join"),  # made for another method
        proof()[:-1] + ("0" if proof()[-1] != "0" else "1"),  # one MAC digit changed
        proof().replace("2.", "3.", 1),  # another node id under the same MAC
        proof(ms=NOW - FRESHNESS_MS - 1),  # too old
        proof(ms=NOW + FRESHNESS_MS + 1),  # too far ahead
        proof().upper(),  # the format is lowercase hex
        proof() + ".x",
        "1." * MAX_PROOF_CHARS,
    ],
)
def test_anything_else_proves_nothing(value: str | bytes | None) -> None:
    assert ProofChecker(SECRET).check(value, METHOD, NOW) is None


def test_clocks_may_differ_within_the_window_either_way() -> None:
    checker = ProofChecker(SECRET)
    assert checker.check(proof(ms=NOW - FRESHNESS_MS, nonce="01" * 16), METHOD, NOW) == 2
    assert checker.check(proof(ms=NOW + FRESHNESS_MS, nonce="02" * 16), METHOD, NOW) == 2


def test_nonces_are_forgotten_only_once_their_proof_cannot_be_fresh() -> None:
    checker = ProofChecker(SECRET, window_ms=1000)
    ahead = proof(ms=NOW + 1000)  # a sender whose clock is a window ahead
    assert checker.check(ahead, METHOD, NOW) == 2
    # Still fresh until NOW + 2000: its nonce must still be remembered.
    assert checker.check(ahead, METHOD, NOW + 1999) is None
    assert checker.remembered == 1
    assert checker.check(proof(ms=NOW + 2001, nonce="ef" * 16), METHOD, NOW + 2001) == 2
    assert checker.remembered == 1  # the first one expired and was forgotten


def test_forged_proofs_are_not_remembered_and_a_full_memory_refuses() -> None:
    checker = ProofChecker(SECRET, max_remembered=2)
    for i in range(5):
        assert checker.check(proof(secret=OTHER, nonce=f"{i:032x}"), METHOD, NOW) is None
    assert checker.remembered == 0
    assert checker.check(proof(nonce="01" * 16), METHOD, NOW) == 2
    assert checker.check(proof(nonce="02" * 16), METHOD, NOW) == 2
    assert checker.check(proof(nonce="03" * 16), METHOD, NOW) is None  # fail closed


def test_a_full_memory_of_one_method_leaves_the_others_open() -> None:
    # An operator looping GetNodeStats fills the NodeAdmin.Stats memory of
    # the nodes it fans out to; Raft streams must still reconnect.
    checker = ProofChecker(SECRET, max_remembered=2)
    stats, stream = "/raftlog.internal.v1.NodeAdmin/Stats", "/raftlog.internal.v1.RaftTransport/Stream"
    assert checker.check(proof(nonce="01" * 16, method=stats), stats, NOW) == 2
    assert checker.check(proof(nonce="02" * 16, method=stats), stats, NOW) == 2
    assert checker.check(proof(nonce="03" * 16, method=stats), stats, NOW) is None
    assert checker.check(proof(nonce="04" * 16, method=stream), stream, NOW) == 2


def test_methods_beyond_the_own_memories_share_one() -> None:
    checker = ProofChecker(SECRET, max_remembered=1)
    methods = [f"/x.Y/M{i}" for i in range(MAX_METHODS + 2)]
    for i, method in enumerate(methods[:MAX_METHODS]):
        assert checker.check(proof(nonce=f"{i:032x}", method=method), method, NOW) == 2
    first_extra, second_extra = methods[MAX_METHODS:]
    assert checker.check(proof(nonce="a" * 32, method=first_extra), first_extra, NOW) == 2
    assert checker.check(proof(nonce="b" * 32, method=second_extra), second_extra, NOW) is None


def test_credentials_make_fresh_proofs_and_hide_the_secret() -> None:
    credentials = NodeCredentials(SECRET, 7)
    first, second = credentials.metadata(METHOD), credentials.metadata(METHOD)
    assert first != second and first[0][0] == PROOF_METADATA_KEY
    checker = credentials.checker()
    assert checker.check(first[0][1], METHOD, int(parse_proof(first[0][1]).unix_ms)) == 7  # type: ignore[union-attr]
    assert claimed_node(second) == 7 and claimed_node(()) is None and claimed_node(None) is None
    assert SECRET.hex() not in repr(credentials) and "hidden" in repr(credentials)
    assert proof_metadata(SECRET, 0, METHOD)[0][1].startswith("0.")


def test_parse_proof_inverts_make_proof() -> None:
    parsed = parse_proof(proof(node=12345, ms=42, nonce="0f" * 16))
    assert parsed is not None and (parsed.node_id, parsed.unix_ms, parsed.nonce) == (12345, 42, "0f" * 16)


def test_secret_files(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "cluster.secret"
    assert ensure_secret_file(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    secret = read_secret_file(path)
    assert len(secret) == 32
    assert not ensure_secret_file(path) and read_secret_file(path) == secret  # never overwritten
    path.write_text("not hex " + "a" * 56)
    with pytest.raises(SecretFileError) as bad:
        read_secret_file(path)
    assert "aaaa" not in str(bad.value)  # the content is never shown
    with pytest.raises(SecretFileError):
        read_secret_file(tmp_path / "missing")


def test_a_node_finds_its_secret_in_the_cluster_file_or_the_environment(tmp_path: Path) -> None:
    doc = {"cluster_id": "c", "nodes": [{"id": 1, "address": "127.0.0.1:1"}]}
    without = parse_cluster(doc, tmp_path)
    with pytest.raises(ConfigError, match="node 1 has no cluster secret"):
        load_cluster_secret(without, 1, {})
    ensure_secret_file(tmp_path / "s1")
    ensure_secret_file(tmp_path / "s2")
    with_file = parse_cluster({**doc, "cluster_secret_file": "s1"}, tmp_path)
    assert with_file.cluster_secret_file == tmp_path / "s1"
    assert load_cluster_secret(with_file, 1, {}) == read_secret_file(tmp_path / "s1")
    # The environment names another file: it wins.
    env = {SECRET_FILE_ENV: os.fspath(tmp_path / "s2")}
    assert load_cluster_secret(with_file, 1, env) == read_secret_file(tmp_path / "s2")
    with pytest.raises(ConfigError, match="64 hexadecimal"):
        (tmp_path / "bad").write_text("short\n")
        load_cluster_secret(without, 1, {SECRET_FILE_ENV: os.fspath(tmp_path / "bad")})
