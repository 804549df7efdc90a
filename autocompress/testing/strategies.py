"""``StrategySuite``: what every search strategy guarantees."""
from __future__ import annotations

import pytest

from ..core.budget import parse as parse_budget
from ..spaces import build_space


class StrategySuite:
    """What every search strategy guarantees (``search.base.Strategy``'s contract).

    Scores are synthetic (a smooth function of the candidate, so a strategy that learns
    has something to learn), trials are simulated as the engine runs them (search
    proposals repaired onto the budget, scans evaluated as given), and the problem is
    the demo model at ``budget`` with the knob kinds in ``kinds``.
    """

    budget = "flops=0.5"
    kinds: tuple[str, ...] = ("channels",)
    mixed_kinds: tuple[str, ...] = ("channels", "sparsity", "rank", "bits")
    trials = 8  # search trials per simulated run (scans come on top)

    @staticmethod
    def problem(kinds: tuple[str, ...], budget: str = "flops=0.5"):
        from ..engine.evaluation import base_metrics, limits_for
        from ..evaluators import accuracy
        from ..models.workload import load_workload
        from ..search import Problem

        workload = load_workload()
        space = build_space(workload.model, workload.example_input).restrict(kinds)
        base = base_metrics(workload)
        limits = limits_for(parse_budget(budget), base)
        return Problem(space, limits, base, base_score=accuracy(workload.model, workload.val), max_accuracy_drop=1.0,
                       objective="accuracy", workload=workload,
                       recovery={"calibration_batches": 2, "finetune_steps": 0, "lr": 1e-4, "temperature": 4.0,
                                 "seed": 0})

    @staticmethod
    def score(candidate: dict[str, float]) -> float:
        """Synthetic proxy accuracy: rewards density, more on the first knobs."""
        values = list(candidate.values())
        return 50.0 + 50.0 * sum(v * (1 + 1 / (i + 1)) for i, v in enumerate(values)) / sum(
            1 + 1 / (i + 1) for i in range(len(values)))

    def simulate(self, strategy, problem, trials: int, fail_every: int = 0, history=None, max_asks: int = 400):
        """Run ``strategy`` as the engine would until ``trials`` search trials finished
        (proposals kept, repaired or grown by the engine's rule, ``core.projection.candidate_for``,
        with the proposal's preference, else the scans')."""
        from ..core.projection import candidate_for
        from ..core.trial import COMPLETE, FAILED, SCAN, TrialRecord
        from ..search import as_proposal
        from ..search.sensitivity import repair_preference

        history = list(history or [])
        done = sum(r.state == COMPLETE and r.purpose != SCAN for r in history)
        for _ in range(max_asks):
            if done >= trials:
                break
            proposal = as_proposal(strategy.ask(problem, history), problem.space)
            if proposal is None:
                break
            keep = problem.objective != "accuracy" or strategy.keeps_feasible
            preference = proposal.preference or repair_preference(problem.space, history, problem.base_score)
            candidate = candidate_for(problem.space, proposal.values, problem.limits, proposal.purpose, keep,
                                      preference=preference or None)
            number = len(history)
            if fail_every and number % fail_every == 0:
                record = TrialRecord(number, FAILED, proposal.values, candidate, error="RuntimeError: simulated",
                                     purpose=proposal.purpose, channel_order=proposal.channel_order)
            else:
                costs = problem.space.candidate_cost(candidate)
                feasible = all(costs[m] <= v for m, v in problem.limits.items())
                record = TrialRecord(number, COMPLETE, proposal.values, candidate, self.score(candidate), feasible,
                                     costs, purpose=proposal.purpose, channel_order=proposal.channel_order)
                done += proposal.purpose != SCAN
            history.append(record)
            strategy.tell(problem, record)
        return history

    @pytest.fixture(scope="class")
    def channel_problem(self):
        return self.problem(self.kinds, self.budget)

    @pytest.fixture(scope="class")
    def mixed_problem(self):
        return self.problem(self.mixed_kinds, self.budget)

    def _check_inside(self, problem, history):
        assert any(r.purpose == "search" for r in history), "the strategy proposed no search trial"
        for record in history:
            assert set(record.proposal) == set(problem.space.knob_names)
            for name, value in record.proposal.items():
                knob = problem.space.knob(name)
                assert knob.low <= value <= knob.high, f"{name}={value} outside [{knob.low}, {knob.high}]"
            for group, order in record.channel_order.items():
                size = next(g.size for g in problem.space.groups if g.name == group)
                assert len(set(order)) == len(order) and all(0 <= i < size for i in order)

    def test_stays_inside_the_space(self, strategy_factory, channel_problem):
        history = self.simulate(strategy_factory(0), channel_problem, self.trials)
        self._check_inside(channel_problem, history)

    def test_handles_mixed_knobs(self, strategy_factory, mixed_problem):
        assert {k.kind for k in mixed_problem.space.knobs} >= {"channels", "sparsity", "bits"}
        history = self.simulate(strategy_factory(0), mixed_problem, self.trials)
        self._check_inside(mixed_problem, history)

    def test_reproducible_with_a_seed(self, strategy_factory, channel_problem):
        first = self.simulate(strategy_factory(3), channel_problem, self.trials)
        again = self.simulate(strategy_factory(3), channel_problem, self.trials)
        assert [(r.proposal, r.channel_order) for r in first] == [(r.proposal, r.channel_order) for r in again]

    def test_survives_failed_trials(self, strategy_factory, channel_problem):
        history = self.simulate(strategy_factory(1), channel_problem, self.trials, fail_every=3)
        assert any(r.state == "failed" for r in history)
        assert any(r.state == "complete" and r.purpose == "search" for r in history)
        self._check_inside(channel_problem, history)

    def test_resumes_from_a_stored_history(self, strategy_factory, channel_problem):
        first = self.simulate(strategy_factory(5), channel_problem, self.trials)
        for cut in sorted({1, len(first) // 2, len(first) - 1}):
            if 0 < cut < len(first):
                resumed = self.simulate(strategy_factory(5), channel_problem, self.trials, history=first[:cut])
                assert [(r.proposal, r.channel_order) for r in resumed] == \
                    [(r.proposal, r.channel_order) for r in first], f"resumed after {cut} trials, went another way"

    def test_rebuilds_from_its_parameters(self, strategy_factory):
        """``get_params`` gives the constructor's keyword arguments as JSON-able data, and
        they rebuild the same strategy (how a search stores it)."""
        import json

        strategy = strategy_factory(2)
        params = strategy.get_params()
        assert params["seed"] == 2 and json.loads(json.dumps(params)) == params
        assert type(strategy)(**params).get_params() == params

    def test_best_is_a_feasible_search_trial(self, strategy_factory, channel_problem):
        strategy = strategy_factory(0)
        history = self.simulate(strategy, channel_problem, self.trials)
        best = strategy.best(channel_problem, history)
        assert best is not None and best.feasible and best.purpose == "search" and best.state == "complete"
