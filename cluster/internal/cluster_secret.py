"""Where a node finds the cluster secret (cluster/internal/node_auth.py).

The file named by ``RAFTLOG_CLUSTER_SECRET_FILE`` when that is set (a path,
not the secret: a Kubernetes Secret mounted as a file, a test harness's
file), else the cluster file's ``cluster_secret_file`` (relative to the
cluster file). The secret itself never travels in the environment or on a
command line, so ``/proc/<pid>/environ`` and ``ps`` show no secret.

Invariants:

- ``load_cluster_secret`` returns the secret or raises ``ConfigError`` with
  a message that says what to do; a node without a secret never starts.
- A file others may read is used, with a warning once at start (a mounted
  Kubernetes Secret is 0644 unless ``defaultMode`` says otherwise; refusing
  it would stop a cluster over a mode bit).
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from cluster.static_config import ConfigError, StaticCluster
from raftlog.internal.node_proof import SecretFileError, read_secret_file

log = logging.getLogger(__name__)

SECRET_FILE_ENV = "RAFTLOG_CLUSTER_SECRET_FILE"


def secret_file_of(cluster: StaticCluster, environ: Mapping[str, str]) -> Path | None:
    named = environ.get(SECRET_FILE_ENV, "").strip()
    if named:
        return Path(named)
    return cluster.cluster_secret_file


def load_cluster_secret(
    cluster: StaticCluster, node_id: int, environ: Mapping[str, str] = os.environ
) -> bytes:
    path = secret_file_of(cluster, environ)
    if path is None:
        raise ConfigError(
            f"node {node_id} has no cluster secret: set cluster_secret_file in the cluster file "
            f"(or {SECRET_FILE_ENV}) to a file holding 64 hex characters that every node of the "
            "cluster is given; make one with `openssl rand -hex 32 > cluster.secret && chmod 600 cluster.secret`"
        )
    try:
        secret = read_secret_file(path)
    except SecretFileError as exc:
        raise ConfigError(str(exc)) from None
    try:
        mode = path.stat().st_mode
    except OSError:
        mode = 0
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "cluster secret file %s is readable by others (mode %o): chmod 600 it", path, mode & 0o777
        )
    return secret
