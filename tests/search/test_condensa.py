from __future__ import annotations

import math

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


def synthetic_score(problem, candidate):
    """Proxy accuracy that falls with log-FLOPs past the budget: the floor is crossed at
    TOLERATED times the FLOPs limit, and the budget itself loses nothing."""
    limit = problem.limits["flops"]
    cost = problem.space.candidate_cost(candidate)["flops"]
    drop = problem.max_accuracy_drop * max(0.0, math.log(limit / cost)) / math.log(1 / TOLERATED)
    return problem.base_score - drop


def run(strategy, problem, trials, history=None):
    """Evaluate proposals as asked (every condensa proposal already meets the budget)."""
    history = list(history or [])
    while sum(r.purpose == SEARCH for r in history) < trials:
        proposal = as_proposal(strategy.ask(problem, history), problem.space)
        costs = problem.space.candidate_cost(proposal.values)
        feasible = all(costs[m] <= limit for m, limit in problem.limits.items())
        score = synthetic_score(problem, proposal.values)
        history.append(TrialRecord(len(history), COMPLETE, proposal.values, proposal.values, score, feasible, costs,
                                   purpose=proposal.purpose))
    return history


def test_acquisition_prefers_uncertain_points_near_the_threshold():
    mu = np.array([90.0, 90.0, 95.0, 85.0])
    sigma = np.array([2.0, 0.5, 2.0, 2.0])
    scores = level_set_acquisition(mu, sigma, 90.0, 0.5)
    assert np.argmax(scores) == 0
    assert scores[0] > scores[1] and scores[0] > scores[2] and scores[2] == scores[3]
    assert np.argmax(level_set_acquisition(mu, sigma, 95.0, 0.5)) == 2
    assert np.allclose(level_set_acquisition(mu, sigma, 90.0, 0.0), 0.0 + sigma)


def test_every_search_proposal_already_meets_the_budget(problem):
    history = run(CondensaStrategy(seed=0, scan_levels=1, candidates=128), problem, 8)
    search = [r for r in history if r.purpose == SEARCH]
    assert len(search) == 8 and all(r.feasible for r in search)
    assert any(r.purpose == SCAN for r in history) and history[0].purpose == SCAN


def test_finds_the_most_compressed_setting_above_the_floor(problem):
    strategy = CondensaStrategy(seed=0, scan_levels=1, candidates=256)
    history = run(strategy, problem, 15)
    best = strategy.best(problem, history)
    floor = problem.base_score - problem.max_accuracy_drop
    assert best.score >= floor
    # the floor is crossed at 0.2 of the FLOPs limit; the search gets within 1.5x of it
    assert best.metrics["flops"] <= 1.5 * TOLERATED * problem.limits["flops"]
    levels = [strategy.level_of(problem, r.candidate) for r in history if r.purpose == SEARCH]
    assert max(levels) > 0.3 and min(levels) < 0.05  # it started at the budget and went past it


def test_resumes_with_the_same_proposals(problem):
    first = run(CondensaStrategy(seed=2, scan_levels=1, candidates=128), problem, 11)
    cut = len(first) - 3
    resumed = run(CondensaStrategy(seed=2, scan_levels=1, candidates=128), problem, 11, history=first[:cut])
    assert [r.proposal for r in resumed] == [r.proposal for r in first]


def _trial(number, score, flops, feasible=True, purpose=SEARCH):
    return TrialRecord(number, COMPLETE, {}, {}, score, feasible, {"flops": flops}, purpose=purpose)


def test_best_is_the_cheapest_trial_above_the_floor(problem):
    floor = problem.base_score - problem.max_accuracy_drop
    history = [
        _trial(0, floor + 0.9, 2e6),
        _trial(1, floor + 0.1, 1e6),
        _trial(2, floor + 0.5, 1e6),  # as cheap as 1, more accurate
        _trial(3, floor - 0.1, 1e5),  # cheaper, below the floor
        _trial(4, floor + 1.0, 1e4, feasible=False),
        _trial(5, floor + 1.0, 1e4, purpose=SCAN),
    ]
    assert CondensaStrategy().best(problem, history).number == 2


def test_best_falls_back_to_the_highest_score(problem):
    floor = problem.base_score - problem.max_accuracy_drop
    history = [_trial(0, floor - 3, 1e6), _trial(1, floor - 1, 2e6), _trial(2, floor - 2, 1e5)]
    assert CondensaStrategy().best(problem, history).number == 1


def test_bad_options_are_named():
    with pytest.raises(AutocompressError, match="g=1.5"):
        get_strategy("condensa", g=1.5)
    with pytest.raises(AutocompressError, match="init_points=0"):
        get_strategy("condensa", init_points=0)
