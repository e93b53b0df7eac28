"""The offline replica-log reader, now ``cluster/replica_dump.py``; kept
here so that existing imports (``from tests.integration.replica_logs import
read_replica_log``) and ``python -m tests.integration.replica_logs`` keep
working."""

from __future__ import annotations

import sys

from cluster.replica_dump import ReplicaLog, main, read_replica_log, read_replica_logs

__all__ = ["ReplicaLog", "main", "read_replica_log", "read_replica_logs"]

if __name__ == "__main__":
    sys.exit(main())
