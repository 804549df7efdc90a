from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from autocompress.core.errors import AutocompressError
from autocompress.core.trial import COMPLETE, SCAN, SEARCH, TrialRecord
from autocompress.search import as_proposal, get_strategy
from autocompress.search._condensa import CondensaStrategy, level_set_acquisition
from autocompress.testing import StrategySuite

TOLERATED = 0.2  # the synthetic model loses exactly the tolerated drop at 0.2 of the budget's FLOPs


@pytest.fixture(scope="module")
def problem():
    return StrategySuite.problem(("channels",))


@pytest.fixture(scope="module")
def cost_problem(problem):
    return replace(problem, objective="cost")


def synthetic_score(problem, candidate):
    """Proxy accuracy that falls with log-FLOPs past the budget: the floor is crossed at
    TOLERATED times the FLOPs limit, and the budget itself loses nothing."""
    limit = problem.limits["flops"]
    cost = problem.space.candidate_cost(candidate)["flops"]
    drop = problem.max_accuracy_drop * max(0.0, math.log(limit / cost)) / math.log(1 / TOLERATED)
    return problem.base_score - drop


def allocation_score(problem, candidate):
    """Proxy accuracy that rewards staying near the budget's FLOPs and keeping the first
    knobs denser than the others (so the allocation at the budget's edge matters)."""
    limit = problem.limits["flops"]
    cost = problem.space.candidate_cost(candidate)["flops"]
    return StrategySuite.score(candidate) - 3.0 * max(0.0, math.log(limit / cost))


def run(strategy, problem, trials, history=None, score=synthetic_score):
    """Evaluate proposals as asked (every condensa proposal already meets the budget)."""
    history = list(history or [])
    while sum(r.purpose == SEARCH for r in history) < trials:
        proposal = as_proposal(strategy.ask(problem, history), problem.space)
        costs = problem.space.candidate_cost(proposal.values)
        feasible = all(costs[m] <= limit for m, limit in problem.limits.items())
        history.append(TrialRecord(len(history), COMPLETE, proposal.values, proposal.values,
                                   score(problem, proposal.values), feasible, costs, purpose=proposal.purpose))
    return history


def test_acquisition_prefers_uncertain_points_near_the_threshold():
    mu = np.array([90.0, 90.0, 95.0, 85.0])
    sigma = np.array([2.0, 0.5, 2.0, 2.0])
    scores = level_set_acquisition(mu, sigma, 90.0, 0.5)
    assert np.argmax(scores) == 0
    assert scores[0] > scores[1] and scores[0] > scores[2] and scores[2] == scores[3]
    assert np.argmax(level_set_acquisition(mu, sigma, 95.0, 0.5)) == 2
    assert np.allclose(level_set_acquisition(mu, sigma, 90.0, 0.0), 0.0 + sigma)


@pytest.mark.parametrize("objective", ["accuracy", "cost"])
def test_every_search_proposal_already_meets_the_budget(problem, objective):
    history = run(CondensaStrategy(seed=0, scan_levels=1, candidates=128), replace(problem, objective=objective), 8)
    search = [r for r in history if r.purpose == SEARCH]
    assert len(search) == 8 and all(r.feasible for r in search)
    assert any(r.purpose == SCAN for r in history) and history[0].purpose == SCAN


def test_serves_every_objective():
    assert set(CondensaStrategy.objectives) == {"accuracy", "pareto", "cost"}


def test_under_the_cost_objective_finds_the_most_compressed_setting_above_the_floor(cost_problem):
    problem = cost_problem
    strategy = CondensaStrategy(seed=0, scan_levels=1, candidates=256)
    history = run(strategy, problem, 15)
    best = strategy.best(problem, history)
    assert best.score >= problem.accuracy_floor
    # the floor is crossed at 0.2 of the FLOPs limit; the search gets within 1.5x of it
    assert best.metrics["flops"] <= 1.5 * TOLERATED * problem.limits["flops"]
    levels = [strategy.level_of(problem, r.candidate) for r in history if r.purpose == SEARCH]
    assert max(levels) > 0.3 and min(levels) < 0.05  # it started at the budget and went past it


def test_under_the_accuracy_objective_returns_the_most_accurate_trial_near_the_budget(problem):
    strategy = CondensaStrategy(seed=0, scan_levels=1, candidates=256)
    history = run(strategy, problem, 15, score=allocation_score)
    search = [r for r in history if r.purpose == SEARCH]
    best = strategy.best(problem, history)
    assert best.score == max(r.score for r in search if r.feasible)
    assert best.metrics["flops"] >= 0.9 * problem.limits["flops"]  # accuracy is best near the budget's edge
    # after the level set (the first 3 + 6 trials), it exploits the budget's edge: no proposal goes far under it
    stage2 = search[strategy.init_points + strategy.level_set_trials:]
    assert stage2 and all(strategy.level_of(problem, r.candidate) < 0.05 for r in stage2)
    assert best.score > search[0].score  # it found a better allocation than the first (strength 1) at the edge
    # the same history under the cost objective: nothing reaches the floor, so the same most accurate trial
    assert strategy.best(replace(problem, objective="cost"), history).number == best.number


def test_resumes_with_the_same_proposals(problem):
    first = run(CondensaStrategy(seed=2, scan_levels=1, candidates=128), problem, 11)
    cut = len(first) - 3
    resumed = run(CondensaStrategy(seed=2, scan_levels=1, candidates=128), problem, 11, history=first[:cut])
    assert [r.proposal for r in resumed] == [r.proposal for r in first]


def _trial(number, score, flops, feasible=True, purpose=SEARCH):
    return TrialRecord(number, COMPLETE, {}, {}, score, feasible, {"flops": flops}, purpose=purpose)


def _trials(floor):
    return [
        _trial(0, floor + 0.9, 2e6),
        _trial(1, floor + 0.1, 1e6),
        _trial(2, floor + 0.5, 1e6),  # as cheap as 1, more accurate
        _trial(3, floor - 0.1, 1e5),  # cheaper, below the floor
        _trial(4, floor + 1.0, 1e4, feasible=False),
        _trial(5, floor + 1.0, 1e4, purpose=SCAN),
    ]


def test_best_is_the_cheapest_trial_above_the_floor_under_the_cost_objective(cost_problem):
    assert CondensaStrategy().best(cost_problem, _trials(cost_problem.accuracy_floor)).number == 2


def test_best_is_the_most_accurate_feasible_trial_under_the_accuracy_objective(problem):
    assert CondensaStrategy().best(problem, _trials(problem.accuracy_floor)).number == 0


def test_best_falls_back_to_the_highest_score(cost_problem):
    floor = cost_problem.accuracy_floor
    history = [_trial(0, floor - 3, 1e6), _trial(1, floor - 1, 2e6), _trial(2, floor - 2, 1e5)]
    assert CondensaStrategy().best(cost_problem, history).number == 1


def test_bad_options_are_named():
    with pytest.raises(AutocompressError, match="g=1.5"):
        get_strategy("condensa", g=1.5)
    with pytest.raises(AutocompressError, match="init_points=0"):
        get_strategy("condensa", init_points=0)
