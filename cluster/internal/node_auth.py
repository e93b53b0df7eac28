"""Node authentication for the internal surfaces: who may use the Raft
transport, cluster join and NodeAdmin, decided from a node proof.

Design (issue 14; DESIGN.md "The front door and the contract"):

- Every node of a cluster is given the same cluster secret, 32 random bytes
  in an owner-only file (``cluster_secret_file`` in the cluster file, or the
  file ``RAFTLOG_CLUSTER_SECRET_FILE`` names; cluster/internal/cluster_secret.py).
  A node without one refuses to start.
- Callers never send the secret. Each internal call carries a proof in its
  metadata (format: proto/raftlog/internal/node_proof.py, shared with the
  test tools): the caller's node id, its wall clock in ms, a random nonce
  and HMAC-SHA256 over those and the gRPC method, keyed by the secret.
- The receiver (``ProofChecker``, behind the internal door,
  cluster/internal/internal_door.py) accepts a proof when its MAC matches
  (compared in constant time), its clock is within ``FRESHNESS_MS`` of the
  receiver's, and its nonce was not accepted before (the nonces of the
  window are remembered). Everything else is refused alike.
- Cost: one HMAC per call, at call start. The Raft transport's stream is
  one call per peer link, so its batches cost nothing; a produce never
  touches an internal surface (its replication rides those streams).
- Joining (cluster/internal/join.py): a node that holds the secret proves
  membership, and the proof must name the node id it asks to register.
  One-time join tokens (not built): an operator who does not want to hand
  the long-lived secret to a new machine would issue a token through the
  public AdminService with an operator key — the controller stores its hash
  with an expiry and the node id it is for, like an API key. The new node
  presents it once in ``Join``; the controller leader consumes it (a
  committed command, so it works once) and answers with the cluster secret
  sealed for that node (or, with mTLS, a signed certificate). The door would
  then admit ``Join`` with either a node proof or a token, nothing else.

What a network eavesdropper can still do until TLS (a later issue):
read everything (records, keys in forwarded requests, metadata), and
inject into or take over an established plain-TCP connection, including a
Raft stream another node opened with a valid proof. A proof it captured can
be replayed only to another node that has not seen its nonce, only for the
same method and only within the freshness window (each receiver remembers
the nonces it accepted, not the others'). It cannot make a new proof, so it
cannot open its own stream, join, or read NodeAdmin after the window.
With mTLS the door will admit a call by its peer certificate instead of (or
as well as) the proof: ``ProofChecker`` is one of the admission rules the
door can hold, not the only possible one.

Invariants:

- ``check`` returns the proven node id only for a well-formed proof with the
  right MAC for this method, a clock within ``window_ms`` of ``now_ms``
  (either way: clocks may be ahead or behind), and a nonce not accepted
  within the last ``2 * window_ms``; None otherwise. It never raises for
  any metadata value.
- A nonce is remembered only after the proof was otherwise accepted, so
  forged proofs cannot fill the memory; once ``max_remembered`` nonces of
  live proofs of one method are held, further proofs of that method are
  refused until some expire (fail closed: only holders of the secret can
  get there), and other methods are not affected.
- Pure: time is passed in; no I/O. ``NodeCredentials`` never shows the
  secret in its repr.
"""

from __future__ import annotations

import hmac
from collections import deque
from collections.abc import Iterable
from typing import Final

from raftlog.internal.node_proof import (
    PROOF_METADATA_KEY,
    make_proof,
    parse_proof,
    proof_mac,
)

__all__ = [
    "FRESHNESS_MS",
    "PROOF_METADATA_KEY",
    "NodeCredentials",
    "ProofChecker",
    "claimed_node",
]

FRESHNESS_MS: Final = 60_000
"""How far a proof's clock may be from the receiver's. Node clocks must
agree within it (NTP keeps them within milliseconds); longer leaves a
captured proof replayable longer."""

MAX_REMEMBERED: Final = 50_000
"""Nonces held at most per method: far above what nodes and tools make in
two windows (a few calls per second); about 11 MB at worst per method
(measured: 200,000 nonces as str in a set plus the expiry deque took about
45 MB)."""

MAX_METHODS: Final = 8
"""Methods with a nonce memory of their own (the internal surfaces have
four today); any other shares one more, so at most about 100 MB in all."""

_OTHER_METHODS: Final = ""


class NodeCredentials:
    """What a node (or a tool, node id 0) attaches to its internal calls."""

    __slots__ = ("_secret", "node_id")

    def __init__(self, secret: bytes, node_id: int) -> None:
        if len(secret) < 16:
            raise ValueError("a cluster secret has at least 16 bytes")
        self._secret = secret
        self.node_id = node_id

    def metadata(self, method: str) -> tuple[tuple[str, str]]:
        """Fresh call metadata for one call of ``method``."""
        return ((PROOF_METADATA_KEY, make_proof(self._secret, self.node_id, method)),)

    def checker(self, **options: int) -> ProofChecker:
        """A checker for proofs made with the same secret."""
        return ProofChecker(self._secret, **options)

    def __repr__(self) -> str:
        return f"NodeCredentials(node_id={self.node_id}, secret=<hidden>)"


class _NonceMemory:
    """The nonces of accepted proofs of one method, until they expire."""

    __slots__ = ("expiries", "seen")

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.expiries: deque[tuple[int, str]] = deque()  # (forget at, nonce), in order of acceptance

    def forget_expired(self, now_ms: int) -> None:
        expiries = self.expiries
        while expiries and expiries[0][0] <= now_ms:
            self.seen.discard(expiries.popleft()[1])


class ProofChecker:
    """Accepts each valid, fresh proof once (see the module invariants).

    Nonces are remembered per method, each method with its own budget of
    ``max_remembered``: a flood of one method's calls (an operator looping
    ``GetNodeStats``, which makes the answering node call every other
    node's NodeAdmin) can fill that method's memory, and then only that
    method is refused until its nonces expire; Raft streams and joins keep
    theirs. At most ``MAX_METHODS`` methods get a memory of their own; any
    further method (only holders of the secret can make a valid proof for
    one) shares one more."""

    __slots__ = ("_max_remembered", "_memories", "_secret", "_window_ms")

    def __init__(
        self, secret: bytes, *, window_ms: int = FRESHNESS_MS, max_remembered: int = MAX_REMEMBERED
    ) -> None:
        if window_ms <= 0 or max_remembered <= 0:
            raise ValueError("window_ms and max_remembered must be positive")
        self._secret = secret
        self._window_ms = window_ms
        self._max_remembered = max_remembered
        self._memories: dict[str, _NonceMemory] = {}

    def check(self, value: str | bytes | None, method: str, now_ms: int) -> int | None:
        """The node id ``value`` (a ``raftlog-node-proof`` metadata value)
        proves for a call of ``method`` at ``now_ms``; None if it proves
        nothing."""
        proof = parse_proof(value)
        if proof is None or abs(now_ms - proof.unix_ms) > self._window_ms:
            return None
        expected = proof_mac(self._secret, proof.node_id, proof.unix_ms, proof.nonce, method)
        if not hmac.compare_digest(expected, proof.mac):
            return None
        memory = self._memory(method)
        memory.forget_expired(now_ms)
        if proof.nonce in memory.seen or len(memory.seen) >= self._max_remembered:
            return None
        memory.seen.add(proof.nonce)
        # Until the proof can no longer be fresh for any clock this node
        # will have (the window on both sides of its own clock).
        memory.expiries.append((now_ms + 2 * self._window_ms, proof.nonce))
        return proof.node_id

    @property
    def remembered(self) -> int:
        return sum(len(memory.seen) for memory in self._memories.values())

    def _memory(self, method: str) -> _NonceMemory:
        memory = self._memories.get(method)
        if memory is None:
            key = method if len(self._memories) < MAX_METHODS else _OTHER_METHODS
            memory = self._memories.setdefault(key, _NonceMemory())
        return memory


def claimed_node(metadata: Iterable[tuple[str, str | bytes]] | None) -> int | None:
    """The node id a call's proof names (None without a well-formed one).
    Only meaningful behind the internal door, which has checked the proof."""
    for key, value in metadata or ():
        if key == PROOF_METADATA_KEY:
            proof = parse_proof(value)
            return None if proof is None else proof.node_id
    return None
