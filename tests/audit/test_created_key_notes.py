"""The id of a key a call creates reaches the call's audit notes
(cluster/audit/call_notes.py) from the real handlers — ``CreateTenant``,
``CreateApiKey``, ``RotateApiKey`` — on the controller's leader and on a
node that forwarded the call, and never the clear text; a rotation whose
second step fails still names the key it created. (tests/audit/test_stage.py
checks that the stage puts the note into the event; test_audit_cluster.py
checks the whole path on a real cluster.)"""

from __future__ import annotations

from typing import Any

import pytest

from cluster.audit.call_notes import CallNotes, note_created_key, taking_notes
from cluster.controller import ApiKeyInfo, SetApiKeyExpiry, decode_command
from cluster.frontend.admin_service import AdminService
from cluster.frontend.forwarding import Forwarder
from cluster.frontend.front_door import Caller
from raftlog.v1 import admin_pb2
from tests.cluster.test_tenant_admin import OPERATOR, call, world

pytestmark = pytest.mark.timeout(30)

KEY_ID = "0123456789abcdef"


async def _noted(caller: Caller, method: Any, request: Any) -> tuple[Any, CallNotes]:
    with taking_notes() as notes:
        answer = await call(caller, method, request)
    return answer, notes


async def test_each_call_that_issues_a_key_notes_its_id_on_the_leader() -> None:
    w = world()
    service = w.service

    answer, notes = await _noted(OPERATOR, service.CreateTenant, admin_pb2.CreateTenantRequest(name="gamma"))
    assert notes.created_key_id == answer.api_key.key_id != ""
    assert answer.api_key.clear_text and answer.api_key.clear_text not in repr(notes)

    answer, notes = await _noted(w.admin, service.CreateApiKey, admin_pb2.CreateApiKeyRequest())
    created = answer.api_key.key_id
    assert notes.created_key_id == created and answer.api_key.clear_text not in repr(notes)

    answer, notes = await _noted(
        w.admin, service.RotateApiKey, admin_pb2.RotateApiKeyRequest(key_id=created, grace_seconds=60)
    )
    assert notes.created_key_id == answer.api_key.key_id not in ("", created)

    # A call that issues nothing notes nothing.
    _, notes = await _noted(w.admin, service.RevokeApiKey, admin_pb2.RevokeApiKeyRequest(key_id=created))
    assert notes.created_key_id == ""


async def test_a_rotation_whose_second_step_fails_still_names_its_new_key() -> None:
    w = world()
    service = w.service
    old = (await call(w.admin, service.CreateApiKey, admin_pb2.CreateApiKeyRequest())).api_key.key_id
    controller = service._controller
    submit = controller.submit

    async def failing_expiry(data: bytes) -> Any:
        if isinstance(decode_command(data), SetApiKeyExpiry):
            raise RuntimeError("the controller lost its leadership")
        return await submit(data)

    controller.submit = failing_expiry  # type: ignore[method-assign,assignment]
    with taking_notes() as notes, pytest.raises(RuntimeError):
        await call(w.admin, service.RotateApiKey, admin_pb2.RotateApiKeyRequest(key_id=old, grace_seconds=60))
    new = w.log.state.api_key(notes.created_key_id)
    assert isinstance(new, ApiKeyInfo) and new.tenant == "acme" and new.key_id != old


class Follower:
    """A controller replica on a node that does not lead it."""

    is_leader = False
    leader_address = "leader:1"

    def __init__(self, state: Any) -> None:
        self.state = state

    async def wait_applied(self, index: int, wait_s: float) -> None:
        pass


class LeaderAnswers(Forwarder):
    """Relays a fixed answer, as the leader would have given it."""

    def __init__(self, answer: Any) -> None:
        super().__init__()
        self.answer = answer

    async def forward_with_trailers(self, *args: Any) -> tuple[Any, tuple[tuple[str, str], ...]]:
        return self.answer, ()


@pytest.mark.parametrize(
    ("method", "request_", "answer"),
    [
        (
            "CreateTenant",
            admin_pb2.CreateTenantRequest(name="gamma"),
            admin_pb2.CreateTenantResponse(api_key=admin_pb2.ApiKey(key_id=KEY_ID, clear_text="rlk_secret")),
        ),
        (
            "CreateApiKey",
            admin_pb2.CreateApiKeyRequest(tenant="acme"),
            admin_pb2.CreateApiKeyResponse(api_key=admin_pb2.ApiKey(key_id=KEY_ID, clear_text="rlk_secret")),
        ),
        (
            "RotateApiKey",
            admin_pb2.RotateApiKeyRequest(key_id="00000000000000bb"),
            admin_pb2.RotateApiKeyResponse(api_key=admin_pb2.ApiKey(key_id=KEY_ID, clear_text="rlk_secret")),
        ),
    ],
)
async def test_a_forwarding_node_notes_the_id_from_the_leaders_answer(
    method: str, request_: Any, answer: Any
) -> None:
    w = world()
    service = AdminService(1, Follower(w.log.state), lambda group: 0, LeaderAnswers(answer))  # type: ignore[arg-type]
    got, notes = await _noted(OPERATOR, getattr(service, method), request_)
    assert got == answer
    assert notes.created_key_id == KEY_ID and "rlk_secret" not in repr(notes)


async def test_notes_go_only_to_the_call_taking_them_and_only_key_ids() -> None:
    note_created_key(KEY_ID)  # no call being audited: nothing to note, no error
    with taking_notes() as outer:
        with taking_notes() as inner:
            note_created_key(KEY_ID)
        assert (inner.created_key_id, outer.created_key_id) == (KEY_ID, "")
        note_created_key("rlk_0123456789abcdef_THE-SECRET")  # not a key id: dropped, logged
        assert outer.created_key_id == ""
