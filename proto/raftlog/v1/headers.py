"""Header and trailer names of the ``raftlog.v1`` API: the contract between
the server (``cluster/``) and every client (the SDK, the CLI, grpcurl).

Hand-written and stdlib-only, like ``record_batch``: both sides import these
names, so neither can rename one without the other noticing.

========================== ======== ===========================================
name                       where    meaning
========================== ======== ===========================================
``authorization``          request  ``Bearer <api key>``: who is calling
``raftlog-tenant``         request  the tenant an operator key acts in
                                    (``default`` when absent)
``raftlog-no-forward``     request  ``1``: answer ``NOT_LEADER`` with the
                                    leader's address instead of forwarding
                                    (set on every forwarded hop, so a request
                                    is forwarded at most once)
``raftlog-leader``         trailer  on an answer a node forwarded: the address
                                    of the leader that served it, so a client
                                    goes there directly next time
``raftlog-metadata-index`` trailer  on an admin change: the controller index
                                    it was applied at (read-your-writes)
``grpc-status-details-bin`` trailer a serialized ``google.rpc.Status`` whose
                                    detail is a ``raftlog.v1.ErrorInfo``
========================== ======== ===========================================
"""

from __future__ import annotations

from typing import Final

AUTHORIZATION: Final = "authorization"
TENANT: Final = "raftlog-tenant"
NO_FORWARD: Final = "raftlog-no-forward"
LEADER: Final = "raftlog-leader"
METADATA_INDEX: Final = "raftlog-metadata-index"
STATUS_DETAILS: Final = "grpc-status-details-bin"

BEARER_PREFIX: Final = "Bearer "
