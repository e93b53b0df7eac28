"""``FlagAdminService.Evaluate``: one flag resolved as the flagd protocols would.

The environment's serving ``FlagdEvaluator`` (``LiveFlags.serving``) resolves
the flag as the type its variants have; the answer carries what an OpenFeature
provider would see (value, variant, reason, error code and message, metadata),
as JSON so one message fits every type.

Invariants: errors of the evaluation itself (an unknown flag, a targeting rule
that fails) are answers with ``reason`` ERROR and flagd's error code, never a
failed call; the caller's default is a neutral value of the flag's type.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode, OpenFeatureError
from openfeature.flag_evaluation import FlagResolutionDetails

from flags.evaluator import FlagdEvaluator
from flags.live import LiveFlags, Scope
from flags.model import VariantType
from raftlog.flags.v1 import flags_pb2

__all__ = ["evaluate"]

Resolver = Callable[[FlagdEvaluator, str, EvaluationContext], FlagResolutionDetails[Any]]

_RESOLVERS: Mapping[VariantType, Resolver] = {
    VariantType.BOOLEAN: lambda e, key, ctx: e.resolve_boolean_value(key, False, ctx),
    VariantType.STRING: lambda e, key, ctx: e.resolve_string_value(key, "", ctx),
    VariantType.INTEGER: lambda e, key, ctx: e.resolve_integer_value(key, 0, ctx),
    VariantType.FLOAT: lambda e, key, ctx: e.resolve_float_value(key, 0.0, ctx),
    VariantType.OBJECT: lambda e, key, ctx: e.resolve_object_value(key, {}, ctx),
}


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _code(code: object) -> str:
    return str(getattr(code, "value", code)) if code else ""


def evaluate(
    live: LiveFlags, tenant: str, env: str, key: str, context: Mapping[str, Any]
) -> flags_pb2.EvaluateResponse:
    """``key`` in ``env`` of ``tenant`` (which exists) for ``context``."""
    serving = live.serving(Scope(tenant, env))
    view = live.store.flag(tenant, env, key)
    version = 0 if serving is None else serving.version
    if serving is None or view is None:
        return flags_pb2.EvaluateResponse(
            value_json="null",
            reason="ERROR",
            error_code=ErrorCode.FLAG_NOT_FOUND.value,
            error_message=f"flag {key!r} not found in environment {env!r}",
            metadata_json="{}",
            version=version,
        )
    attributes = {k: v for k, v in context.items() if k != "targetingKey"}
    targeting_key = context.get("targetingKey")
    ctx = EvaluationContext(targeting_key if isinstance(targeting_key, str) else None, attributes)
    try:
        details = _RESOLVERS[view.flag.variant_type](serving.evaluator, key, ctx)
    except OpenFeatureError as error:
        return flags_pb2.EvaluateResponse(
            value_json="null",
            reason="ERROR",
            error_code=_code(error.error_code),
            error_message=error.error_message or "",
            metadata_json="{}",
            version=version,
        )
    reason = details.reason
    return flags_pb2.EvaluateResponse(
        value_json=_json(details.value),
        variant=details.variant or "",
        reason=str(getattr(reason, "value", reason) or ""),
        error_code=_code(details.error_code),
        error_message=details.error_message or "",
        metadata_json=_json(dict(details.flag_metadata or {})),
        version=version,
    )
