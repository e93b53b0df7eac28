"""The safety checker: Raft's properties, checked incrementally at every step.

The cluster reports what happens (log writes, applies, roles, reads); the
checker keeps just enough global state to judge each report in O(1) or
O(entries reported):

1. Election safety: ``leaders[term]`` is the one node ever seen leading
   ``term``; a second one is a violation.
2. Log matching: every node's log is mirrored as prefix hashes
   (raft/sim/statemachine.py). ``prefix[(index, term)]`` is the prefix hash
   first seen for that entry anywhere; the same (index, term) with another
   prefix hash is a violation. Logs are mirrored as written, including
   writes a crash later loses (an entry's identity does not depend on the
   disk that held it).
3. Leader completeness: ``committed[index]`` records (term, prefix hash) of
   every index some node applied (or restored from a snapshot), and
   ``commit_terms[t]`` the highest index applied by a node whose term was
   ``t`` -- an entry applied by a node in term t was committed in a term
   <= t. A node that becomes leader of term T must hold, with the same
   prefix hash, the highest index applied in a term < T (holding it with the
   same hash means holding everything before it too).
4. State machine safety: two nodes never apply different prefixes at one
   index (compared via ``committed``). Applies are also checked to be in
   order and to match what the applying node's own log holds.
5. Durability: ``committed`` is never cleared -- crashes do not touch the
   checker -- so a committed entry lost by a crash surfaces through 3 and 4.
6. Read safety: a ReadState's index is >= the highest index known committed
   anywhere (``max_commit``) when its read_index was asked.

Every violation carries the step and time it was found at. The checker is
pure bookkeeping: it never looks at a RaftNode.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from raft.sim.statemachine import EMPTY, chain
from raft.types import Entry

ELECTION_SAFETY = "election-safety"
LOG_MATCHING = "log-matching"
LEADER_COMPLETENESS = "leader-completeness"
STATE_MACHINE_SAFETY = "state-machine-safety"
READ_SAFETY = "read-safety"
LIVENESS = "liveness"
CONTRACT = "contract"  # the core broke its API contract (raft/ready.py, raft/storage.py)
EXCEPTION = "exception"  # the core raised where it must not
# The core acted on a message no correct peer could send (a forgery,
# raft/sim/forgery.py), or dropped as impossible one a correct peer sent.
SCREENING = "screening"


@dataclass(frozen=True, slots=True)
class Violation:
    step: int
    time: int
    kind: str
    description: str

    def __str__(self) -> str:
        return f"step {self.step} t={self.time} {self.kind}: {self.description}"


class LogMirror:
    """One node's log as prefix hashes: ``hashes[k]``/``terms[k]`` describe
    index ``base + k``; index ``base`` is the snapshot's."""

    __slots__ = ("base", "hashes", "terms")

    def __init__(self, base: int, base_term: int, base_hash: bytes) -> None:
        self.base = base
        self.hashes = [base_hash]
        self.terms = [base_term]

    @property
    def last(self) -> int:
        return self.base + len(self.hashes) - 1

    def hash_at(self, index: int) -> bytes | None:
        k = index - self.base
        if 0 <= k < len(self.hashes):
            return self.hashes[k]
        return None

    def term_at(self, index: int) -> int | None:
        k = index - self.base
        if 0 <= k < len(self.terms):
            return self.terms[k]
        return None


class Checker:
    def __init__(self) -> None:
        self.step = 0
        self.time = 0
        self.violations: list[Violation] = []
        self.leaders: dict[int, int] = {}
        self.prefix: dict[tuple[int, int], bytes] = {}
        self.committed: dict[int, tuple[int, bytes]] = {}
        self.commit_terms: dict[int, int] = {}
        self.max_applied = 0
        self.max_commit = 0
        self.logs: dict[int, LogMirror] = {}
        self.reads: dict[tuple[int, bytes], int] = {}
        self.checks = 0

    def violation(self, kind: str, description: str) -> None:
        self.violations.append(Violation(self.step, self.time, kind, description))

    # --- log mirroring (2) ---

    def log_reset(
        self, node: int, base: int, base_term: int, base_hash: bytes, entries: Sequence[Entry]
    ) -> None:
        """A node (re)starts with a snapshot at ``base`` and ``entries``
        after it."""
        self.logs[node] = LogMirror(base, base_term, base_hash)
        self._record_prefix(node, base, base_term, base_hash)
        self.log_append(node, entries)

    def log_snapshot(self, node: int, index: int, term: int, digest: bytes) -> None:
        """A snapshot replaced the node's whole log."""
        self.logs[node] = LogMirror(index, term, digest)
        self._record_prefix(node, index, term, digest)

    def log_append(self, node: int, entries: Sequence[Entry], leader: bool = False) -> None:
        """Entries written, replacing the node's log from the first one on.
        ``leader``: the node is leader, so it must only append."""
        if not entries:
            return
        log = self.logs.get(node)
        if log is None:
            log = self.logs[node] = LogMirror(0, 0, EMPTY)
        first = entries[0].index
        if first > log.last + 1:
            self.violation(CONTRACT, f"node {node} wrote index {first} after its last index {log.last}")
            return
        if leader and first <= log.last:
            self.violation(
                LOG_MATCHING, f"leader {node} overwrote its log from index {first} (last was {log.last})"
            )
        skip = 0
        while skip < len(entries) and entries[skip].index <= log.base:
            skip += 1  # covered by the snapshot already
        if skip == len(entries):
            return
        keep = entries[skip].index - log.base
        del log.hashes[keep:]
        del log.terms[keep:]
        digest = log.hashes[-1]
        for entry in entries[skip:]:
            digest = chain(digest, entry.term, entry.kind, entry.data)
            log.hashes.append(digest)
            log.terms.append(entry.term)
            self._record_prefix(node, entry.index, entry.term, digest)

    def log_compact(self, node: int, index: int, term: int) -> None:
        """Forget the mirror's prefix before ``index`` (memory only)."""
        log = self.logs.get(node)
        if log is None or index <= log.base or index > log.last:
            return
        k = index - log.base
        del log.hashes[:k]
        del log.terms[:k]
        log.base = index

    def _record_prefix(self, node: int, index: int, term: int, digest: bytes) -> None:
        key = (index, term)
        seen = self.prefix.setdefault(key, digest)
        if seen != digest:
            self.violation(
                LOG_MATCHING,
                f"node {node} holds entry (index {index}, term {term}) after a log prefix that differs from "
                "another node's",
            )

    # --- roles (1, 3) ---

    def leader(self, node: int, term: int) -> None:
        """``node`` is leader of ``term`` (report it whenever seen)."""
        first = self.leaders.setdefault(term, node)
        if first != node:
            self.violation(ELECTION_SAFETY, f"term {term} has two leaders: {first} and {node}")

    def became_leader(self, node: int, term: int) -> None:
        """``node`` just became leader of ``term``; its log mirror is current."""
        self.leader(node, term)
        self.checks += 1
        index = self.completeness_index(term)
        if index == 0:
            return
        entry_term, digest = self.committed[index]
        log = self.logs.get(node)
        if log is None or index > log.last:
            last = log.last if log is not None else 0
            self.violation(
                LEADER_COMPLETENESS,
                f"node {node} became leader of term {term} with last index {last}, missing committed index "
                f"{index} (term {entry_term})",
            )
            return
        if index >= log.base:
            mine = log.hash_at(index)
            where = index
        else:
            # Covered by the leader's snapshot: compare at the snapshot.
            where = log.base
            mine = log.hash_at(where)
            record = self.committed.get(where)
            if record is None:
                return
            digest = record[1]
        if mine != digest:
            self.violation(
                LEADER_COMPLETENESS,
                f"node {node} became leader of term {term} with a log that differs from the committed one at "
                f"index {where} (committed index {index}, term {entry_term})",
            )

    def completeness_index(self, term: int) -> int:
        """The highest index known committed in a term before ``term`` (0
        if none): a leader of ``term`` must hold it."""
        index = 0
        for applied_term, applied_index in self.commit_terms.items():
            if applied_term < term and applied_index > index:
                index = applied_index
        return index

    # --- applying (3, 4, 5) ---

    def applied(self, node: int, index: int, term: int, digest: bytes, node_term: int) -> None:
        """``node`` (in term ``node_term``) applied the entry at ``index``;
        its state machine hash is now ``digest``."""
        self.checks += 1
        record = self.committed.setdefault(index, (term, digest))
        if record[1] != digest:
            self.violation(
                STATE_MACHINE_SAFETY,
                f"node {node} applied index {index} (term {term}) with a state that differs from another "
                f"node's (term {record[0]})",
            )
        if self.commit_terms.get(node_term, 0) < index:
            self.commit_terms[node_term] = index
        if index > self.max_applied:
            self.max_applied = index
        if index > self.max_commit:
            self.max_commit = index
        log = self.logs.get(node)
        if log is not None:
            mine = log.hash_at(index)
            if mine is not None and mine != digest:
                self.violation(
                    STATE_MACHINE_SAFETY, f"node {node} applied index {index} differently from its own log"
                )

    def commit_index(self, index: int) -> None:
        """Some node reports ``index`` as its commit index."""
        if index > self.max_commit:
            self.max_commit = index

    # --- reads (6) ---

    def read_requested(self, node: int, context: bytes) -> None:
        self.reads[(node, context)] = self.max_commit

    def read_state(self, node: int, index: int, context: bytes) -> None:
        self.checks += 1
        required = self.reads.get((node, context))
        if required is None:
            self.violation(CONTRACT, f"node {node} answered a read {context!r} it was never asked")
        elif index < required:
            self.violation(
                READ_SAFETY,
                f"node {node} answered read {context!r} at index {index}, but index {required} was already "
                "committed when it was asked",
            )
