"""Topic settings in ``raftlog.v1`` admin requests: reading them from
``CreateTopicRequest`` and ``AlterTopicConfigRequest``, and showing them in a
``TopicDescription``.

Invariants:

- One rule: a config is valid exactly when ``model.check_topic_config``
  says so, the function the state applies again to the command; the admin
  service calls it before proposing (and before forwarding, on everything
  the request alone decides), so a refused request changed nothing.
- An alter names what changes: fields set in the request replace the
  current value, names in ``reset`` go back to their defaults (unset for
  the optional ones), everything else is kept as the controller has it
  when the change is proposed (the command then applies only if nothing
  changed the settings in between: ``config_revision``).
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import grpc

from cluster.controller import Topic, TopicConfig
from cluster.controller.model import check_topic_config, shown
from cluster.controller.results import Rejected
from cluster.frontend.grpc_errors import ServiceError
from raftlog.v1 import admin_pb2
from raftlog.v1.reasons import Reason

__all__ = ["SETTINGS", "altered_config", "check_alter_request", "config_from_create", "describe_settings"]

SETTINGS: tuple[str, ...] = tuple(f.name for f in fields(TopicConfig))
"""The names a request may set or reset, as the API spells them."""


def _invalid(rejected: Rejected) -> ServiceError:
    # Every settings rule is about the value itself: INVALID_ARGUMENT.
    return ServiceError(
        grpc.StatusCode.INVALID_ARGUMENT, Reason(rejected.reason), rejected.message + "; nothing was changed"
    )


def _set_fields(
    request: admin_pb2.CreateTopicRequest | admin_pb2.AlterTopicConfigRequest,
) -> dict[str, Any]:
    return {name: getattr(request, name) for name in SETTINGS if request.HasField(name)}


def config_from_create(request: admin_pb2.CreateTopicRequest) -> TopicConfig:
    """The settings a new topic gets (the defaults where the request sets
    none). Raises ``ServiceError`` INVALID_ARGUMENT for a bad value."""
    config = replace(TopicConfig(), **_set_fields(request))
    if rejected := check_topic_config(config):
        raise _invalid(rejected)
    return config


def check_alter_request(request: admin_pb2.AlterTopicConfigRequest) -> None:
    """What the request alone decides, before it goes anywhere: known
    names in ``reset``, none both set and reset, something to change, and
    each value valid on its own (checked against the defaults; the merged
    config is checked again on the controller leader)."""
    changes = _set_fields(request)
    for name in request.reset:
        if name not in SETTINGS:
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT,
                Reason.INVALID_TOPIC_CONFIG,
                f"cannot reset {shown(name)}: the settings are {', '.join(SETTINGS)}",
            )
        if name in changes:
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT,
                Reason.INVALID_TOPIC_CONFIG,
                f"{name} is both set and reset: do one",
            )
    if not changes and not request.reset:
        raise ServiceError(
            grpc.StatusCode.INVALID_ARGUMENT,
            Reason.INVALID_TOPIC_CONFIG,
            f"nothing to change: set or reset at least one of {', '.join(SETTINGS)}",
        )
    # Each value alone (a lag may only be judged against the other lag once
    # merged): the defaults with just this one change must be valid.
    for name, value in changes.items():
        if rejected := check_topic_config(replace(TopicConfig(), **{name: value})):
            raise _invalid(rejected)


def altered_config(current: TopicConfig, request: admin_pb2.AlterTopicConfigRequest) -> TopicConfig:
    """``current`` with the request's changes. Raises ``ServiceError``
    INVALID_ARGUMENT when the result is not a valid config (e.g. a
    ``max_compaction_lag_ms`` below the topic's ``min_compaction_lag_ms``)."""
    defaults = TopicConfig()
    resets: dict[str, Any] = {name: getattr(defaults, name) for name in request.reset}
    config = replace(current, **resets, **_set_fields(request))
    if rejected := check_topic_config(config):
        raise _invalid(rejected)
    return config


def describe_settings(described: admin_pb2.TopicDescription, topic: Topic) -> None:
    """Fill ``described``'s settings from ``topic``."""
    if topic.retention_ms is not None:
        described.retention_ms = topic.retention_ms
    if topic.retention_bytes is not None:
        described.retention_bytes = topic.retention_bytes
    described.cleanup_policy = topic.cleanup_policy
    described.min_compaction_lag_ms = topic.min_compaction_lag_ms
    described.delete_retention_ms = topic.delete_retention_ms
    if topic.max_compaction_lag_ms is not None:
        described.max_compaction_lag_ms = topic.max_compaction_lag_ms
    described.config_revision = topic.config_revision
