"""The cost objective (``--objective cost --max-accuracy-drop P``): the cheapest point within
the budget whose proxy accuracy is at most P points below the base model's."""
from __future__ import annotations

import math
from dataclasses import replace

import pytest

from autocompress.cli.main import build_parser, main
from autocompress.core.budget import parse as parse_budget
from autocompress.core.errors import AutocompressError
from autocompress.core.space import Space
from autocompress.core.trial import COMPLETE, FAILED, SCAN, SEARCH, TrialRecord, cheapest_feasible
from autocompress.engine.runner import prepare
from autocompress.engine.settings import OBJECTIVES, SearchSettings
from autocompress.search import STRATEGIES, Problem, get_strategy
from autocompress.search._optuna import violations
from autocompress.search._uniform import at_level
from autocompress.testing import StrategySuite

CROSSING = 0.2  # the synthetic proxy loses exactly the tolerated drop at 0.2 of the base FLOPs


def _trial(number, score, flops, feasible=True, purpose=SEARCH, state=COMPLETE):
    return TrialRecord(number, state, {}, {}, score if state == COMPLETE else None, feasible, {"flops": flops},
                       purpose=purpose)


@pytest.fixture
def bare():
    """A torch-free problem: no knobs, a FLOPs limit, base proxy accuracy 90, 1 point tolerated."""
    return Problem(Space(layers=(), groups=(), knobs=()), {"flops": 1e6}, {"flops": 2e6}, base_score=90.0,
                   max_accuracy_drop=1.0, objective="cost")


def _history():
    return [
        _trial(0, 89.9, 9e5),
        _trial(1, 89.2, 5e5),
        _trial(2, 89.5, 5e5),  # as cheap as 1, more accurate
        _trial(3, 88.9, 1e5),  # cheaper, 1.1 points down
        _trial(4, 89.9, 1e4, feasible=False),  # cheaper, over the budget as measured
        _trial(5, 89.9, 1e4, purpose=SCAN),
        _trial(6, None, 1e4, state=FAILED),
    ]


def test_best_is_the_cheapest_feasible_trial_within_the_drop(bare):
    for name in ("random", "bo", "uniform", "nsga2", "condensa"):
        assert get_strategy(name).best(bare, _history()).number == 2, name


def test_best_under_the_accuracy_objective_is_the_most_accurate(bare):
    assert get_strategy("random").best(replace(bare, objective="accuracy"), _history()).number == 0


def test_best_falls_back_to_the_most_accurate_when_none_is_within_the_drop(bare):
    history = [_trial(0, 85.0, 9e5), _trial(1, 88.5, 8e5), _trial(2, 87.0, 1e5), _trial(3, 89.5, 1e4, feasible=False)]
    assert cheapest_feasible(history, bare.accuracy_floor, bare.primary_cost) is None
    assert get_strategy("random").best(bare, history).number == 1


def test_cheapest_feasible_reads_the_predicted_cost_without_a_measurement(bare):
    history = [_trial(0, 89.5, 5e5), TrialRecord(1, COMPLETE, {}, {}, 89.5, True, {})]  # no knobs: predicted 0
    assert cheapest_feasible(history, 89.0, bare.primary_cost).number == 1


def test_the_strategies_that_serve_the_cost_objective():
    assert "cost" in OBJECTIVES
    serving = {name for name, cls in STRATEGIES.items() if "cost" in cls.objectives}
    assert serving == {"bo", "random", "uniform", "nsga2", "condensa"}
    assert all({"accuracy", "pareto"} <= set(cls.objectives) for cls in STRATEGIES.values())


@pytest.mark.parametrize("strategy", ["greedy", "genetic", "haloc"])
def test_a_strategy_that_cannot_serve_it_refuses_with_one_line(strategy, capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["search", "--strategy", strategy, "--objective", "cost", "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in lines[0]
    assert f"strategy {strategy!r} does not serve --objective cost" in lines[0] and "use one of bo" in lines[0]
    assert not out.exists()  # refused before anything started


def test_prepare_refuses_it_before_measuring_anything():
    settings = SearchSettings(parse_budget("flops=0.5"), strategy="greedy", objective="cost")
    with pytest.raises(AutocompressError, match="does not serve --objective cost"):
        prepare(None, settings, "sqlite://")  # no workload needed: the check comes first


def test_a_pruner_is_refused_with_the_cost_objective(capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["search", "--objective", "cost", "--pruner", "median", "--out", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "--pruner median ranks trials by accuracy alone" in lines[0]
    assert not out.exists()
    settings = SearchSettings(parse_budget("flops=0.5"), objective="cost", pruner="sha")
    with pytest.raises(AutocompressError, match="use --pruner none with it"):
        prepare(None, settings, "sqlite://")


def test_the_cli_takes_the_cost_objective():
    args = build_parser().parse_args(["search", "--objective", "cost", "--max-accuracy-drop", "2.5"])
    assert args.objective == "cost" and args.max_accuracy_drop == 2.5


# ----- strategies under the cost objective, simulated as the engine runs them -------------------------

@pytest.fixture(scope="module")
def problem():
    return replace(StrategySuite.problem(("channels",)), objective="cost")


class _Simulation(StrategySuite):
    """StrategySuite's engine simulation with a proxy that falls with log-FLOPs below the
    base: the floor is crossed at ``CROSSING`` of the base FLOPs, whatever the allocation."""

    def __init__(self, problem):
        self.problem_ = problem

    def score(self, candidate):
        p = self.problem_
        ratio = p.space.candidate_cost(candidate)["flops"] / p.base["flops"]
        return p.base_score - p.max_accuracy_drop * math.log(ratio) / math.log(CROSSING)


def _ratios(problem, history):
    return [r.metrics["flops"] / problem.base["flops"] for r in history if r.purpose == SEARCH]


def test_uniform_bisects_to_the_cheapest_uniform_level_within_the_drop(problem):
    strategy = get_strategy("uniform")
    history = _Simulation(problem).simulate(strategy, problem, 30)
    search = [r for r in history if r.purpose == SEARCH]
    assert 3 <= len(search) <= 10  # then it has nothing more to try
    assert strategy.ask(problem, history) is None
    assert all(r.candidate == r.proposal and r.feasible for r in search)  # inside the budget, kept as proposed
    best = strategy.best(problem, history)
    assert best.score >= problem.accuracy_floor
    assert CROSSING <= best.metrics["flops"] / problem.base["flops"] <= 1.25 * CROSSING


def test_uniform_stops_after_the_budget_edge_when_it_misses_the_floor(problem):
    tight = replace(problem, max_accuracy_drop=0.0, base_score=problem.base_score + 5)
    history = _Simulation(problem).simulate(get_strategy("uniform"), tight, 30)
    assert len(history) == 1 and history[0].score < tight.accuracy_floor


def test_uniform_levels_keep_every_knob_at_the_same_fraction(problem):
    candidate = at_level(problem.space, 0.5)
    assert {min(max(0.5, k.low), k.high) for k in problem.space.knobs} == set(candidate.values())


def test_bo_minimises_cost_under_the_accuracy_floor(problem):
    strategy = get_strategy("bo", seed=0)
    history = _Simulation(problem).simulate(strategy, problem, 20)
    assert _ratios(problem, history)[0] == pytest.approx(0.5, abs=0.02)  # the uniform allocation, at the budget
    best = strategy.best(problem, history)
    assert best.score >= problem.accuracy_floor
    assert CROSSING <= best.metrics["flops"] / problem.base["flops"] <= 1.15 * CROSSING


def test_the_accuracy_floor_is_an_optuna_constraint_only_under_the_cost_objective(problem):
    record = TrialRecord(0, COMPLETE, {}, problem.space.neutral(), problem.accuracy_floor - 0.5, False,
                         problem.space.candidate_cost(problem.space.neutral()))
    cost = violations(problem, record)
    assert cost["accuracy"] == pytest.approx(0.5) and cost["flops"] > 0  # the neutral candidate is over the budget
    assert set(violations(replace(problem, objective="accuracy"), record)) == set(problem.limits)


@pytest.mark.parametrize("name", ["nsga2", "random"])
def test_other_strategies_find_a_point_within_the_drop_under_the_budget(problem, name):
    strategy = get_strategy(name, seed=0)
    history = _Simulation(problem).simulate(strategy, problem, 12)
    search = [r for r in history if r.purpose == SEARCH]
    assert all(r.feasible for r in search)
    kept = [r for r in search if r.metrics["flops"] < 0.95 * problem.limits["flops"]]
    assert kept and all(r.candidate == r.proposal for r in kept)  # fitting proposals are evaluated as proposed
    best = strategy.best(problem, history)
    assert best.score >= problem.accuracy_floor and best.metrics["flops"] < problem.limits["flops"]


@pytest.mark.slow
def test_a_search_on_the_cost_objective_keeps_fitting_proposals_and_says_so(tmp_path):
    import autocompress as ac
    from autocompress.engine.study import Study, study_location

    result = ac.search("flops=0.5", strategy="uniform", objective="cost", max_accuracy_drop=3.0,
                       final_finetune_steps=0, progress=False, out=tmp_path)
    search = [r for r in result.history if r.purpose == SEARCH]
    assert len(search) >= 2 and all(r.candidate == r.proposal for r in search)  # evaluated as proposed
    floor = Study.open(*study_location(tmp_path)).base["proxy_accuracy"] - 3.0
    within = [r for r in search if r.feasible and r.score >= floor]
    assert within, "the demo's budget edge is within 3 points of the base (97.5% against 99.7%)"
    cheapest = min(within, key=lambda r: r.metrics["flops"])
    assert result.recipe.search["objective"] == "cost" and result.recipe.search["best_trial"] == cheapest.number
