"""Tenant quotas as the controller stores them: limits, their defaults, and
the count limits the state machine enforces itself.

A quota is a ``QuotaLimits``: eight optional limits, in ``QUOTA_FIELDS``
order (the wire order too). What a tenant may use is
``overlay(overlay(BUILT_IN_DEFAULTS, cluster defaults), tenant overrides)``
(``ControllerState.effective_quota``):

- ``BUILT_IN_DEFAULTS``: ``partitions = MAX_TENANT_PARTITIONS``, everything
  else unlimited (what a cluster did before quotas existed);
- the cluster defaults: the cluster file's ``[quotas]``, which the
  controller leader writes to the log (``SetQuota("", ...)``) whenever the
  applied ones differ from the file's (cluster/controller_duties.py);
- a tenant's overrides: an operator's ``SetQuota(tenant, ...)``; a field
  left None inherits the cluster default.

So None means "no limit" in a set of defaults and "inherit" in a tenant's
overrides: a tenant cannot be given "unlimited" over a limited default,
only a larger number.

Who enforces what: the controller refuses a ``CreateTopic`` over the
``partitions`` or ``topics`` quota at apply (``check_topic_quota``,
deterministic on every node); rates, storage, groups and streams are
charged by each node's front door (cluster/quotas/).

Invariants:

- Every set field is 0 .. 2**63-1 (``check_quota``); 0 allows nothing
  (a tenant with ``topics = 0`` can create no topic).
- A tenant's stored override record is never all None (setting all None
  removes it), so equal states have equal tables.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from cluster.controller.model import MAX_TENANT_PARTITIONS, shown
from cluster.controller.results import Rejected, RejectReason
from cluster.primitives.wire import Reader, Writer

__all__ = [
    "BUILT_IN_DEFAULTS",
    "QUOTA_FIELDS",
    "QuotaLimits",
    "check_quota",
    "check_topic_quota",
    "overlay",
    "read_quota",
    "write_quota",
]

_MAX_I64 = 2**63 - 1


@dataclass(frozen=True, slots=True)
class QuotaLimits:
    """None in a field: no limit (defaults) / inherit the cluster default (a
    tenant's override)."""

    produce_bytes_s: int | None = None
    fetch_bytes_s: int | None = None
    requests_s: int | None = None
    storage_bytes: int | None = None
    partitions: int | None = None
    topics: int | None = None
    groups: int | None = None
    streams: int | None = None

    def values(self) -> tuple[int | None, ...]:
        """The fields in ``QUOTA_FIELDS`` order."""
        return tuple(getattr(self, name) for name in QUOTA_FIELDS)

    @property
    def is_empty(self) -> bool:
        """No field set: as a tenant's overrides, none at all."""
        return all(value is None for value in self.values())


QUOTA_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(QuotaLimits))
"""The eight quota names, in declaration (and wire) order."""

BUILT_IN_DEFAULTS = QuotaLimits(partitions=MAX_TENANT_PARTITIONS)
"""The defaults before the cluster file's ``[quotas]``: only the partition
cap that existed before quotas; everything else unlimited."""


def check_quota(limits: QuotaLimits) -> str | None:
    """What is wrong with ``limits``, or None: every set field must be an
    integer from 0 (nothing allowed) to 2**63-1."""
    for name, value in zip(QUOTA_FIELDS, limits.values(), strict=True):
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _MAX_I64:
            return f"quota {name} must be 0 or more (0 allows nothing; unset: the default), got {value!r}"
    return None


def overlay(base: QuotaLimits, override: QuotaLimits) -> QuotaLimits:
    """``base`` with every field ``override`` sets replaced."""
    return QuotaLimits(
        *(b if o is None else o for b, o in zip(base.values(), override.values(), strict=True))
    )


def check_topic_quota(tenant: str, limits: QuotaLimits, topics: int) -> Rejected | None:
    """Whether ``tenant``, which has ``topics`` topics, may create one more
    under its effective ``limits`` (the partition quota is weighed by
    ``model.check_partitions``, with the cluster cap)."""
    if limits.topics is not None and topics + 1 > limits.topics:
        return Rejected(
            RejectReason.QUOTA_EXCEEDED,
            f"tenant {shown(tenant)} has {topics} of its {limits.topics} topics; one more does not fit "
            f"(delete a topic or ask an operator to raise the quota: "
            f"raftlog tenant quota set {tenant} --topics N)",
        )
    return None


# --- encoding (SetQuota and the snapshot share it) ---------------------------------


def write_quota(w: Writer, limits: QuotaLimits) -> None:
    """The eight fields as ``opt_i64`` in ``QUOTA_FIELDS`` order."""
    for value in limits.values():
        w.opt_i64(value)


def read_quota(r: Reader) -> QuotaLimits:
    """What ``write_quota`` wrote."""
    return QuotaLimits(*(r.opt_i64(name) for name in QUOTA_FIELDS))
