"""A node's log lines (cluster/telemetry/logs.py): JSON lines that parse, one
object a line, with the node id and, when the context knows them, the
tenant (the front door's caller), the Raft group and the current span's
trace id; text lines as before plus the node id; and no API key in either,
whichever way it reached the record — with a negative control showing that
the redaction filter is what keeps it out."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider

from cluster.controller import Principal
from cluster.controller.api_keys import issue_api_key
from cluster.frontend.front_door import Caller, acting_as
from cluster.telemetry.logs import (
    REPLICA_TASK_PREFIX,
    RedactSecrets,
    configure_logging,
    group_context,
    log_group,
)

pytestmark = pytest.mark.timeout(30)

REPO = Path(__file__).resolve().parents[2]
log = logging.getLogger("cluster.test_logs")

Configure = Callable[..., io.StringIO]


@pytest.fixture
def logged() -> Iterator[Configure]:
    """``configure_logging`` into a buffer; the root logger is put back after."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level

    def configure(fmt: str, node_id: int = 3) -> io.StringIO:
        out = io.StringIO()
        configure_logging(fmt, static_fields={"node_id": node_id}, stream=out)
        return out

    try:
        yield configure
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)


def _objects(out: io.StringIO) -> list[dict[str, object]]:
    lines = out.getvalue().splitlines()
    assert lines, "nothing was logged"
    return [json.loads(line) for line in lines]  # one object per line, or this raises


def _caller(tenant: str) -> Caller:
    return Caller(Principal("0123456789abcdef", tenant), tenant)


def test_json_lines_parse_with_the_fields(logged: Configure) -> None:
    out = logged("json")
    log.info("plain %d", 1)
    log.warning("with extras", extra={"topic": "orders"})
    try:
        raise ValueError("broken\non two lines")
    except ValueError:
        log.exception("failed")
    plain, extras, failed = _objects(out)
    for obj in (plain, extras, failed):
        assert list(obj)[:5] == ["ts", "level", "logger", "message", "node_id"]
        assert obj["logger"] == "cluster.test_logs" and obj["node_id"] == 3
        ts = str(obj["ts"])
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", ts)
        assert abs((datetime.now(UTC) - datetime.fromisoformat(ts)).total_seconds()) < 60
        # No caller, no span, no group here: the fields are absent, not null.
        assert not {"tenant", "group", "trace_id", "span_id"} & set(obj)
    assert (plain["level"], plain["message"]) == ("INFO", "plain 1")
    assert (extras["level"], extras["topic"]) == ("WARNING", "orders")
    assert failed["level"] == "ERROR" and failed["message"] == "failed"
    exc = failed["exc_info"]
    assert isinstance(exc, str) and exc.startswith("Traceback") and "ValueError: broken\non two lines" in exc


def test_text_keeps_its_look_plus_the_node_id(logged: Configure) -> None:
    out = logged("text", node_id=2)
    log.warning("hello %s", "there")
    with acting_as(_caller("acme")):
        log.warning("in a call", extra={"group": 7})
    first, second = out.getvalue().splitlines()
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
    assert re.fullmatch(rf"{stamp} WARNING node_id=2 cluster\.test_logs: hello there", first)
    assert re.fullmatch(
        rf"{stamp} WARNING node_id=2 cluster\.test_logs: in a call \[tenant=acme group=7\]", second
    )


def test_tenant_is_the_front_doors_caller(logged: Configure) -> None:
    out = logged("json")
    log.info("before")
    with acting_as(_caller("acme")):
        log.info("inside")
        log.info("told", extra={"tenant": "other"})  # extra= wins over the context
    log.info("after")
    before, inside, told, after = _objects(out)
    assert "tenant" not in before and "tenant" not in after
    assert inside["tenant"] == "acme" and told["tenant"] == "other"


def test_trace_id_is_the_current_spans(logged: Configure) -> None:
    out = logged("json")
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("produce") as span:
        log.info("traced")
    log.info("untraced")
    traced, untraced = _objects(out)
    context = span.get_span_context()
    assert traced["trace_id"] == f"{context.trace_id:032x}" and traced["span_id"] == f"{context.span_id:016x}"
    assert "trace_id" not in untraced and "span_id" not in untraced


async def test_group_from_extra_context_var_or_replica_task_name(logged: Configure) -> None:
    out = logged("json")

    async def in_task() -> None:
        log.info("from a task")

    log.info("given", extra={"group": 5})
    await asyncio.create_task(in_task(), context=group_context(11))
    await asyncio.create_task(in_task(), name=f"{REPLICA_TASK_PREFIX}42")
    await asyncio.create_task(in_task(), name="raftlog-reconciler")
    token = log_group.set(9)
    try:
        log.info("set here")
    finally:
        log_group.reset(token)
    groups = [obj.get("group") for obj in _objects(out)]
    assert groups == [5, 11, 42, None, 9]


def test_replica_owner_tasks_still_carry_the_name_the_filter_reads() -> None:
    # partitions may not import cluster, so the task name is the seam.
    source = (REPO / "partitions" / "replica_host.py").read_text()
    assert f'name=f"{REPLICA_TASK_PREFIX}{{group}}"' in source


def _leaky_lines(key: str) -> None:
    """Every way a key has reached a log call somewhere."""
    log.warning("inline %s", f"key={key}")
    log.warning("caller sent authorization: Bearer %s", key)
    log.warning("metadata %r", (("authorization", f"Bearer {key}"), ("raftlog-tenant", "acme")))
    log.warning(f"formatted in: {key}")  # the point: a message built before logging
    log.warning("as an extra", extra={"header": f"bearer {key}"})
    log.warning({"event": "dict message", "key": key})
    try:
        raise PermissionError(f"refused {key}")
    except PermissionError:
        log.exception("refused")
    log.warning("with the stack %s", key, stack_info=True)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_no_api_key_or_bearer_token_is_ever_written(logged: Configure, fmt: str) -> None:
    out = logged(fmt)
    issued = issue_api_key("acme")
    key = issued.clear_text
    _leaky_lines(key)
    with acting_as(_caller("acme")):
        log.warning("Bearer someopaquetoken123 in a call")
    text = out.getvalue()
    secret = key.split("_", 2)[2]
    assert key not in text and secret not in text
    assert "someopaquetoken123" not in text
    # The public key id stays: a line still says which key was involved.
    assert f"rlk_{issued.key_id}_[redacted]" in text
    assert text.count("[redacted]") >= 8  # a text line does not show the extra= field
    if fmt == "json":
        objects = _objects(out)
        assert len(objects) == 9 and objects[4]["header"] == "bearer [redacted]"


def test_without_the_redaction_filter_the_key_is_written(logged: Configure) -> None:
    """Negative control: the filter, not luck or the formatter, keeps it out."""
    out = logged("json")
    handler = logging.getLogger().handlers[-1]
    for redaction in [f for f in handler.filters if isinstance(f, RedactSecrets)]:
        handler.removeFilter(redaction)
    key = issue_api_key("acme").clear_text
    _leaky_lines(key)
    assert out.getvalue().count(key) >= 8


def test_a_message_that_does_not_format_leaks_nothing_in_loggings_report(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # A handler of its own: pytest's capture handler would raise on the bad record.
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.addFilter(RedactSecrets())
    key = issue_api_key("acme").clear_text
    record = logging.LogRecord(
        "cluster.test_logs", logging.WARNING, __file__, 1, "one %s", (key, "two"), None
    )
    handler.handle(record)  # logging reports the failure on stderr, with msg and args
    report = capsys.readouterr().err
    assert "--- Logging error ---" in report and "Arguments:" in report
    assert key not in report and key not in out.getvalue()


def test_a_bad_format_names_the_choices_and_changes_nothing(logged: Configure) -> None:
    root = logging.getLogger()
    handlers = list(root.handlers)
    with pytest.raises(ValueError, match=r"log format 'xml': expected one of text, json"):
        configure_logging("xml")
    assert root.handlers == handlers


def test_configuring_again_replaces_the_handler(logged: Configure) -> None:
    first = logged("text")
    second = logged("json")
    log.warning("once")
    assert first.getvalue() == "" and len(_objects(second)) == 1


def test_importing_costs_no_third_party_import() -> None:
    code = (
        "import sys, cluster.telemetry.logs\n"
        "heavy = [m for m in ('pythonjsonlogger', 'opentelemetry', 'grpc', 'cluster.frontend') if m in sys.modules]\n"
        "print(heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


async def test_objects_holding_a_clear_key_leave_it_out_of_their_repr() -> None:
    # A repr reaches logs through %r, f-strings and error reports.
    from cluster.controller_duties import ControllerDuties
    from flags.cli import FlagsConnection
    from flags.server_options import ServeOptions

    key = issue_api_key(None).clear_text
    connection = FlagsConnection("127.0.0.1:1", key, "acme")
    try:
        holders = [
            ServeOptions(("127.0.0.1:7001",), key),
            ControllerDuties(1, None, None, None, bootstrap_key=key),  # type: ignore[arg-type]
            connection,
        ]
        for holder in holders:
            assert key not in repr(holder), type(holder).__name__
    finally:
        await connection.channel.close()


# --- one redaction for every process and every key kind ----------------------------------


def _every_key_kind() -> dict[str, str]:
    """A clear key of every kind the project's own generators make."""
    from flags.sdk_keys import KeyKind, issue_sdk_key
    from harness.local_cluster import new_operator_key

    return {
        "tenant api key": issue_api_key("acme").clear_text,
        "operator api key": issue_api_key(None).clear_text,
        "harness operator key": new_operator_key(),
        "sdk server key": issue_sdk_key("prod", "web", "ops", 1, KeyKind.SERVER).clear_key,
        "sdk client key": issue_sdk_key("prod", "app", "ops", 1, KeyKind.CLIENT).clear_key,
    }


def _configure_process(process: str, fmt: str) -> io.StringIO:
    """The node's or the flag server's own ``configure_logging`` into a buffer."""
    out = io.StringIO()
    if process == "node":
        configure_logging(fmt, static_fields={"node_id": 1}, stream=out)
    else:
        from flags.telemetry_logs import configure_logging as configure_flag_server_logging

        configure_flag_server_logging(fmt, level=logging.INFO, stream=out)
    return out


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("process", ["node", "flag-server"])
def test_every_key_kind_is_redacted_in_every_process_and_every_place(
    logged: Configure, process: str, fmt: str
) -> None:
    keys = _every_key_kind()
    assert {key[:4] for key in keys.values()} == {"rlk_", "rlf_", "rlc_"}
    out = _configure_process(process, fmt)
    for kind, key in keys.items():
        log.warning(f"in the message: {kind} {key}")
        log.warning("in the args: %s %r", kind, {"key": key})
        log.warning(
            "in extras",
            extra={"auth": {"kind": kind, "nested": {"key": key}}, "tried": ["first", key, ("Bearer", key)]},
        )
    text = out.getvalue()
    for kind, key in keys.items():
        secret = key.split("_", 2)[2]
        assert key not in text and secret not in text, (process, fmt, kind)
        assert f"{key[: 4 + 16 + 1]}[redacted]" in text, (process, fmt, kind)  # prefix and public id stay
    if fmt == "json":
        extras = [line for line in _objects(out) if line["message"] == "in extras"]
        assert len(extras) == len(keys)
        for line, key in zip(extras, keys.values(), strict=True):
            kept = f"{key[: 4 + 16 + 1]}[redacted]"
            # Redacted in place: the extra keeps its shape.
            assert line["auth"]["nested"] == {"key": kept}  # type: ignore[index]
            assert line["tried"] == ["first", kept, ["Bearer", kept]]


@pytest.mark.parametrize("process", ["node", "flag-server"])
def test_a_bearer_token_inside_a_json_string_leaves_the_line_whole(logged: Configure, process: str) -> None:
    # A header quoted in a message: JSON escapes its quotes; redacting the
    # formatted line instead of the record would cut the escape.
    out = _configure_process(process, "json")
    log.warning('sent Authorization: "Bearer opaque.token-123"')
    (line,) = [o for o in _objects(out) if "Authorization" in str(o["message"])]
    assert line["message"] == 'sent Authorization: "Bearer [redacted]"'


def test_both_log_modules_use_the_one_contract_redaction() -> None:
    from cluster.telemetry import logs
    from flags import telemetry_logs
    from raftlog.v1 import secret_redaction

    assert logs.redact is telemetry_logs.redact is secret_redaction.redact
    assert logs.REDACTED == telemetry_logs.REDACTED == secret_redaction.REDACTED


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("rlf_0123456789abcdef_SECRET", "rlf_0123456789abcdef_[redacted]"),
        ("rlc_0123456789abcdef_SECRET", "rlc_0123456789abcdef_[redacted]"),
        ("rlk_0123456789abcdef_SECRET", "rlk_0123456789abcdef_[redacted]"),
        ("rlk_noid", "rlk_[redacted]"),
        ("bEaReR%20tok", "bEaReR [redacted]"),
        ("no key: rlk_…", "no key: rlk_…"),
        (("Bearer x", 7, None), ("Bearer [redacted]", 7, None)),
        (
            {"rlf_0123456789abcdef_K": [b"rlc_0123456789abcdef_K"]},
            {"rlf_0123456789abcdef_[redacted]": ["b'rlc_0123456789abcdef_[redacted]'"]},
        ),
        (b"plain bytes", b"plain bytes"),
    ],
)
def test_redact_value_walks_every_shape(value: object, expected: object) -> None:
    from raftlog.v1.secret_redaction import redact_value

    assert redact_value(value) == expected
    assert redact_value(redact_value(value)) == redact_value(value)  # idempotent


def test_the_contract_modules_are_stdlib_only() -> None:
    import ast

    for name in ("secret_redaction.py", "otel_env.py"):
        tree = ast.parse((REPO / "proto" / "raftlog" / "v1" / name).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                tops = [(node.module or "").split(".")[0]]
            else:
                continue
            assert all(top in sys.stdlib_module_names for top in tops), (name, tops)


async def test_the_metadata_watcher_logs_without_the_starting_calls_context(logged: Configure) -> None:
    """The watcher task a StreamFetch starts outlives the call and serves
    every later waiter: its lines must not carry that call's tenant,
    group or trace id (cluster/frontend/metadata_watch.py)."""
    from cluster.frontend.metadata_watch import MetadataWatch
    from tests.cluster.test_key_expiry_revocation import Keys

    out = logged("json")
    keys = Keys()
    watch = MetadataWatch(keys)
    woken = asyncio.Event()

    def wake() -> None:  # runs in the watcher's task
        log.warning("woken")
        woken.set()

    tracer = TracerProvider().get_tracer("test")
    token = log_group.set(7)
    try:
        with acting_as(_caller("acme")), tracer.start_as_current_span("StreamFetch"):
            log.warning("in the call")
            with watch.waking(wake):  # the first waiter starts the watcher, here
                keys.add("another", keys.keys["rlk_live"])  # any applied change
                await asyncio.wait_for(woken.wait(), 5)
    finally:
        log_group.reset(token)
    in_call, in_watcher = _objects(out)
    assert {"tenant", "group", "trace_id"} <= in_call.keys()  # the context was there to inherit
    assert not {"tenant", "group", "trace_id", "span_id"} & in_watcher.keys(), in_watcher
