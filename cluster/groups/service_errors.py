"""How ``GroupService`` (cluster/groups/service.py) refuses: the errors its
handlers expect, each turned into the ``ServiceError`` (status and reason,
``cluster.frontend.grpc_errors``) the front door sends, and the checks of
client-supplied names made before anything is loaded for them.

Invariants:

- Every expected failure leaves a handler through ``as_service_errors`` as
  a ``ServiceError`` with a ``Reason``; the group core's errors map to
  status codes in ``STATUS`` only (an unlisted one is INTERNAL).
- ``check_group`` and ``check_member_id`` bound what a message may echo:
  a name that breaks the naming rule, or a member id longer than
  ``MEMBER_ID_MAX``, is refused (``INVALID_NAME``) quoting it through
  ``shown``.
- Nothing here changes state: every function only raises or returns.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc

from cluster.controller.model import check_name
from cluster.frontend.grpc_errors import ServiceError, from_replica_error, shown
from cluster.groups import (
    FencedMemberError,
    GroupError,
    GroupFullError,
    GroupNotFoundError,
    InvalidGroupRequest,
    StaleMemberEpochError,
    UnknownMemberError,
    UnknownPartitionError,
)
from cluster.groups.coordinator import GROUP_NAME_MAX, MEMBER_ID_MAX
from cluster.groups.offsets import OffsetRecordError
from cluster.primitives.pagination import InvalidPageSize, InvalidPageToken
from partitions.replica_errors import NotLeaderError, ReplicaError
from raftlog.v1.reasons import Reason

__all__ = ["STATUS", "NotCoordinatorError", "as_service_errors", "check_group", "check_member_id"]


class NotCoordinatorError(Exception):
    """This node does not lead the coordinator partition (nothing was
    appended). ``leader_address`` is "host:port" of the leader, "" if unknown."""

    def __init__(self, partition: int, leader_address: str = "") -> None:
        where = f"its leader is at {leader_address}" if leader_address else "its leader is unknown"
        super().__init__(f"this node does not lead coordinator partition {partition}; {where}")
        self.partition = partition
        self.leader_address = leader_address


STATUS: dict[type[GroupError], grpc.StatusCode] = {
    InvalidGroupRequest: grpc.StatusCode.INVALID_ARGUMENT,
    UnknownMemberError: grpc.StatusCode.FAILED_PRECONDITION,
    FencedMemberError: grpc.StatusCode.FAILED_PRECONDITION,
    StaleMemberEpochError: grpc.StatusCode.FAILED_PRECONDITION,
    GroupFullError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    GroupNotFoundError: grpc.StatusCode.NOT_FOUND,
    UnknownPartitionError: grpc.StatusCode.NOT_FOUND,
}


def _from_group_error(error: GroupError) -> ServiceError:
    # Every reason the group core names is a Reason (tests/test_contract.py).
    code = STATUS.get(type(error), grpc.StatusCode.INTERNAL)
    return ServiceError(code, Reason(error.reason), error.message)


def _not_coordinator(error: NotCoordinatorError) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.FAILED_PRECONDITION,
        Reason.NOT_COORDINATOR,
        f"{error}; retry on the coordinator",
        leader_address=error.leader_address,
        metadata={"coordinator_partition": str(error.partition)},
    )


def check_group(group: str) -> None:
    if problem := check_name("group", group, GROUP_NAME_MAX):
        raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_NAME, problem)


def check_member_id(member_id: str) -> None:
    if len(member_id) > MEMBER_ID_MAX:
        raise ServiceError(
            grpc.StatusCode.INVALID_ARGUMENT,
            Reason.INVALID_NAME,
            f"member id {shown(member_id)} is longer than {MEMBER_ID_MAX} characters",
        )


@contextlib.contextmanager
def as_service_errors() -> Iterator[None]:
    """Turn every error a handler expects into the ``ServiceError`` it becomes."""
    try:
        yield
    except GroupError as error:
        raise _from_group_error(error) from None
    except NotCoordinatorError as error:
        raise _not_coordinator(error) from None
    except InvalidPageSize as error:
        raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_PAGE_SIZE, str(error)) from None
    except InvalidPageToken as error:
        raise ServiceError(grpc.StatusCode.INVALID_ARGUMENT, Reason.INVALID_PAGE_TOKEN, str(error)) from None
    except OffsetRecordError as error:
        # A record of a newer version: serving a table without it would be
        # wrong, so the partition stays unserved until this node is upgraded.
        raise ServiceError(
            grpc.StatusCode.INTERNAL,
            Reason.OFFSETS_LOG_UNREADABLE,
            f"the offsets log cannot be read: {error}",
        ) from None
    except NotLeaderError:
        raise ServiceError(
            grpc.StatusCode.FAILED_PRECONDITION,
            Reason.NOT_COORDINATOR,
            "this node lost the leadership of the group's coordinator partition; retry",
        ) from None
    except ReplicaError as error:
        raise from_replica_error(error) from None
