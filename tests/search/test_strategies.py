from __future__ import annotations

import functools

import pytest

from autocompress.core.errors import AutocompressError
from autocompress.search import STRATEGIES, get_strategy
from autocompress.testing import StrategySuite

# small internal budgets so the suite runs in seconds
FAST: dict[str, dict] = {
    "greedy": {"ratios": 3},
    "nsga2": {"population_size": 4},
    "genetic": {"population": 3, "elite": 1, "tournament": 2, "generations": 1, "rerank": 1, "batch_size": 4,
                "scan_levels": 1},
    "condensa": {"scan_levels": 1, "candidates": 128},
    "haloc": {"candidates": 2, "steps": 1},
}

# the suite's problem for strategies that channels alone give nothing to search
KINDS: dict[str, tuple[str, ...]] = {"haloc": ("rank",)}


@pytest.fixture(params=sorted(STRATEGIES))
def strategy_name(request):
    return request.param


@pytest.fixture
def strategy_factory(strategy_name):
    return lambda seed: get_strategy(strategy_name, seed=seed, **FAST.get(strategy_name, {}))


@functools.cache
def _problem(kinds: tuple[str, ...]):
    return StrategySuite.problem(kinds, StrategySuite.budget)


class TestEveryStrategy(StrategySuite):
    @pytest.fixture
    def channel_problem(self, strategy_name):
        return _problem(KINDS.get(strategy_name, StrategySuite.kinds))


@pytest.fixture(scope="module")
def problem():
    return StrategySuite.problem(("channels",))


def test_seeds_differ(problem):
    suite = StrategySuite()
    a = suite.simulate(get_strategy("random", seed=1), problem, 3)
    b = suite.simulate(get_strategy("random", seed=2), problem, 3)
    assert a[0].proposal != b[0].proposal


def test_uniform_proposes_once(problem):
    assert len(StrategySuite().simulate(get_strategy("uniform"), problem, 5)) == 1


def test_bo_learns_toward_better_scores(problem):
    history = StrategySuite().simulate(get_strategy("bo", seed=0), problem, 30)
    early = max(r.score for r in history[1:9])
    late = max(r.score for r in history[9:])
    assert late >= early


def test_unknown_strategy_is_named():
    with pytest.raises(AutocompressError, match="'annealing'"):
        get_strategy("annealing")


def test_the_pareto_objective_keeps_proposals_that_fit(problem):
    """As the engine does (``core.projection.candidate_for``): search proposals within the
    budget are evaluated as proposed under the pareto objective, projected otherwise."""
    from dataclasses import replace

    pareto = replace(problem, objective="pareto")
    kept = StrategySuite().simulate(get_strategy("random", seed=4), pareto, 6)
    projected = StrategySuite().simulate(get_strategy("random", seed=4), problem, 6)
    fitting = [r for r in kept if problem.space.candidate_cost(r.proposal)["flops"] <= problem.limits["flops"]]
    assert fitting and all(r.candidate == r.proposal for r in fitting)
    assert all(r.candidate != r.proposal for r in projected)
