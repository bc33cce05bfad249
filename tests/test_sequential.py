"""Seeds added in rounds until resolved: boundaries, the sequential family's error rate and the seeds it
saves (simulated), the plan's parsing, and the real CLI running, stopping and resuming rounds.

The simulations go through ``sequential_simulation`` (the family as linear maps of one seed's values,
thousands of studies in seconds); the first tests check that it is the package's procedure.
"""

from __future__ import annotations

import json
import signal
import time

import numpy as np
import pandas as pd
import pytest
import sequential_simulation as sim
import yaml
from claims_simulation import draw, true_means
from conftest import TINY_TASK

from ablate.analysis.boundaries import GroupSequentialTest, _p_values, spent
from ablate.analysis.family import ALPHA, build_family, family_table
from ablate.analysis.inference import graphical_test
from ablate.analysis.sequential import opening_family_table, sequential_family, stop_decision
from ablate.cli import main
from ablate.config import ExperimentError
from ablate.rounds import looks_sentence, parse_seed_rounds

TOGGLES = ("tau_sampling", "bootstrap_space", "half_step", "tau2_weight")
PLAN = (2, 4, 6, 8)  # seeds: {start: 2, max: 8, until: resolved}
FRACTIONS = tuple(n / PLAN[-1] for n in PLAN)


# --- boundaries --------------------------------------------------------------------------------------


@pytest.mark.parametrize("one_sided", [False, True])
@pytest.mark.parametrize("dims", [1, 3])
def test_a_single_look_is_the_fixed_test(one_sided, dims):
    test = GroupSequentialTest((6,), (1.0,), one_sided, dims)
    for alpha in (1e-6, 0.0028, 0.05):
        assert test.levels(alpha)[0] == pytest.approx(alpha, rel=1e-12)
    p = np.array([[1e-9], [0.003], [0.049], [np.nan]])
    assert test.stage_p(p)[:, 0] == pytest.approx([1e-9, 0.003, 0.049, 1.0], rel=1e-12)


def test_one_look_of_the_sequential_family_is_the_fixed_family():
    results = draw(
        true_means(10.0, {"tau2_weight": 2.0, "half_step:tau2_weight": 2.5}), 10.0, 5, np.random.default_rng(4)
    )
    fixed = family_table(build_family(results, "m", 4))
    one_look = family_table(sequential_family(results, "m", 4, [list(range(5))], [5]).family())
    assert fixed["resolved"].sum() >= 3  # a family with something to pass on
    assert (one_look["resolved"] == fixed["resolved"]).all()
    for column in ("p_adjusted", "ci_low", "ci_high", "alpha_local"):
        assert np.allclose(one_look[column], fixed[column], rtol=1e-9, equal_nan=True), column


def test_the_spending_function_and_the_levels():
    assert spent(0.05, 1.0) == 0.05 and spent(0.05, 0.25) < 1e-4 < spent(0.05, 0.5) < spent(0.05, 0.75) < 0.05
    test = GroupSequentialTest(PLAN, FRACTIONS)
    first = [test.levels(alpha)[0] for alpha in (1e-4, 0.0028, 0.05)]
    assert first == pytest.approx([spent(a, 0.25) for a in (1e-4, 0.0028, 0.05)], rel=1e-3)  # nothing before it
    alphas = np.logspace(-6, np.log10(0.05), 60)
    levels = np.array([test.levels(alpha) for alpha in alphas])
    assert (np.diff(levels, axis=0) >= 0).all()  # monotone in alpha: the graph's shortcut needs it
    assert (levels[-1] < 0.05).all() and levels[-1, -1] > 0.03  # the last look keeps most of alpha


def test_a_looks_stage_p_is_at_most_alpha_exactly_when_its_p_is_at_most_the_level():
    """The decision and the interval a claim quotes use levels(alpha); the graph uses stage_p: they agree."""
    test, rng = GroupSequentialTest(PLAN, FRACTIONS), np.random.default_rng(0)
    for alpha in np.exp(rng.uniform(np.log(1e-6), np.log(0.05), 100)):
        levels = test.levels(alpha)
        p = levels * np.exp(rng.normal(0, 0.01, (100, len(PLAN))))
        assert ((p <= levels) == (test.stage_p(p) <= alpha)).all()


@pytest.mark.parametrize(
    ("sizes", "one_sided", "dims"), [(PLAN, False, 1), (PLAN, True, 1), ((3, 6, 9), False, 2)], ids=str
)
def test_the_boundaries_spend_exactly_alpha_over_the_looks(sizes, one_sided, dims):
    """Fresh null studies (another generator than the boundaries'): the share rejected at any look."""
    fractions = tuple(1.0 if k == len(sizes) - 1 else n / sizes[-1] for k, n in enumerate(sizes))
    test = GroupSequentialTest(sizes, fractions, one_sided, dims)
    draws = np.random.default_rng(99).standard_normal((200_000, sizes[-1], dims))
    p = _p_values(draws, sizes, one_sided).T
    for alpha in (0.05, 0.01):
        rate = (p <= test.levels(alpha)).any(axis=1).mean()
        assert abs(rate - alpha) < 4 * np.sqrt(alpha / 200_000), (alpha, rate)


def test_each_claim_quotes_the_look_that_resolved_it_and_the_interval_agrees_with_the_verdict():
    """family.csv of a study in rounds (run.json's record): a resolved test is quoted at the look whose
    statistic crossed, with an interval at that look's nominal level that excludes no effect; an open one
    at its last look, with an interval that includes it; an equivalence, inside or not inside its margin."""
    effects = {"tau2_weight": 15.0, "half_step": 1.2, "half_step:tau2_weight": 2.5}  # a huge one resolves early
    seen = set()
    for seed in range(4):
        results = draw(true_means(10.0, effects), 10.0, 8, np.random.default_rng(seed))
        looks = [{"seeds": list(range(n)), "stop": False, "reason": ""} for n in (2, 4, 6)]
        results.run["sequential"] = {"plan": {"looks": list(PLAN), "max": 8}, "looks": looks}
        table = opening_family_table(results, "m", 4)
        assert len(table) == len(family_table(build_family(results, "m", 4)))
        assert table["n_seeds"].max() <= 6  # the looks made, not the seeds present
        two_sided = table[~table["kind"].isin(["equivalence", "worsening"]) & (table["alpha_local"] > 0)]
        excludes = (two_sided["ci_low"] > 0) | (two_sided["ci_high"] < 0)
        assert (excludes == two_sided["resolved"]).all()
        equivalence = table[(table["kind"] == "equivalence") & (table["alpha_local"] > 0)]
        inside = (equivalence["ci_low"] > -equivalence["margin"]) & (equivalence["ci_high"] < equivalence["margin"])
        assert (inside == equivalence["resolved"]).all()
        seen |= set(table.loc[table["resolved"], "n_seeds"])
    assert len(seen) >= 2  # claims resolved at different looks


def test_the_opening_says_the_looks_and_why_it_stopped():
    plan = {"plan": {"max": 8}}
    look = {"seeds": [0, 1], "stop": False, "reason": "not yet decided: `half_step`"}
    last = {"seeds": [0, 1, 2, 3], "stop": True, "reason": "every factor's main effect was decided"}
    assert looks_sentence({}) == ""
    assert "no look has been made yet" in looks_sentence({"sequential": {**plan, "looks": []}})
    going = looks_sentence({"sequential": {**plan, "looks": [look]}})
    assert going.startswith("Seeds are being added in rounds: 1 look (2 seeds) so far, of at most 8 seeds")
    done = looks_sentence({"sequential": {**plan, "looks": [look, last]}})
    assert done.startswith(
        "Seeds were added in rounds: 2 looks (2, 4 seeds); stopped because every factor's main effect was decided"
    )
    assert "5 % was spent across the looks (O'Brien-Fleming-type alpha spending" in done


# --- the simulation is the package's procedure ----------------------------------------------------------


def test_graph_rejections_for_many_studies_are_graphical_tests():
    family = sim.linear_family()
    p = np.random.default_rng(0).uniform(0, 1, (200, len(family.kinds))) ** 6
    many = sim.graph_rejections(p, family.weights, family.transitions, ALPHA)
    for study in range(len(p)):
        one = graphical_test(list(p[study]), list(family.weights), family.transitions, ALPHA)
        assert list(many[study]) == one.rejected
    assert 0 < many.sum(axis=1).mean() < len(family.kinds)


def test_the_simulated_studies_are_what_sequential_family_decides():
    family = sim.linear_family()
    effects = {"tau2_weight": 1.5, "half_step": 2.5, "half_step:tau2_weight": 2.0}
    values = sim.draw_values(effects, 6, PLAN[-1], np.random.default_rng(5))
    data = sim.looks(family, values, PLAN)
    simulated = sim.run(family, data, PLAN)
    for study in range(len(values)):
        results = sim.study_results(values[study])
        sequential = sequential_family(results, "m", 4, [list(range(n)) for n in PLAN], PLAN)
        p = np.array([[f.hypotheses[i].p_value for f in sequential.families] for i in range(len(family.kinds))])
        assert np.allclose(p, data.p[study], rtol=1e-9)
        stop = next(k for k in range(len(PLAN)) if stop_decision(sequential, k, PLAN)[0])
        assert stop == simulated.stop_look[study]
        assert sequential.outcomes[stop].rejected == list(simulated.rejected[study])


# --- the error rate and the seeds saved (simulated) ----------------------------------------------------

STUDIES = 2000  # per design: a Monte Carlo standard error of 0.49 % at 5 %


@pytest.mark.slow
@pytest.mark.parametrize("plan", [(2, 4, 6, 8), (3, 6, 9)], ids=["start2-max8", "start3-max9"])
def test_with_every_cell_equal_a_false_claim_stays_at_5_percent_over_the_looks(plan):
    """Every look made (the boundaries alone) about 5 %; with the stopping rule (futility stops are
    non-binding) at most that. With all cells equal every claim but an equivalence is false."""
    family = sim.linear_family()
    data = sim.looks(family, sim.draw_values({}, STUDIES, plan[-1], np.random.default_rng(sum(plan))), plan)
    every_look = sim.any_false(family, sim.run(family, data, plan, stop_early=False)).mean()
    stopping = sim.run(family, data, plan)
    with_stops = sim.any_false(family, stopping).mean()
    print(
        f"{plan}: false claims {every_look:.4f} every look, {with_stops:.4f} with stops; "
        f"mean seeds {stopping.stop_seeds.mean():.2f}"
    )
    assert abs(every_look - ALPHA) <= 0.015, every_look  # 3 Monte Carlo SEs
    assert with_stops <= every_look and with_stops <= ALPHA + 0.010


@pytest.mark.slow
def test_a_large_effect_stops_early_and_saves_seeds_against_the_fixed_design_of_equal_power():
    """Designed for a main effect of 1.25 in every toggle (unit noise per cell): the fixed design of the
    sequential one's power there needs n_fixed seeds (interpolated between whole seeds). When the effects
    are twice that, the sequential study stops early and uses at least one seed fewer on average."""
    family = sim.linear_family()
    design = {name: 1.25 for name in TOGGLES}
    rng = np.random.default_rng(3)
    at_design = sim.run(family, sim.looks(family, sim.draw_values(design, STUDIES, PLAN[-1], rng), PLAN), PLAN)
    power = sim.all_found(family, at_design, design).mean()
    fixed = {n: sim.fixed_power(family, design, n, STUDIES, seed=100 + n) for n in range(6, 10)}
    above = next(n for n, value in fixed.items() if value >= power)
    n_fixed = above - (fixed[above] - power) / (fixed[above] - fixed[above - 1])
    large = {name: 2.5 for name in TOGGLES}
    at_large = sim.run(family, sim.looks(family, sim.draw_values(large, STUDIES, PLAN[-1], rng), PLAN), PLAN)
    null = sim.run(family, sim.looks(family, sim.draw_values({}, STUDIES, PLAN[-1], rng), PLAN), PLAN)
    print(
        f"power {power:.3f} at the design effect (fixed: {fixed}); fixed design of equal power: {n_fixed:.2f} "
        f"seeds; sequential mean seeds: {at_design.stop_seeds.mean():.2f} at the design effect, "
        f"{at_large.stop_seeds.mean():.2f} at twice it (power {sim.all_found(family, at_large, large).mean():.3f}), "
        f"{null.stop_seeds.mean():.2f} with no effect"
    )
    assert 0.75 <= power <= 0.95
    assert sim.all_found(family, at_large, large).mean() >= 0.99
    assert at_large.stop_seeds.mean() <= n_fixed - 1.0
    assert null.stop_seeds.mean() <= n_fixed - 1.0  # main effects shown negligible stop it too


# --- the plan --------------------------------------------------------------------------------------------


def test_the_plan_gives_rounds_of_step_seeds_up_to_max():
    rounds = parse_seed_rounds({"start": 2, "max": 8, "until": "resolved"})
    assert rounds.looks == (2, 4, 6, 8) and rounds.seeds(1) == [0, 1, 2, 3]
    assert parse_seed_rounds({"start": 3, "step": 2, "max": 8, "until": "resolved"}).looks == (3, 5, 7, 8)


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ({"start": 2, "max": 8}, "seeds.until: missing"),
        ({"start": 1, "max": 8, "until": "resolved"}, "seeds.start: must be >= 2"),
        ({"start": 2, "max": 2, "until": "resolved"}, "seeds.max: must be more than seeds.start"),
        ({"start": 2, "max": 8, "until": "forever"}, "seeds.until: 'forever' is not a stopping rule"),
        ({"start": 2, "max": 8, "until": "resolved", "stp": 1}, "seeds.stp: unknown key (did you mean 'step'?)"),
        ({"start": 2, "max": 8.5, "until": "resolved"}, "seeds.max: expected a whole number"),
    ],
)
def test_a_bad_plan_is_one_line_naming_the_key(value, named):
    with pytest.raises(ExperimentError) as error:
        parse_seed_rounds(value)
    assert named in str(error.value) and "\n" not in str(error.value)


def _experiment(tmp_path, seeds, **overrides):
    spec = {
        "name": "rounds",
        "task": TINY_TASK,
        "objective": {"k_max": 8},
        "factors": {"tau2_weight": [True, False]},
        "seeds": seeds,
        "train": {"steps": 20, "batch_size": 16, "log_every": 10},
        "eval": {"steps": [1, 2, 8]},
        "output": str(tmp_path / "results" / "rounds"),
        **overrides,
    }
    path = tmp_path / "rounds.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_dry_run_says_the_rounds_plan_and_a_bad_one_is_one_line(tmp_path, capsys):
    path = _experiment(tmp_path, {"start": 2, "max": 6, "until": "resolved"})
    assert main(["run", str(path), "--dry-run"]) == 0
    printed = capsys.readouterr().out
    assert "2 cells x 6 seeds = 12 trials" in printed
    assert "round 2: seeds 2-3 (4 trials), then look 2 at 4 seeds" in printed and "O'Brien-Fleming" in printed
    assert main(["run", str(path), "seeds.until=never", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "seeds.until: 'never' is not a stopping rule" in err
    assert not (tmp_path / "results").exists()


# --- the real CLI ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_rounds_through_the_cli_then_report_merge_and_resume(tmp_path, ray_session, capsys):
    path = _experiment(tmp_path, {"start": 2, "max": 4, "until": "resolved"})
    assert main(["run", str(path)]) == 0
    out = tmp_path / "results" / "rounds"
    printed = capsys.readouterr().out
    assert "round 1 of at most 2: seeds 0-1" in printed and "round 2 of at most 2: seeds 2-3" in printed
    assert sorted(p.name for p in (out / "ray").iterdir()) == ["round1", "round2"]
    trials = pd.read_csv(out / "trials.csv")
    assert sorted(trials["seed"]) == [0, 0, 1, 1, 2, 2, 3, 3] and (trials["status"] == "ok").all()
    run = json.loads((out / "run.json").read_text())
    looks = run["sequential"]["looks"]
    assert run["seeds"] == [0, 1, 2, 3] and run["config"]["seeds"]["max"] == 4
    assert [look["seeds"] for look in looks] == [[0, 1], [0, 1, 2, 3]] and [x["stop"] for x in looks] == [False, True]
    assert looks[0]["alpha_spent"] < looks[1]["alpha_spent"] == pytest.approx(ALPHA)
    assert set(looks[1]["nominal"]) >= {"main tau2_weight"} and looks[1]["reason"]
    report = (out / "report.md").read_text()
    assert "Seeds were added in rounds: 2 looks (2, 4 seeds); stopped because" in report
    family, claims = pd.read_csv(out / "family.csv"), pd.read_csv(out / "claims.csv")
    assert len(claims) <= family["resolved"].sum()  # every claim a resolved test of the sequential family

    # --resume of a finished study runs nothing; merging it with more seeds is one study of what it holds
    before = {p: p.stat().st_mtime_ns for p in (out / "trials").iterdir()}
    assert main(["run", str(path), "--resume", "--no-report"]) == 0
    assert {p: p.stat().st_mtime_ns for p in (out / "trials").iterdir()} == before
    more = _experiment(tmp_path, [4], output=str(tmp_path / "results" / "more"))
    assert main(["run", str(more), "--no-report"]) == 0
    merged = tmp_path / "merged"
    assert main(["merge", str(out), str(tmp_path / "results" / "more"), "--output", str(merged), "--no-report"]) == 0
    run = json.loads((merged / "run.json").read_text())
    assert run["seeds"] == [0, 1, 2, 3, 4] and "sequential" not in run
    assert run["merged_from"][0]["sequential"]["plan"]["max"] == 4


@pytest.mark.slow
def test_resume_of_an_interrupted_second_round_finishes_it_then_looks(tmp_path):
    from test_cli_run import run_cli

    path = _experiment(
        tmp_path,
        {"start": 2, "max": 4, "until": "resolved"},
        checkpoint_seconds=0.5,
        train={"steps": 300, "batch_size": 16, "log_every": 50},
    )
    out = tmp_path / "results" / "rounds"
    driver = run_cli(["run", str(path), "--no-report"], start_new_session=True)
    deadline = time.time() + 300
    while not list((out / "trials").glob("*seed[23].json")) and time.time() < deadline:
        time.sleep(0.2)
    assert driver.poll() is None, driver.communicate()[0]
    driver.send_signal(signal.SIGINT)
    first = driver.communicate(timeout=120)[0]
    assert driver.returncode == 130 and "--resume" in first, first
    run = json.loads((out / "run.json").read_text())
    assert len(run["sequential"]["looks"]) == 1  # round 2 was not looked at
    done = {p.name: p.stat().st_mtime_ns for p in (out / "trials").iterdir()}
    assert 4 < len(done) < 8, first

    resumed = run_cli(["run", str(path), "--no-report", "--resume"])
    second = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, second
    assert "round 1" not in second and "round 2 of at most 2" in second
    assert all((out / "trials" / name).stat().st_mtime_ns == mtime for name, mtime in done.items())
    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 8 and (trials["status"] == "ok").all()
    looks = json.loads((out / "run.json").read_text())["sequential"]["looks"]
    assert [len(look["seeds"]) for look in looks] == [2, 4] and looks[-1]["stop"]
