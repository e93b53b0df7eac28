"""The experiment simulation (issue 17, "Acceptance"): 20,000 simulated app
users evaluate a 50/50 flag through the real OFREP endpoint of a flag server
process with a client key, convert with a known true rate per variant and
report it to ``POST /raftlog/v1/track``; the analysis in the flag server
turns the logged exposures and tracking events into results, read with
``raftlog experiment results --json`` as a script would.

Three cases on one cluster and flag server, one tenant each:

1. known effect (10% control, 12% treatment): the treatment's lift is
   significant (p < 0.05, 95% interval above 0, chance to beat control over
   95%), no sample-ratio warning; the counts are exactly the simulated ones,
   so conversions tracked *before* a user's first exposure (1% of the users
   track once early) are not counted;
2. A/A (10% both): no significant difference, no sample-ratio warning;
3. sample-ratio mismatch: 90/10 traffic on the 50/50 flag (a skewed client
   population, picked with the flag's own fractional hash): ``srm_p_value``
   below 0.001, ``srm_warning`` set and a WARNING on the CLI's stderr.

Deterministic: fixed seeds, draws per user (tests/flags/simulation_support.py).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.flags.simulation_support import (
    CONTROL,
    PURCHASE,
    REVENUE,
    TREATMENT,
    Arm,
    SimStack,
    Traffic,
    flag_evaluator,
    local_variant,
    population,
    rows,
    run_case,
    running_stack,
    skewed_population,
)

pytestmark = pytest.mark.timeout(240)

USERS = 20_000
EARLY_USERS = 200
SRM_USERS = 10_000
EFFECT_SEED = 17
AA_SEED = 1718
SRM_SEED = 171717


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimStack]:
    with running_stack(tmp_path_factory.mktemp("experiment-simulation")) as s:
        yield s


def pooled_z_test_p(control: Arm, treatment: Arm) -> float:
    """Two-sided p of the pooled two-proportion z-test, from the simulated counts."""
    pooled = (control.conversions + treatment.conversions) / (control.users + treatment.users)
    se = math.sqrt(pooled * (1 - pooled) * (1 / control.users + 1 / treatment.users))
    return math.erfc(abs(treatment.rate - control.rate) / se / math.sqrt(2))


def check_counts(results: dict[str, Any], traffic: Traffic) -> None:
    """The analysis counted exactly the simulated users, and only the
    conversions and revenue that came at or after each user's first exposure."""
    assert results["state"] == "stopped" and results["analysis"]["complete"], results["analysis"]
    assert results["analysis"]["pending_dropped"] == 0, results["analysis"]
    assert results["users"] == len(traffic.variants)
    purchase, revenue = rows(results, PURCHASE), rows(results, REVENUE)
    for variant, arm in traffic.arms.items():
        assert purchase[variant]["users"] == arm.users == revenue[variant]["users"], variant
        assert purchase[variant]["conversions"] == arm.conversions, (variant, purchase[variant], arm)
        assert math.isclose(revenue[variant]["mean"], arm.mean, rel_tol=1e-9), (
            variant,
            revenue[variant],
            arm,
        )
    assert list(purchase) == [CONTROL, TREATMENT], "the control's row first"


def check_no_srm(results: dict[str, Any], stderr: str) -> None:
    assert results["srm_p_value"] >= 0.001, results["srm_p_value"]
    assert results["srm_warning"] is False
    assert "sample ratio mismatch" not in stderr, stderr


def test_a_known_effect_is_found_and_conversions_before_exposure_do_not_count(
    stack: SimStack, tmp_path: Path
) -> None:
    users = population("effect", USERS, EFFECT_SEED, early=EARLY_USERS)
    assert sum(user.early for user in users) == EARLY_USERS
    traffic, results, stderr = run_case(stack, tmp_path, "effect", users, {CONTROL: 0.10, TREATMENT: 0.12})
    evaluator = flag_evaluator()
    assert all(local_variant(evaluator, key) == v for key, v in traffic.variants.items()), "fractional split"
    # Every early event was sent (and acknowledged) before its user's first evaluation.
    early_events = 2 * EARLY_USERS
    converted = sum(arm.conversions for arm in traffic.arms.values())
    assert traffic.events == early_events + 2 * converted
    check_counts(results, traffic)
    check_no_srm(results, stderr)

    control, treatment = traffic.arms[CONTROL], traffic.arms[TREATMENT]
    row = rows(results, PURCHASE)[TREATMENT]
    assert row["p_value"] < 0.05, row
    assert math.isclose(row["p_value"], pooled_z_test_p(control, treatment), rel_tol=1e-6, abs_tol=1e-12)
    assert row["lift"] > 0 and 0 < row["lift_ci_low"] <= row["lift"] <= row["lift_ci_high"], row
    assert math.isclose(row["lift"], treatment.rate / control.rate - 1, rel_tol=1e-9), row
    assert row["chance_to_beat_control"] > 0.95, row
    control_row = rows(results, PURCHASE)[CONTROL]
    assert control_row["lift"] is None and control_row["p_value"] is None, control_row
    value_row = rows(results, REVENUE)[TREATMENT]
    assert value_row["lift"] > 0, value_row


def test_an_a_a_run_finds_no_difference(stack: SimStack, tmp_path: Path) -> None:
    users = population("aa", USERS, AA_SEED)
    traffic, results, stderr = run_case(stack, tmp_path, "aa", users, {CONTROL: 0.10, TREATMENT: 0.10})
    assert traffic.events == 2 * sum(arm.conversions for arm in traffic.arms.values())
    check_counts(results, traffic)
    check_no_srm(results, stderr)
    for event in (PURCHASE, REVENUE):
        row = rows(results, event)[TREATMENT]
        assert row["p_value"] >= 0.05, (event, row)
        assert row["lift_ci_low"] < 0 < row["lift_ci_high"], (event, row)
        assert 0.05 < row["chance_to_beat_control"] < 0.95, (event, row)


def test_a_sample_ratio_mismatch_is_flagged_loudly(stack: SimStack, tmp_path: Path) -> None:
    users = skewed_population("srm", SRM_USERS, SRM_SEED, control_share=0.9)
    traffic, results, stderr = run_case(stack, tmp_path, "srm", users, {CONTROL: 0.10, TREATMENT: 0.10})
    assert traffic.arms[CONTROL].users == 9 * traffic.arms[TREATMENT].users, traffic.arms
    check_counts(results, traffic)
    assert results["weights"] == {CONTROL: 50.0, TREATMENT: 50.0}
    assert results["srm_p_value"] < 0.001, results["srm_p_value"]
    assert all(metric["srm_p_value"] == results["srm_p_value"] for metric in results["metrics"])
    assert results["srm_warning"] is True
    assert "WARNING: sample ratio mismatch" in stderr, stderr
