"""Where a node's zone label comes from when ``--zone`` is not given:
``$RAFTLOG_ZONE``, else the file ``$RAFTLOG_ZONE_FILE`` names.

In a Kubernetes pod (helm/raftlog) both come from the node's
``topology.kubernetes.io/zone`` label, by two routes:

- ``RAFTLOG_ZONE`` is a downward-API ``fieldRef`` to the pod's own copy of
  that label, which Kubernetes puts on pods only where the
  ``PodTopologyLabelsAdmission`` feature gate is on (alpha, off by default,
  in 1.33 and 1.34; beta, on by default, from 1.35). Elsewhere the
  variable is the empty string.
- ``RAFTLOG_ZONE_FILE`` names a file the ``raftlog zone-from-node`` init
  container (cluster/cli_zone.py) wrote from the Node object, on any
  version. It holds the label's value, or nothing when the node has no
  zone label.

Invariants:

- An empty or blank ``$RAFTLOG_ZONE`` is no override (the fieldRef of a pod
  without the label gives ""); then the file is read. A set, non-empty
  ``$RAFTLOG_ZONE`` wins: both routes read the same node label, so they
  can only disagree when someone set the variable on purpose.
- An empty file is no override either (the node has no zone label).
- ``$RAFTLOG_ZONE_FILE`` set but unreadable is a ConfigError (the node
  exits 2 saying which file): a missing file means the init container did
  not run, and a node must not start silently without its zone.
- The value is returned stripped and not checked here: the caller checks
  it as a registration would (cluster/serve.py ``with_zone``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from cluster.static_config import ConfigError

__all__ = ["ZONE_ENV", "ZONE_FILE_ENV", "environment_zone"]

ZONE_ENV = "RAFTLOG_ZONE"
ZONE_FILE_ENV = "RAFTLOG_ZONE_FILE"


def environment_zone(environ: Mapping[str, str]) -> str | None:
    """The zone the environment gives this node; None: no override (the
    cluster file's zone stands)."""
    zone = environ.get(ZONE_ENV, "").strip()
    if zone:
        return zone
    path = environ.get(ZONE_FILE_ENV, "").strip()
    if not path:
        return None
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            f"${ZONE_FILE_ENV}={path}: {exc.strerror or exc} (the zone-from-node init container "
            f"writes it; unset ${ZONE_FILE_ENV} to run without it)"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"${ZONE_FILE_ENV}={path}: not UTF-8 text (expected a zone label)") from None
    return text.strip() or None
