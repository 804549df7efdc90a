from __future__ import annotations

import optuna
import pytest

from autocompress.core.projection import fits, project
from autocompress.search import get_strategy
from autocompress.search._greedy import accuracy_curves, greedy_threshold, pick
from autocompress.search._nsga2 import _GENERATION_KEY, _generation
from autocompress.testing import StrategySuite


class SensitiveFirst(StrategySuite):
    """Synthetic proxy accuracy: the first knob costs 60 points when fully pruned, the
    others 4 points each."""

    @staticmethod
    def score(candidate: dict[str, float]) -> float:
        values = list(candidate.values())
        return 100.0 - 60.0 * (1.0 - values[0]) - sum(4.0 * (1.0 - v) for v in values[1:])


@pytest.fixture(scope="module")
def problem():
    return StrategySuite.problem(("channels",), "flops=0.5")


def _search_records(history):
    return [r for r in history if r.purpose == "search"]


def test_greedy_scans_then_meets_the_budget_sparing_the_sensitive_knob(problem):
    space, limit = problem.space, problem.limits["flops"]
    history = SensitiveFirst().simulate(get_strategy("greedy", ratios=5), problem, 2)
    scans = [r for r in history if r.purpose == "scan"]
    assert len(scans) >= len(space.knobs) * 3  # every knob at several ratios before any search trial
    assert history.index(scans[-1]) < history.index(_search_records(history)[0])
    first = _search_records(history)[0].proposal
    assert fits(space, first, problem.limits)
    assert space.candidate_cost(first)["flops"] >= 0.6 * limit
    sensitive, *others = space.knob_names
    assert all(first[sensitive] > first[name] for name in others), first


def test_greedy_threshold_is_the_highest_that_fits(problem):
    space = problem.space
    history = SensitiveFirst().simulate(get_strategy("greedy", ratios=5), problem, 1)
    curves = accuracy_curves(space, history, problem.base_score)
    for curve in curves.values():  # densest first, accuracy never rising as density falls
        assert [d for d, _ in curve] == sorted((d for d, _ in curve), reverse=True)
        assert all(a >= b for (_, a), (_, b) in zip(curve, curve[1:]))
    threshold = greedy_threshold(space, curves, problem.limits)
    assert fits(space, pick(curves, threshold), problem.limits)
    higher = sorted({s for c in curves.values() for _, s in c if s > threshold})
    assert higher and not any(fits(space, pick(curves, t), problem.limits) for t in higher)
    smooth = pick(curves, greedy_threshold(space, curves, problem.limits, interpolate=True), interpolate=True)
    assert fits(space, smooth, problem.limits)
    assert space.candidate_cost(smooth)["flops"] >= space.candidate_cost(pick(curves, threshold))["flops"]


def test_greedy_tries_a_few_distinct_variations_then_stops(problem):
    history = SensitiveFirst().simulate(get_strategy("greedy", ratios=3, variations=4), problem, 50)
    proposals = [r.proposal for r in _search_records(history)]
    assert 2 <= len(proposals) <= 4
    assert len({tuple(sorted(p.items())) for p in proposals}) == len(proposals)


def test_nsga2_generations_match_the_samplers_own():
    """The rebuilt study gives each trial the generation NSGA-II gave it when asked."""
    distributions = {"x": optuna.distributions.FloatDistribution(0, 1)}
    study = optuna.create_study(directions=["maximize", "minimize"],
                                sampler=optuna.samplers.NSGAIISampler(seed=0, population_size=3))
    counts: dict[int, int] = {}
    for i in range(11):
        trial = study.ask(distributions)
        expected = _generation(counts, 3)
        if i % 4 == 3:
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            x = trial.params["x"]
            study.tell(trial, [x, 1 - x])
            counts[expected] = counts.get(expected, 0) + 1
        assert study.trials[-1].system_attrs[_GENERATION_KEY] == expected, i
    assert max(counts) >= 2


def test_nsga2_spreads_over_costs_within_the_budget(problem):
    """As the pareto objective runs it (proposals within the budget kept), the trials
    cover a wide range of costs, not only the budget's edge."""
    from autocompress.core.trial import TrialRecord

    strategy, space, suite = get_strategy("nsga2", seed=0, population_size=4), problem.space, StrategySuite()
    history = []
    for number in range(12):
        proposal = strategy.ask(problem, history)
        candidate = proposal if fits(space, proposal, problem.limits) else project(space, proposal, problem.limits)
        costs = space.candidate_cost(candidate)
        history.append(TrialRecord(number, "complete", dict(proposal), candidate, suite.score(candidate),
                                   costs["flops"] <= problem.limits["flops"], costs))
    flops = [r.metrics["flops"] for r in history]
    assert max(flops) <= problem.limits["flops"]
    assert max(flops) >= 1.5 * min(flops)
    assert len({round(f) for f in flops}) >= 6
