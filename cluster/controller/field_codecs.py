"""Field encodings that controller commands and the snapshot share, so
that a key or a topic setting is the same bytes in the log and in a
snapshot (commands.py's docstring has the table).

Invariants: each reader accepts exactly what its writer writes — one
encoding per value — and raises only ``WireError``.
"""

from __future__ import annotations

from cluster.controller.model import KeyScope, TopicConfig
from cluster.primitives.wire import Reader, WireError, Writer

__all__ = [
    "read_compaction",
    "read_key_scope",
    "read_key_tenant",
    "write_compaction",
    "write_key_scope",
    "write_key_tenant",
]


def write_key_tenant(w: Writer, tenant: str | None) -> None:
    """An API key's tenant as ``is_operator flag, tenant text`` ("" for an
    operator key): the encoding ``CreateApiKey`` and the snapshot share."""
    w.flag(tenant is None).text(tenant or "")


def read_key_tenant(r: Reader, key_id: str) -> str | None:
    """What ``write_key_tenant`` wrote (None: an operator key). Raises
    ``WireError`` for an operator key with a tenant."""
    operator = r.flag("is_operator")
    tenant = r.text("tenant")
    if operator and tenant:
        raise WireError(f"{r.what}: API key {key_id!r} is an operator key with a tenant {tenant!r}")
    return None if operator else tenant


def write_key_scope(w: Writer, scope: KeyScope, expires_at_ms: int) -> None:
    """A key's scope and expiry (the module docstring's ``key_scope``)."""
    w.text(scope.role)
    for prefixes in (scope.produce_prefixes, scope.consume_prefixes, scope.group_prefixes):
        w.u32(len(prefixes))
        for prefix in prefixes:
            w.text(prefix)
    w.i64(expires_at_ms)


def read_key_scope(r: Reader) -> tuple[KeyScope, int]:
    """What ``write_key_scope`` wrote: ``(scope, expires_at_ms)``. Raises
    ``WireError`` for a prefix list that is not sorted and distinct (the
    one spelling ``KeyScope`` keeps)."""
    role = r.text("role")
    lists: list[tuple[str, ...]] = []
    for what in ("produce_prefixes", "consume_prefixes", "group_prefixes"):
        count = r.u32(f"{what} (count)")
        if count * 2 > r.remaining:  # each text takes at least 2 bytes
            raise WireError(f"{r.what}: {what} count {count} runs past the end")
        prefixes = tuple(r.text(what) for _ in range(count))
        if list(prefixes) != sorted(set(prefixes)):
            raise WireError(f"{r.what}: {what} are not sorted and distinct")
        lists.append(prefixes)
    return KeyScope(role, *lists), r.i64("expires_at_ms")


def write_compaction(w: Writer, config: TopicConfig) -> None:
    """A topic's compaction settings (the module docstring's ``compaction``)."""
    w.text(config.cleanup_policy).i64(config.min_compaction_lag_ms).i64(config.delete_retention_ms)
    w.opt_i64(config.max_compaction_lag_ms)


def read_compaction(r: Reader) -> tuple[str, int, int, int | None]:
    """What ``write_compaction`` wrote: ``(cleanup_policy,
    min_compaction_lag_ms, delete_retention_ms, max_compaction_lag_ms)``."""
    return (
        r.text("cleanup_policy"),
        r.i64("min_compaction_lag_ms"),
        r.i64("delete_retention_ms"),
        r.opt_i64("max_compaction_lag_ms"),
    )
