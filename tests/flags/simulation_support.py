"""Tools of the experiment simulation (tests/flags/test_experiment_simulation.py):
a real 3-node cluster with a flag server process on it, driven through the
``raftlog`` CLI as scripts drive it, and a simulated population of app users
who evaluate a flag over OFREP with a client key and report conversions to
``POST /raftlog/v1/track``.

Invariants:

- Deterministic: every random choice (who converts, how much they spend)
  is drawn from a ``random.Random(seed)`` *per user index*, before any
  traffic, and a user's variant is fixed by flagd's ``fractional`` hash of
  its targeting key; nothing depends on the order in which concurrent
  requests complete. The expected aggregates (``Expected``) are computed
  from those draws and the variants the OFREP answers named.
- A user's conversion events are sent only after the OFREP answer for its
  evaluation arrived (the exposure's ``ts`` is taken while the server
  answers, the event's ``ts`` when the server takes the ``/track`` batch:
  later or equal). "Early" users also track once *before* their first
  evaluation, and those events must never count.
- Every request must succeed (200 / 202): the server runs with its OFREP
  rate limits off (``SERVER_ARGS``), since the whole population comes from
  one address with one key.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from openfeature.evaluation_context import EvaluationContext

from cluster.cli import main as raftlog_main
from flags.evaluator import FlagdEvaluator
from flags.tracking import MAX_EVENTS, TRACK_PATH
from harness.flag_server import FlagServerProcess
from harness.local_cluster import LocalCluster
from tests.flags.environment_support import environment

ENV = "production"
FLAG = "checkout-flow"
CONTROL = "control"
TREATMENT = "treatment"
PURCHASE = "purchase"
REVENUE = "revenue"
EXPERIMENT = "checkout"
FLAG_SET: dict[str, Any] = {
    "flags": {
        FLAG: {
            "state": "ENABLED",
            "variants": {CONTROL: "classic", TREATMENT: "one-page"},
            "defaultVariant": CONTROL,
            "targeting": {"fractional": [[CONTROL, 50], [TREATMENT, 50]]},
        }
    }
}
SERVER_ARGS = ("--ofrep-key-rate", "0", "--ofrep-address-rate", "0")
"""No OFREP rate limits: the simulated population shares one key and one address."""
CONCURRENCY = 48
"""Evaluations in flight (the flag server answers on one event loop)."""
TRACK_CONCURRENCY = 8
HTTP_TIMEOUT_S = 30.0
CLI_TIMEOUT_S = 60.0


# --- the stack and the CLI ------------------------------------------------------------


@dataclass
class SimStack:
    cluster: LocalCluster
    server: FlagServerProcess
    _tenants: Iterator[int] = field(default_factory=lambda: iter(range(1_000_000)))

    @property
    def bootstrap(self) -> str:
        return ",".join(self.cluster.addresses.values())

    def _environment(self, tenant: str | None) -> dict[str, str]:
        env = {
            "RAFTLOG_API_KEY": self.cluster.api_key,
            "RAFTLOG_FLAGS": self.server.eval_address,
            "RAFTLOG_BOOTSTRAP": self.bootstrap,
        }
        if tenant is not None:
            env["RAFTLOG_TENANT"] = tenant
        return env

    def raftlog(self, *argv: str, tenant: str | None = None) -> tuple[str, str]:
        """``raftlog ARGV`` in this process (what the ``raftlog`` script calls), as the
        operator acting in ``tenant``; (stdout, stderr); fails unless it exits 0."""
        out, err = io.StringIO(), io.StringIO()
        with (
            environment(self._environment(tenant)),
            contextlib.redirect_stdout(out),
            contextlib.redirect_stderr(err),
        ):
            code = raftlog_main(list(argv))
        assert code == 0, f"raftlog {' '.join(argv)} -> {code}: {err.getvalue()}\n{self.server.log_tail()}"
        return out.getvalue(), err.getvalue()

    def raftlog_process(self, *argv: str, tenant: str) -> tuple[str, str]:
        """``raftlog ARGV`` as a separate process, as a script runs it; (stdout, stderr)."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("RAFTLOG_")}
        env.update(self._environment(tenant))
        done = subprocess.run(
            [sys.executable, "-m", "cluster.cli", *argv],
            capture_output=True,
            text=True,
            env=env,
            timeout=CLI_TIMEOUT_S,
        )
        assert done.returncode == 0, f"raftlog {' '.join(argv)} -> {done.returncode}: {done.stderr}"
        return done.stdout, done.stderr

    def tenant_with_client_key(self, prefix: str, root: Path) -> tuple[str, str]:
        """A new tenant whose ``ENV`` holds ``FLAG_SET``, and a client key of it: (tenant, key)."""
        tenant = f"{prefix}-{next(self._tenants)}"
        self.raftlog("tenant", "create", tenant)
        self.raftlog("flags", "env", "create", ENV, tenant=tenant)
        flags_file = root / f"{tenant}-flags.json"
        flags_file.write_text(json.dumps(FLAG_SET))
        self.raftlog("flags", "import", ENV, str(flags_file), tenant=tenant)
        out, _ = self.raftlog(
            "flags", "key", "create", ENV, "--kind", "client", "--name", "sim", tenant=tenant
        )
        key = out.strip()
        assert key.startswith("rlc_"), out
        return tenant, key


@contextlib.contextmanager
def running_stack(root: Path) -> Iterator[SimStack]:
    """A 3-node cluster and a flag server (OFREP rate limits off) on it."""
    cluster = LocalCluster(root / "cluster", topics=())
    server: FlagServerProcess | None = None
    try:
        cluster.start_all()
        server = FlagServerProcess(
            root / "flag-server",
            list(cluster.addresses.values()),
            cluster.api_key,
            extra_args=SERVER_ARGS,
        )
        server.start()
        yield SimStack(cluster, server)
    finally:
        if server is not None:
            server.close()
        cluster.close()


# --- the population ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class User:
    key: str
    draw: float
    """Uniform in [0, 1): the user converts iff ``draw`` < its variant's true rate."""
    amount: float
    """What the user spends (``revenue`` event value) if it converts."""
    early: bool = False
    """Tracks ``purchase``/``revenue`` once before its first evaluation (must not count)."""


def local_variant(evaluator: FlagdEvaluator, key: str) -> str:
    """The variant flagd's fractional hash gives ``key`` (what the server must answer)."""
    variant = evaluator.resolve_string_value(FLAG, "", EvaluationContext(key)).variant
    assert variant is not None
    return variant


def flag_evaluator() -> FlagdEvaluator:
    evaluator = FlagdEvaluator()
    evaluator.set_flags(FLAG_SET)
    return evaluator


def population(prefix: str, count: int, seed: int, *, early: int = 0) -> list[User]:
    """``count`` users; every ``count // early``-th one (``early`` in all) tracks early."""
    rng = random.Random(seed)
    step = count // early if early else 0
    return [
        User(
            f"{prefix}-{n:06d}",
            rng.random(),
            round(rng.uniform(20.0, 80.0), 2),
            early=bool(step) and n % step == 0,
        )
        for n in range(count)
    ]


def skewed_population(prefix: str, count: int, seed: int, control_share: float) -> list[User]:
    """``count`` users of whom ``round(count * control_share)`` hash into ``CONTROL``
    (chosen with the flag's own evaluator): a skewed client population."""
    rng = random.Random(seed)
    evaluator = flag_evaluator()
    wanted = {CONTROL: round(count * control_share)}
    wanted[TREATMENT] = count - wanted[CONTROL]
    users: list[User] = []
    n = 0
    while len(users) < count:
        key = f"{prefix}-{n:06d}"
        n += 1
        draw, amount = rng.random(), round(rng.uniform(20.0, 80.0), 2)
        variant = local_variant(evaluator, key)
        if wanted[variant]:
            wanted[variant] -= 1
            users.append(User(key, draw, amount))
    return users


# --- what the analysis must report ------------------------------------------------------


@dataclass
class Arm:
    users: int = 0
    conversions: int = 0
    revenue: float = 0.0
    revenue_squares: float = 0.0

    @property
    def rate(self) -> float:
        return self.conversions / self.users

    @property
    def mean(self) -> float:
        return self.revenue / self.users


@dataclass
class Traffic:
    """What the simulated clients saw and sent."""

    variants: dict[str, str]
    """targeting key -> the variant its OFREP answer named"""
    events: int
    """tracking events accepted (202), early ones included"""
    arms: dict[str, Arm]
    """per variant: users, and conversions/revenue after the first exposure only"""
    seconds: float


def expected_arms(
    users: Sequence[User], variants: Mapping[str, str], rates: Mapping[str, float]
) -> dict[str, Arm]:
    arms = {CONTROL: Arm(), TREATMENT: Arm()}
    for user in users:
        arm = arms[variants[user.key]]
        arm.users += 1
        if user.draw < rates[variants[user.key]]:
            arm.conversions += 1
            arm.revenue += user.amount
            arm.revenue_squares += user.amount * user.amount
    return arms


# --- the traffic ------------------------------------------------------------------------


class _Tracker:
    """Batches tracking events (``MAX_EVENTS`` a request) and posts them,
    ``TRACK_CONCURRENCY`` batches at a time; every batch must be a 202."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session
        self._batch: list[dict[str, Any]] = []
        self._sending: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(TRACK_CONCURRENCY)
        self.accepted = 0

    def add(self, event: dict[str, Any]) -> None:
        self._batch.append(event)
        if len(self._batch) >= MAX_EVENTS:
            self._send()

    def _send(self) -> None:
        batch, self._batch = self._batch, []
        task = asyncio.get_running_loop().create_task(self._post(batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _post(self, batch: list[dict[str, Any]]) -> None:
        async with self._slots, self._session.post(TRACK_PATH, json={"events": batch}) as answer:
            body = await answer.text()
            assert answer.status == 202, f"track: {answer.status} {body}"
            assert json.loads(body) == {"accepted": len(batch)}, body
        self.accepted += len(batch)

    async def flush(self) -> None:
        """Send what is batched; return once every batch sent so far is accepted."""
        if self._batch:
            self._send()
        while self._sending:
            await asyncio.gather(*list(self._sending))


def conversion_events(user: User) -> list[dict[str, Any]]:
    return [
        {"name": PURCHASE, "targetingKey": user.key, "attributes": {"sim": True}},
        {"name": REVENUE, "targetingKey": user.key, "value": user.amount},
    ]


async def simulate(url: str, client_key: str, users: Sequence[User], rates: Mapping[str, float]) -> Traffic:
    """Early users track first; then every user evaluates ``FLAG`` over OFREP
    (``CONCURRENCY`` at a time) and, once answered, converts with its variant's
    true rate (``purchase``, and ``revenue`` with its amount)."""
    started = time.monotonic()
    headers = {"Authorization": f"Bearer {client_key}"}
    timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
    connector = aiohttp.TCPConnector(limit=CONCURRENCY + TRACK_CONCURRENCY)
    variants: dict[str, str] = {}
    async with aiohttp.ClientSession(url, headers=headers, timeout=timeout, connector=connector) as session:
        tracker = _Tracker(session)
        for user in users:
            if user.early:
                for event in conversion_events(user):
                    tracker.add(event)
        await tracker.flush()
        # Every early event is acknowledged, so its ts (taken by the server when
        # it took the batch) is in the past; 5 ms on, every exposure below has a
        # strictly later ts (rule 3 counts an event at or after the exposure's).
        await asyncio.sleep(0.005)
        pending = iter(users)

        async def evaluate_all() -> None:
            for user in pending:  # shared by the workers: each user once
                path = f"/ofrep/v1/evaluate/flags/{FLAG}"
                async with session.post(path, json={"context": {"targetingKey": user.key}}) as answer:
                    body = await answer.text()
                    assert answer.status == 200, f"OFREP {user.key}: {answer.status} {body}"
                variant = json.loads(body)["variant"]
                variants[user.key] = variant
                if user.draw < rates[variant]:
                    for event in conversion_events(user):
                        tracker.add(event)

        await asyncio.gather(*(evaluate_all() for _ in range(CONCURRENCY)))
        await tracker.flush()
    return Traffic(
        variants, tracker.accepted, expected_arms(users, variants, rates), time.monotonic() - started
    )


# --- the results, through the CLI -------------------------------------------------------


def create_and_start(stack: SimStack, tenant: str) -> None:
    stack.raftlog(
        "experiment", "create", ENV, EXPERIMENT, "--flag", FLAG, "--control", CONTROL,
        "--metric", f"{PURCHASE}:conversion", "--metric", f"{REVENUE}:value",
        tenant=tenant,
    )  # fmt: skip
    stack.raftlog("experiment", "start", ENV, EXPERIMENT, tenant=tenant)


def results_now(stack: SimStack, tenant: str) -> dict[str, Any]:
    out, _ = stack.raftlog("experiment", "results", ENV, EXPERIMENT, "--json", tenant=tenant)
    document: dict[str, Any] = json.loads(out)
    return document


def settled_results(
    stack: SimStack, tenant: str, traffic: Traffic, timeout_s: float = 60.0
) -> tuple[dict[str, Any], str]:
    """Wait until the analysis has read every user and every tracking event
    sent, stop the experiment, wait until the analysis is complete, and read
    the results as a script would (``raftlog experiment results --json`` in
    a process of its own): (results, the command's stderr)."""
    deadline = time.monotonic() + timeout_s
    users = len(traffic.variants)
    document = results_now(stack, tenant)
    while document["users"] < users or document["analysis"]["tracking"] < traffic.events:
        assert time.monotonic() < deadline, (
            f"the analysis did not catch up with {users} users and {traffic.events} tracking events: "
            f"{document['users']} users, {document['analysis']}\n{stack.server.log_tail()}"
        )
        time.sleep(0.2)
        document = results_now(stack, tenant)
    stack.raftlog("experiment", "stop", ENV, EXPERIMENT, tenant=tenant)
    while not document["analysis"]["complete"]:
        assert time.monotonic() < deadline, f"the stopped analysis is not complete: {document['analysis']}"
        time.sleep(0.1)
        document = results_now(stack, tenant)
    out, err = stack.raftlog_process("experiment", "results", ENV, EXPERIMENT, "--json", tenant=tenant)
    final: dict[str, Any] = json.loads(out)
    return final, err


def rows(results: Mapping[str, Any], event: str) -> dict[str, dict[str, Any]]:
    """The metric's rows by variant name."""
    (metric,) = [m for m in results["metrics"] if m["event"] == event]
    return {row["variant"]: row for row in metric["variants"]}


def run_case(
    stack: SimStack, root: Path, prefix: str, users: Sequence[User], rates: Mapping[str, float]
) -> tuple[Traffic, dict[str, Any], str]:
    """A fresh tenant with the flag and a running experiment, the traffic, the
    settled results: (traffic, results, results' stderr)."""
    tenant, key = stack.tenant_with_client_key(prefix, root)
    create_and_start(stack, tenant)
    traffic = asyncio.run(simulate(stack.server.ofrep_url, key, users, rates))
    results, err = settled_results(stack, tenant, traffic)
    print(summary(prefix, traffic, results))  # shown with -s / -rP: the numbers of the run
    return traffic, results, err


def summary(name: str, traffic: Traffic, results: Mapping[str, Any]) -> str:
    lines = [
        f"{name}: {len(traffic.variants)} users in {traffic.seconds:.1f}s, srm p {results['srm_p_value']:.3g}"
    ]
    for event in (PURCHASE, REVENUE):
        for variant, row in rows(results, event).items():
            lines.append(
                f"  {event} {variant}: users {row['users']} conv {row['conversions']} rate {row['rate']} "
                f"mean {row['mean']} lift {row['lift']} [{row['lift_ci_low']}, {row['lift_ci_high']}] "
                f"p {row['p_value']} beat {row['chance_to_beat_control']}"
            )
    return "\n".join(lines)
