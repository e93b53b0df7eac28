"""Admin API pieces for apps that start offline, and SDK key kinds.

- ``snapshot``: ``GetSnapshot``, the environment's flags.json in the flagd
  format (the very text SyncFlags sends: ``Serving.configuration``).
- ``evaluate_all``: ``EvaluateAll``, the OFREP bulk body for one context
  (flags/ofrep_values.py, so it is byte for byte what the OFREP port answers
  less ``eventStreams``) and its ETag.
- ``requested_kind`` / ``key_info_message``: the ``kind`` of
  ``CreateSdkKey`` and of listed keys.

Invariants: nothing here writes; the environment exists (callers check it
first); a context that is not a JSON object (or whose ``targetingKey`` is
not a string) is ``INVALID_ARGUMENT INVALID_CONTEXT``, as on the OFREP port.
"""

from __future__ import annotations

from openfeature.evaluation_context import EvaluationContext

from flags.admin_requests import bad_request, key_message, parse_json, unknown_env
from flags.live import LiveFlags, Scope, SdkKeyInfo
from flags.ofrep_values import BulkPlan, etag_of
from flags.sdk_keys import KeyKind
from raftlog.flags.v1 import flags_pb2

__all__ = ["evaluate_all", "key_info_message", "requested_kind", "snapshot"]


def snapshot(live: LiveFlags, tenant: str, env: str) -> flags_pb2.GetSnapshotResponse:
    serving = live.serving(Scope(tenant, env))
    if serving is None:
        raise unknown_env(env)
    return flags_pb2.GetSnapshotResponse(flags_json=serving.configuration, version=serving.version)


def _context(context_json: str) -> EvaluationContext:
    doc = parse_json(context_json, "context_json") if context_json else {}
    if not isinstance(doc, dict):
        raise bad_request("INVALID_CONTEXT", 'context_json is a JSON object, e.g. {"targetingKey": "user-1"}')
    targeting_key = doc.get("targetingKey")
    if targeting_key is not None and not isinstance(targeting_key, str):
        raise bad_request("INVALID_CONTEXT", f"targetingKey is a string, not {type(targeting_key).__name__}")
    return EvaluationContext(targeting_key, {k: v for k, v in doc.items() if k != "targetingKey"})


def evaluate_all(live: LiveFlags, tenant: str, env: str, context_json: str) -> flags_pb2.EvaluateAllResponse:
    context = _context(context_json)
    serving = live.serving(Scope(tenant, env))
    if serving is None:
        raise unknown_env(env)
    plan = BulkPlan.build(live, serving)
    body = plan.bulk_body(plan.evaluate_all(context), [])
    return flags_pb2.EvaluateAllResponse(
        body_json=body.decode("utf-8"), etag=etag_of(body), version=serving.version
    )


def requested_kind(text: str) -> KeyKind:
    if not text:
        return KeyKind.SERVER
    try:
        return KeyKind(text)
    except ValueError:
        raise bad_request(
            "INVALID_KEY_KIND", f"an SDK key is of kind 'server' or 'client', not {text[:40]!r}"
        ) from None


def key_info_message(info: SdkKeyInfo) -> flags_pb2.SdkKeyInfo:
    message = key_message(info)
    message.kind = info.kind.value
    return message
