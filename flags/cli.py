"""``raftlog flags ...``: the flag server's command line.

``cluster/cli.py`` (the ``raftlog`` program) builds the ``flags`` subcommand
with ``add_commands`` and runs the chosen command's ``sync`` function with
its parsed arguments: ``resolved_api_key`` (``--api-key-file``,
``--api-key`` or ``RAFTLOG_API_KEY``, resolved there once) and ``tenant``
(``--tenant``) come from it. Commands:

- ``flags serve [options]``: run a flag server (flags/server.py; ``--metrics-port``,
  ``--log-format``: flags/telemetry.py);
- ``flags env create ENV``, ``env list``, ``env delete ENV``;
- ``flags import ENV FILE``: replace the environment's flag set with a
  flagd flags.json (``-``: stdin), as one change;
- ``flags set ENV KEY --file F``: create or replace one flag (its flagd
  definition as JSON);
- ``flags delete ENV KEY``, ``flags enable|disable ENV KEY``;
- ``flags get ENV KEY`` (the definition on stdout, pretty JSON, so it can be
  edited and given back to ``set``), ``flags list ENV``;
- ``flags history ENV [KEY] [--diff] [--limit N]``: newest first;
- ``flags rollback ENV KEY --to VERSION``;
- ``flags eval ENV KEY [--context JSON]``: one line of JSON on stdout;
- ``flags snapshot ENV``: the environment's flags.json (flagd format) on
  stdout, for the flagd provider's file mode and app bundles;
- ``flags evaluate-all ENV [--context JSON]``: the OFREP bulk response for
  that context on stdout (a bootstrap for apps that start offline);
- ``flags key create ENV [--name N] [--kind server|client]`` (prints the new
  SDK key, once: ``rlf_`` server keys for flagd providers and OFREP, ``rlc_``
  client keys, public, for mobile and web apps on OFREP only),
  ``key list [ENV] [--all]``, ``key revoke ID``.

Where and who: ``RAFTLOG_FLAGS`` (or ``--server``, default
``127.0.0.1:8013``) is the flag server. The key is a cluster API key: a
tenant key acts in its tenant; an operator key acts in ``--tenant`` /
``RAFTLOG_TENANT``, ``default`` when unset, as everywhere in ``raftlog``
(the header ``raftlog-tenant`` is sent when a tenant is named, and once
more with ``default`` when the server says an operator key needs one).

Optimistic concurrency: ``set``, ``delete``, ``enable``, ``disable`` and
``rollback`` read the flag's version first and write expecting it (``set``
of a missing flag expects 0: create only), so a change made by someone else
in between is refused, not overwritten: VERSION_CONFLICT, exit 1, nothing
written. ``--expected-version N`` writes expecting N instead of reading.

Exit status (as ``raftlog``): 0 on success, 1 when the flag server answered
with an error or could not be reached (stderr: ``raftlog: REASON:
message``), 2 for a usage error (an unreadable file, a context that is not
a JSON object).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from client.rpc_status import call_value, error_info
from raftlog.flags.v1 import flags_pb2, flags_pb2_grpc
from raftlog.v1.headers import AUTHORIZATION, BEARER_PREFIX, TENANT

DEFAULT_FLAGS_SERVER = "127.0.0.1:8013"
FLAGS_SERVER_ENV = "RAFTLOG_FLAGS"
DEFAULT_TENANT = "default"
CALL_TIMEOUT_S = 15.0
PAGE_SIZE = 1000


class FlagsCallError(Exception):
    """The flag server refused a call or could not be reached (exit 1)."""

    def __init__(self, reason: str, message: str, metadata: dict[str, str] | None = None) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message
        self.metadata = metadata or {}


class FlagsUsageError(Exception):
    """Bad input found before anything was sent (exit 2)."""


@dataclass
class FlagsConnection:
    """One channel to the flag server, with the caller's key and tenant."""

    address: str
    api_key: str | None = field(repr=False)  # a clear API key: never in a repr or a log line
    tenant: str | None
    channel: grpc.aio.Channel = field(init=False)
    stub: flags_pb2_grpc.FlagAdminServiceStub = field(init=False)

    def __post_init__(self) -> None:
        self.channel = grpc.aio.insecure_channel(self.address)
        self.stub = flags_pb2_grpc.FlagAdminServiceStub(self.channel)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        found: list[tuple[str, str]] = []
        if self.api_key:
            found.append((AUTHORIZATION, BEARER_PREFIX + self.api_key))
        if self.tenant:
            found.append((TENANT, self.tenant))
        return tuple(found)

    async def call(self, method: str, request: Any) -> Any:
        """``FlagAdminService.<method>(request)``; raises ``FlagsCallError``."""
        try:
            return await self._call_once(method, request)
        except FlagsCallError as error:
            if error.reason != "TENANT_REQUIRED" or self.tenant is not None:
                raise
        # An operator key without a tenant: act in "default", like the rest
        # of raftlog (the cluster's own API does the same).
        self.tenant = DEFAULT_TENANT
        return await self._call_once(method, request)

    async def _call_once(self, method: str, request: Any) -> Any:
        try:
            return await getattr(self.stub, method)(request, metadata=self.metadata(), timeout=CALL_TIMEOUT_S)
        except grpc.RpcError as error:
            raise _call_error(error, self.address) from None

    async def close(self) -> None:
        await self.channel.close()


def _call_error(error: grpc.RpcError, address: str) -> FlagsCallError:
    """A failed call as reason, message and metadata: the ErrorInfo's when
    the server sent one, else the status code's name and details."""
    code = call_value(error, "code")
    details = str(call_value(error, "details") or "")
    info = error_info(call_value(error, "trailing_metadata"))
    if info is not None and info.reason:
        return FlagsCallError(info.reason, info.message or details, dict(info.metadata))
    name = code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        details = (
            f"no answer from the flag server at {address} ({details}); is it running? "
            f"Check {FLAGS_SERVER_ENV} or --server"
        )
    return FlagsCallError(name, details)


def _hint(error: FlagsCallError) -> str:
    if error.reason in ("MISSING_API_KEY", "INVALID_API_KEY"):
        return (
            "; set RAFTLOG_API_KEY (a tenant key, or the operator key with RAFTLOG_TENANT) or --api-key-file"
        )
    if error.reason == "VERSION_CONFLICT":
        return "; someone changed it meanwhile: look again (raftlog flags get/history) and retry"
    if error.reason == "NOT_READY":
        return "; the flag server is still reading the log: retry in a moment"
    return ""


# --- commands ------------------------------------------------------------------------

Command = Callable[[FlagsConnection, argparse.Namespace], Awaitable[int]]


def _say(text: str) -> None:
    print(text, file=sys.stderr)


async def _env_create(conn: FlagsConnection, args: argparse.Namespace) -> int:
    answer = await conn.call("CreateEnvironment", flags_pb2.CreateEnvironmentRequest(name=args.env))
    _say(f"created environment {answer.environment.name} (version {answer.version})")
    return 0


async def _env_list(conn: FlagsConnection, args: argparse.Namespace) -> int:
    async for env in _pages(conn, "ListEnvironments", flags_pb2.ListEnvironmentsRequest(), "environments"):
        print(f"{env.name}\t{env.flags} flags\tversion {env.version}")
    return 0


async def _env_delete(conn: FlagsConnection, args: argparse.Namespace) -> int:
    answer = await conn.call("DeleteEnvironment", flags_pb2.DeleteEnvironmentRequest(name=args.env))
    _say(
        f"deleted environment {args.env} and its flags (version {answer.version}); its history stays in the log"
    )
    return 0


async def _import(conn: FlagsConnection, args: argparse.Namespace) -> int:
    text = _read_json_file(args.file, "a flagd flags.json document")
    answer = await conn.call(
        "ImportFlags", flags_pb2.ImportFlagsRequest(environment=args.env, flags_json=text)
    )
    _say(f"imported {answer.flags} flags into {args.env} (version {answer.version})")
    return 0


async def _current_version(conn: FlagsConnection, env: str, key: str, *, missing_ok: bool) -> int:
    """The flag's version now; 0 when it does not exist and ``missing_ok``."""
    try:
        answer = await conn.call("GetFlag", flags_pb2.GetFlagRequest(environment=env, flag=key))
    except FlagsCallError as error:
        if missing_ok and error.reason == "UNKNOWN_FLAG":
            return 0
        raise
    return int(answer.flag.version)


async def _expected(conn: FlagsConnection, args: argparse.Namespace, *, missing_ok: bool) -> int:
    if args.expected_version is not None:
        return int(args.expected_version)
    return await _current_version(conn, args.env, args.key, missing_ok=missing_ok)


async def _set(conn: FlagsConnection, args: argparse.Namespace) -> int:
    text = _read_json_file(args.file, "one flag's flagd definition")
    expected = await _expected(conn, args, missing_ok=True)
    answer = await conn.call(
        "PutFlag",
        flags_pb2.PutFlagRequest(
            environment=args.env, flag=args.key, definition_json=text, expected_version=expected
        ),
    )
    _say(
        f"{'created' if answer.created else 'updated'} flag {args.key} in {args.env} (version {answer.version})"
    )
    return 0


async def _delete(conn: FlagsConnection, args: argparse.Namespace) -> int:
    expected = await _expected(conn, args, missing_ok=False)
    answer = await conn.call(
        "DeleteFlag",
        flags_pb2.DeleteFlagRequest(environment=args.env, flag=args.key, expected_version=expected),
    )
    _say(f"deleted flag {args.key} from {args.env} (version {answer.version})")
    return 0


async def _set_state(conn: FlagsConnection, args: argparse.Namespace) -> int:
    enabled = bool(args.enabled)
    expected = await _expected(conn, args, missing_ok=False)
    answer = await conn.call(
        "SetFlagState",
        flags_pb2.SetFlagStateRequest(
            environment=args.env, flag=args.key, enabled=enabled, expected_version=expected
        ),
    )
    state = "enabled" if enabled else "disabled"
    if answer.changed:
        _say(f"{state} flag {args.key} in {args.env} (version {answer.version})")
    else:
        _say(f"flag {args.key} in {args.env} was already {state} (version {answer.version}); nothing written")
    return 0


async def _get(conn: FlagsConnection, args: argparse.Namespace) -> int:
    answer = await conn.call("GetFlag", flags_pb2.GetFlagRequest(environment=args.env, flag=args.key))
    flag = answer.flag
    print(json.dumps(json.loads(flag.definition_json), indent=2, sort_keys=True))
    state = "enabled" if flag.enabled else "disabled"
    _say(f"flag {flag.flag} in {args.env}: version {flag.version}, {state}, {flag.variant_type}")
    return 0


async def _list(conn: FlagsConnection, args: argparse.Namespace) -> int:
    request = flags_pb2.ListFlagsRequest(environment=args.env)
    async for flag in _pages(conn, "ListFlags", request, "flags"):
        state = "enabled" if flag.enabled else "disabled"
        print(f"{flag.flag}\t{state}\t{flag.variant_type}\tversion {flag.version}")
    return 0


async def _history(conn: FlagsConnection, args: argparse.Namespace) -> int:
    request = flags_pb2.GetHistoryRequest(environment=args.env, flag=args.key or "")
    shown = 0
    async for entry in _pages(conn, "GetHistory", request, "entries"):
        if args.limit is not None and shown >= args.limit:
            break
        what = entry.kind + (f" {entry.flag}" if entry.flag else "")
        if entry.kind == "rollback":
            what += f" to version {entry.rollback_to}"
        outcome = "" if entry.outcome in ("", "accepted") else f"\t{entry.outcome.upper()}"
        print(f"version {entry.version}\t{_when(entry.when_ms)}\t{entry.who}\t{what}{outcome}")
        if args.diff and entry.diff_text:
            for line in entry.diff_text.rstrip("\n").splitlines():
                print(f"    {line}")
        shown += 1
    return 0


async def _rollback(conn: FlagsConnection, args: argparse.Namespace) -> int:
    expected = await _expected(conn, args, missing_ok=True)
    answer = await conn.call(
        "Rollback",
        flags_pb2.RollbackRequest(
            environment=args.env, flag=args.key, to_version=args.to, expected_version=expected
        ),
    )
    _say(f"rolled flag {args.key} in {args.env} back to version {args.to} (now version {answer.version})")
    return 0


async def _eval(conn: FlagsConnection, args: argparse.Namespace) -> int:
    context = _context_json(args)
    answer = await conn.call(
        "Evaluate", flags_pb2.EvaluateRequest(environment=args.env, flag=args.key, context_json=context)
    )
    result: dict[str, Any] = {
        "value": json.loads(answer.value_json or "null"),
        "variant": answer.variant or None,
        "reason": answer.reason,
    }
    if answer.error_code:
        result["errorCode"] = answer.error_code
        result["errorMessage"] = answer.error_message
    if answer.metadata_json and answer.metadata_json != "{}":
        result["metadata"] = json.loads(answer.metadata_json)
    print(json.dumps(result, sort_keys=True))
    if answer.error_code:
        _say(f"raftlog: {answer.error_code}: {answer.error_message}")
        return 1
    return 0


def _context_json(args: argparse.Namespace) -> str:
    context = args.context or "{}"
    try:
        parsed = json.loads(context)
    except ValueError as error:
        raise FlagsUsageError(f"--context is not JSON: {error}") from None
    if not isinstance(parsed, dict):
        raise FlagsUsageError('--context must be a JSON object, e.g. {"targetingKey": "user-1"}')
    return context


async def _snapshot(conn: FlagsConnection, args: argparse.Namespace) -> int:
    answer = await conn.call("GetSnapshot", flags_pb2.GetSnapshotRequest(environment=args.env))
    print(answer.flags_json)
    return 0


async def _evaluate_all(conn: FlagsConnection, args: argparse.Namespace) -> int:
    request = flags_pb2.EvaluateAllRequest(environment=args.env, context_json=_context_json(args))
    answer = await conn.call("EvaluateAll", request)
    print(answer.body_json)
    return 0


async def _key_create(conn: FlagsConnection, args: argparse.Namespace) -> int:
    request = flags_pb2.CreateSdkKeyRequest(environment=args.env, name=args.name or "", kind=args.kind)
    answer = await conn.call("CreateSdkKey", request)
    if args.kind == "client":
        what = "client key (public: for mobile and web apps, OFREP only)"
    else:
        what = "SDK key (shown once, keep it safe)"
    _say(f"created SDK key {answer.key.key_id} for environment {answer.key.environment}; the {what}:")
    print(answer.clear_key)
    return 0


async def _key_list(conn: FlagsConnection, args: argparse.Namespace) -> int:
    request = flags_pb2.ListSdkKeysRequest(environment=args.env or "", include_revoked=args.all)
    async for key in _pages(conn, "ListSdkKeys", request, "keys"):
        state = "revoked" if key.revoked else "active"
        print(
            f"{key.key_id}\t{key.environment}\t{key.name or '-'}\t{state}\t"
            # The kind last: scripts reading the earlier columns keep working.
            f"created {_when(key.created_ms)} by {key.created_by}\t{key.kind or 'server'}"
        )
    return 0


async def _key_revoke(conn: FlagsConnection, args: argparse.Namespace) -> int:
    answer = await conn.call("RevokeSdkKey", flags_pb2.RevokeSdkKeyRequest(key_id=args.key_id))
    _say(f"revoked SDK key {answer.key.key_id} (environment {answer.key.environment})")
    return 0


# --- helpers -------------------------------------------------------------------------


async def _pages(conn: FlagsConnection, method: str, request: Any, items: str) -> AsyncIterator[Any]:
    """Every item of a paginated listing, page after page."""
    request.page_size = PAGE_SIZE
    while True:
        answer = await conn.call(method, request)
        for item in getattr(answer, items):
            yield item
        if not answer.next_page_token:
            return
        request.page_token = answer.next_page_token


def _read_json_file(path: str, what: str) -> str:
    """The text of ``path`` (``-``: stdin), checked to be JSON here, so a
    typo is reported with its line before anything is sent."""
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except OSError as error:
        raise FlagsUsageError(f"{path}: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise FlagsUsageError(f"{path} is not UTF-8 text; it should hold {what}") from None
    try:
        json.loads(text)
    except ValueError as error:
        raise FlagsUsageError(f"{path} is not JSON ({error}); it should hold {what}") from None
    return text


def _when(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ms / 1000)) if ms else "-"


def flags_server_address(args: argparse.Namespace) -> str:
    return str(getattr(args, "server", None) or os.environ.get(FLAGS_SERVER_ENV) or DEFAULT_FLAGS_SERVER)


def run_command(args: argparse.Namespace) -> int:
    """Run the admin command ``args.flags_command``; the exit status."""
    return run_connected(args, args.flags_command, FlagsConnection, _hint)


def run_connected(
    args: argparse.Namespace,
    command: Command,
    connection: Callable[[str, str | None, str | None], FlagsConnection],
    hint: Callable[[FlagsCallError], str] = lambda _error: "",
) -> int:
    """Run ``command`` over a ``connection`` to the flag server that
    ``args`` name, as the caller's key and tenant; the exit status (2 for a
    usage error, 1 for a refused call, its reason and message on stderr)."""
    tenant = getattr(args, "tenant", None) or os.environ.get("RAFTLOG_TENANT") or None

    async def run() -> int:
        conn = connection(flags_server_address(args), getattr(args, "resolved_api_key", None), tenant)
        try:
            return await command(conn, args)
        finally:
            await conn.close()

    try:
        return asyncio.run(run())
    except FlagsUsageError as error:
        print(f"raftlog: {error}", file=sys.stderr)
        return 2
    except FlagsCallError as error:
        print(f"raftlog: {error.reason}: {error.message}{hint(error)}", file=sys.stderr)
        return 1


def _serve(args: argparse.Namespace) -> int:
    from flags import server

    return server.serve_main(args, getattr(args, "resolved_api_key", None))


# --- the parser ----------------------------------------------------------------------


def add_commands(parser: argparse.ArgumentParser) -> None:
    """Fill ``parser`` (``raftlog flags``) with the flag commands; each sets
    ``sync`` to the function that runs it."""
    from flags.server_options import add_serve_arguments

    parser.add_argument(
        "--server",
        metavar="HOST:PORT",
        help=f"the flag server (default: ${FLAGS_SERVER_ENV} or {DEFAULT_FLAGS_SERVER})",
    )
    commands = parser.add_subparsers(dest="flags_action", required=True)

    serve = commands.add_parser(
        "serve",
        help="run a flag server (evaluation 8013, management 8014, sync 8015, OFREP 8016; "
        "Prometheus /metrics with --metrics-port)",
    )
    add_serve_arguments(serve, inherit_connection=True)
    serve.set_defaults(sync=_serve)

    def command(
        name: str, function: Command, help_text: str, where: Any = commands
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = where.add_parser(name, help=help_text)
        sub.set_defaults(sync=run_command, flags_command=function)
        return sub

    env = commands.add_parser("env", help="environments").add_subparsers(dest="env_action", required=True)
    command("create", _env_create, "create an environment", env).add_argument("env")
    command("list", _env_list, "list environments", env)
    command("delete", _env_delete, "delete an environment and its flags", env).add_argument("env")

    imported = command("import", _import, "replace an environment's flag set with a flags.json (one change)")
    imported.add_argument("env")
    imported.add_argument("file", help="a flagd flags.json document (-: stdin)")

    put = command("set", _set, "create or replace one flag from its JSON definition")
    _env_and_key(put)
    put.add_argument("--file", required=True, help="one flag's flagd definition as JSON (-: stdin)")
    _expected_version_argument(put)

    delete = command("delete", _delete, "delete a flag")
    _env_and_key(delete)
    _expected_version_argument(delete)
    for action in ("enable", "disable"):
        toggle = command(action, _set_state, f"{action} a flag (the kill switch)")
        _env_and_key(toggle)
        _expected_version_argument(toggle)
        toggle.set_defaults(enabled=action == "enable")

    _env_and_key(command("get", _get, "a flag's definition (JSON on stdout)"))
    command("list", _list, "an environment's flags").add_argument("env")

    history = command("history", _history, "changes, newest first: who, when, what")
    history.add_argument("env")
    history.add_argument("key", nargs="?", help="one flag's changes (default: the whole environment)")
    history.add_argument("--diff", action="store_true", help="show what each change changed")
    history.add_argument("--limit", type=int, help="at most N changes")

    rollback = command("rollback", _rollback, "restore a flag's definition as it was at a version")
    _env_and_key(rollback)
    rollback.add_argument(
        "--to", type=int, required=True, metavar="VERSION", help="a version from its history"
    )
    _expected_version_argument(rollback)

    evaluate = command("eval", _eval, "evaluate a flag as an SDK would (JSON on stdout)")
    _env_and_key(evaluate)
    evaluate.add_argument("--context", help='evaluation context, a JSON object (e.g. {"targetingKey": "u1"})')

    snap = command("snapshot", _snapshot, "the environment's flags.json (flagd format) on stdout")
    snap.add_argument("env")
    bulk = command("evaluate-all", _evaluate_all, "the OFREP bulk response for a context on stdout")
    bulk.add_argument("env")
    bulk.add_argument("--context", help='evaluation context, a JSON object (e.g. {"targetingKey": "u1"})')

    key = commands.add_parser("key", help="SDK keys").add_subparsers(dest="key_action", required=True)
    key_create = command("create", _key_create, "create an SDK key for an environment (printed once)", key)
    key_create.add_argument("env")
    key_create.add_argument("--name", help="what it is for, e.g. ios-app")
    key_create.add_argument(
        "--kind",
        choices=("server", "client"),
        default="server",
        help="server (rlf_, secret: flagd providers and OFREP) or client (rlc_, public: apps, OFREP only)",
    )
    key_list = command("list", _key_list, "list SDK keys", key)
    key_list.add_argument("env", nargs="?", help="one environment's keys (default: all)")
    key_list.add_argument("--all", action="store_true", help="revoked keys too")
    command("revoke", _key_revoke, "revoke an SDK key", key).add_argument("key_id", metavar="ID")


def _env_and_key(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("env")
    parser.add_argument("key")


def _expected_version_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--expected-version",
        type=int,
        metavar="N",
        help="write only if the flag is at version N (default: the version read just before)",
    )
