"""Joining a running cluster: how a node that the cluster has never seen
gets registered and starts following the metadata.

The operator adds the node to its own copy of the cluster file (a new
``[[nodes]]`` entry; the file must list at least one running node) and
starts it. The metadata controller's voters are fixed when the cluster is
made, so the new node is never one of them; it opens group 0 empty and asks
the nodes of its file, one after another, to ``Join`` it until the
controller leader has registered it (``RegisterNode``). The leader's duties
(cluster/controller_duties.py) then add every registered node to group 0
as a learner, so the node learns the whole metadata, and rebalance moves a
share of the replicas onto it.

Who may ask: only a node that holds the cluster secret. The internal door
(cluster/internal/internal_door.py) refuses a ``Join`` without a valid node
proof before this code runs, and the proof must name the node id the
request asks to register (cluster/internal/node_auth.py says how one-time
join tokens would replace handing out the secret).

Invariants:

- Only the controller leader proposes a registration, and only for a caller
  whose proof names the requested node id and whose ``cluster_id`` is the
  cluster's.
- A refusal names no cluster id and no address of any node (the leader's
  address in a ``NOT_LEADER`` redirect goes only to a caller that proved it
  holds the secret); the details go to this node's log. A node id already registered at
  another address is refused (``NODE_ID_IN_USE``): that id may
  still count in its groups' quorums with the data of the node that had it,
  and a new node with an empty disk must never vote in its place.
- A registered node may change only its own zone label (``Join`` with its
  registered address and another zone, by a caller whose proof names that
  node id; its controller eligibility stays): a node learns its zone when
  it starts (a Kubernetes pod's topology label, ``raftlog serve --zone``),
  while the bootstrap registered the cluster file's. Every node, voters
  included, keeps asking until its registration carries the zone it runs
  with; voters wait until the bootstrap registered them first, so they are
  never registered by a ``Join`` (which would make them ineligible).
- A node registered by ``Join`` is never controller-eligible.
- Accepted: any holder of the cluster secret can relabel a registered
  node's zone (a proof for that node id is all ``Join`` asks), and so move
  where placement puts replicas. The secret already grants node identity
  (it can join as any unregistered id, or speak Raft as any node), so this
  gives it nothing it did not have; only per-node credentials would narrow
  it.
- Joining is idempotent: a node registered as asked is answered OK, so a
  retry after a lost answer, or a restart, is harmless.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import grpc

from cluster.controller import RegisterNode, Rejected, encode_command
from cluster.controller_replica import ControllerReplica
from cluster.frontend.grpc_errors import ServiceError, abort, error_info
from cluster.internal.node_auth import NodeCredentials, claimed_node
from cluster.tls.dial import PLAIN, Dialer
from partitions.replica_errors import ReplicaError
from raftlog.internal.v1 import join_pb2, join_pb2_grpc
from raftlog.v1.reasons import Reason

log = logging.getLogger(__name__)

C = grpc.StatusCode
RETRY_S = 1.0
REFUSED_RETRY_S = 30.0
CALL_TIMEOUT_S = 5.0
JOIN_METHOD = "/raftlog.internal.v1.ClusterJoin/Join"


class JoinService(join_pb2_grpc.ClusterJoinServicer):
    def __init__(self, node_id: int, cluster_id: str, controller: ControllerReplica) -> None:
        self._node_id = node_id
        self._cluster_id = cluster_id
        self._controller = controller

    async def Join(
        self, request: join_pb2.JoinRequest, context: grpc.aio.ServicerContext
    ) -> join_pb2.JoinResponse:
        try:
            if claimed_node(context.invocation_metadata()) != request.node_id:
                raise ServiceError(
                    C.PERMISSION_DENIED,
                    Reason.CLUSTER_MISMATCH,
                    "a node may ask to register only its own node id",
                )
            await self._register(request)
        except ServiceError as error:
            await abort(context, error)
        return join_pb2.JoinResponse(controller_leader=self._node_id)

    async def _register(self, request: join_pb2.JoinRequest) -> None:
        if request.cluster_id != self._cluster_id:
            log.warning(
                "join: node %d asked with cluster id %r; this is %r",
                request.node_id,
                request.cluster_id,
                self._cluster_id,
            )
            raise ServiceError(
                C.FAILED_PRECONDITION,
                Reason.CLUSTER_MISMATCH,
                "the node was started with another cluster's file: start it with this cluster's file",
            )
        controller = self._controller
        if not controller.is_leader:
            raise ServiceError(
                C.FAILED_PRECONDITION,
                Reason.NOT_LEADER,
                "this node does not lead the metadata controller; ask the leader",
                leader_address=controller.leader_address,
            )
        if _registered_as_asked(controller, request):
            return
        known = controller.state.node(request.node_id)
        if known is not None and known.address != request.address:
            log.warning(
                "join: node id %d asked for %s but is registered at %s",
                request.node_id,
                request.address,
                known.address,
            )
            raise ServiceError(
                C.ALREADY_EXISTS,
                Reason.NODE_ID_IN_USE,
                f"node id {request.node_id} is registered at another address; "
                "give the new node an id no node has had",
            )
        # Registered at this address: only its zone changes (the caller
        # proved it is that node), its eligibility stays.
        eligible = known is not None and known.controller_eligible
        command = RegisterNode(request.node_id, request.address, request.zone, controller_eligible=eligible)
        try:
            result = await controller.submit(encode_command(command))
        except ReplicaError as error:
            raise ServiceError(
                C.UNAVAILABLE, Reason.NO_CONTROLLER, f"the controller lost its leader ({error.reason}); retry"
            ) from None
        if isinstance(result, Rejected):
            raise ServiceError(C.INVALID_ARGUMENT, Reason(result.reason), result.message)
        if known is None:
            log.warning("node %d joined the cluster at %s", request.node_id, request.address)
        else:
            log.warning(
                "node %d now registered in zone %r (was %r)", request.node_id, request.zone, known.zone
            )


async def join_until_registered(
    controller: ControllerReplica,
    request: join_pb2.JoinRequest,
    seeds: Iterable[str],
    credentials: NodeCredentials,
    dialer: Dialer = PLAIN,
    *,
    registered_first: bool = False,
) -> None:
    """Ask ``seeds`` (and the leaders they name; this node's own address
    last: it may lead the controller) to register this node until the
    metadata it follows lists it as asked; every ask carries a fresh proof
    from ``credentials``. ``registered_first`` (a controller voter): wait
    until the bootstrap has registered this node, then only bring its zone
    in step. A refusal that retrying cannot fix (no valid proof, wrong
    cluster, id in use, invalid address) is logged and asked again only
    every ``REFUSED_RETRY_S``: the operator fixes the file and restarts the
    node."""
    seeds = [*seeds, request.address]
    while registered_first and controller.state.node(request.node_id) is None:
        await controller.wait_changed(controller.version, timeout=RETRY_S)
    while not _registered_as_asked(controller, request):
        addresses = list(seeds)
        asked: set[str] = set()
        refused = False
        while addresses and not _registered_as_asked(controller, request):
            address = addresses.pop(0)
            if address in asked:
                continue
            asked.add(address)
            leader, refusal = await _ask(address, request, credentials, dialer)
            refused |= refusal
            if leader:
                addresses.insert(0, leader)
        # A refusal will not change until the operator acts: ask seldom.
        await controller.wait_changed(controller.version, timeout=REFUSED_RETRY_S if refused else RETRY_S)


def _registered_as_asked(controller: ControllerReplica, request: join_pb2.JoinRequest) -> bool:
    known = controller.state.node(request.node_id)
    return known is not None and (known.address, known.zone) == (request.address, request.zone)


async def _ask(
    address: str, request: join_pb2.JoinRequest, credentials: NodeCredentials, dialer: Dialer = PLAIN
) -> tuple[str, bool]:
    """One ``Join`` call: the leader address a non-leader named, and whether
    the cluster refused the node (logged)."""
    async with dialer.dial(address) as channel:
        try:
            await join_pb2_grpc.ClusterJoinStub(channel).Join(
                request, timeout=CALL_TIMEOUT_S, metadata=credentials.metadata(JOIN_METHOD)
            )
            return "", False
        except grpc.aio.AioRpcError as error:
            info = error_info(error)
            if info is not None and info.reason == "NOT_LEADER":
                return info.leader_address, False
            if error.code() in (C.UNAVAILABLE, C.DEADLINE_EXCEEDED):
                log.info("join: %s did not answer (%s)", address, error.code().name)
                return "", False
            if error.code() == C.UNAUTHENTICATED:
                log.error(
                    "join refused by %s: it does not accept this node's proof "
                    "(is this node given the cluster's secret file, and is its clock right?)",
                    address,
                )
            else:
                log.error("join refused by %s: %s", address, error.details())
            return "", True
