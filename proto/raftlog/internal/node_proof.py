"""Node proofs: how a call on an internal surface (Raft transport, cluster
join, NodeAdmin) shows that its caller holds the cluster secret, without
sending the secret.

Hand-written and stdlib-only, like ``raftlog.v1.record_batch``: the node
(``cluster/``: making proofs on its outgoing calls, checking them in
``cluster/internal/node_auth.py``) and the test tools (``harness/``, which
may not import the server) share this one definition of the format.

The cluster secret
------------------

32 random bytes, written as 64 hexadecimal characters (one line) in a file
only its owner may read; every node of the cluster is given the same file
(``openssl rand -hex 32`` makes one; so does ``ensure_secret_file``).

The proof
---------

One metadata entry, ``raftlog-node-proof``, made fresh for every call::

    <node id>.<unix ms>.<nonce>.<mac>

========== ==================================================================
field      meaning
========== ==================================================================
node id    decimal, 0-20 digits: the calling node (0: a tool, not a node)
unix ms    decimal: the caller's wall clock when it made the proof
nonce      32 lowercase hex characters (16 random bytes), never reused
mac        64 lowercase hex characters: HMAC-SHA256(secret, message)
========== ==================================================================

``message`` is the UTF-8 of ``raftlog-internal/1|<node id>|<unix ms>|<nonce>|<method>``
where ``method`` is the full gRPC method (``/raftlog.internal.v1.NodeAdmin/Stats``),
so a proof made for one method is worthless for another.

Invariants:

- ``make_proof`` and ``parse_proof`` agree: every proof ``make_proof``
  makes parses to the fields it was made from; ``parse_proof`` refuses
  (None) anything else, including values longer than ``MAX_PROOF_CHARS``.
- Nothing here compares MACs: the checker (cluster/internal/node_auth.py)
  does, in constant time, together with the freshness window and the
  replay memory.
- ``read_secret_file`` never puts any part of the file in an error message.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

PROOF_METADATA_KEY: Final = "raftlog-node-proof"
PROOF_VERSION: Final = "raftlog-internal/1"
SECRET_BYTES: Final = 32
NONCE_BYTES: Final = 16
MAX_PROOF_CHARS: Final = 160
"""Longer than any proof this module makes (20 + 20 + 32 + 64 + 3 dots)."""

NODE_ADMIN_STATS: Final = "/raftlog.internal.v1.NodeAdmin/Stats"
"""The method tools call most; a proof must name the method it is for."""

_PROOF = re.compile(r"(\d{1,20})\.(\d{1,20})\.([0-9a-f]{32})\.([0-9a-f]{64})")
_SECRET = re.compile(r"[0-9a-fA-F]{64}")


class SecretFileError(ValueError):
    """The cluster secret file is missing or not a secret; the message says
    which file and what is wrong, never what it holds."""


@dataclass(frozen=True, slots=True)
class Proof:
    node_id: int
    unix_ms: int
    nonce: str
    mac: str


def proof_mac(secret: bytes, node_id: int, unix_ms: int, nonce: str, method: str) -> str:
    """The hex HMAC a proof with these fields must carry."""
    message = f"{PROOF_VERSION}|{node_id}|{unix_ms}|{nonce}|{method}".encode()
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def make_proof(
    secret: bytes, node_id: int, method: str, *, unix_ms: int | None = None, nonce: str | None = None
) -> str:
    """A fresh proof for one call of ``method`` by ``node_id`` (0: a tool).
    ``unix_ms`` and ``nonce`` are for tests; leave them out otherwise."""
    if node_id < 0:
        raise ValueError(f"node id must not be negative, not {node_id}")
    ms = int(time.time() * 1000) if unix_ms is None else unix_ms
    once = secrets.token_hex(NONCE_BYTES) if nonce is None else nonce
    return f"{node_id}.{ms}.{once}.{proof_mac(secret, node_id, ms, once, method)}"


def proof_metadata(secret: bytes, node_id: int, method: str) -> tuple[tuple[str, str]]:
    """The call metadata that carries a fresh proof (pass as ``metadata=``;
    make a new one for every call: a receiver accepts each proof once)."""
    return ((PROOF_METADATA_KEY, make_proof(secret, node_id, method)),)


def parse_proof(value: str | bytes | None) -> Proof | None:
    """The fields of a well-formed proof value; None for anything else."""
    if not isinstance(value, str) or len(value) > MAX_PROOF_CHARS:
        return None
    match = _PROOF.fullmatch(value)
    if match is None:
        return None
    node, ms, nonce, mac = match.groups()
    return Proof(int(node), int(ms), nonce, mac)


def new_secret_text() -> str:
    """A new cluster secret as its file holds it (64 hex characters and a newline)."""
    return secrets.token_hex(SECRET_BYTES) + "\n"


def read_secret_file(path: Path) -> bytes:
    """The secret in ``path``; ``SecretFileError`` when it cannot be read or
    is not 64 hex characters (surrounding whitespace is ignored)."""
    try:
        text = path.read_text(encoding="ascii", errors="replace").strip()
    except OSError as exc:
        raise SecretFileError(f"cluster secret file {path}: {exc.strerror or exc}") from None
    if not _SECRET.fullmatch(text):
        raise SecretFileError(
            f"cluster secret file {path}: expected 64 hexadecimal characters "
            "(32 random bytes, e.g. `openssl rand -hex 32`)"
        )
    return bytes.fromhex(text)


def ensure_secret_file(path: Path) -> bool:
    """Create ``path`` with a new secret, mode 0600, unless it exists (it is
    then left as it is). Returns whether it was created. Exclusive create:
    two starters racing never end up with different secrets."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(new_secret_text())
        f.flush()
        os.fsync(f.fileno())
    return True
