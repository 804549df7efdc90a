"""Reusable test suites for extension points (in the manner of ``optuna.testing``).

``StrategySuite``: subclass it and provide a ``strategy_factory`` fixture returning a
callable ``seed -> Strategy``; every test below then checks that strategy on the demo
model (a real space and workload, synthetic scores so it runs in seconds).

``OperatorSuite``: subclass it in a pytest module, set ``kinds`` (the knob kinds that
drive your operator) and ``space_options`` (``build_space`` keyword arguments), and
provide a ``model_and_input`` fixture returning ``(model, example_input)``; every test
below then runs for your operator on that model.
"""
from __future__ import annotations

import copy
import random
from typing import Any

import pytest
import torch
import torch.nn as nn

from .budget import parse as parse_budget
from .compress import bake, compress
from .engine import export_model
from .evaluators import measure_costs
from .space import Space
from .spaces import build_space


class OperatorSuite:
    """What every compression operator guarantees, checked on one model at a time."""

    kinds: tuple[str, ...] = ()
    space_options: dict[str, Any] = {}
    seeds: tuple[int, ...] = (0, 1)

    def space(self, model: nn.Module, example: torch.Tensor) -> Space:
        return build_space(model, example, **self.space_options).restrict(self.kinds)

    def candidate(self, space: Space, seed: int) -> dict[str, float]:
        rng = random.Random(seed)
        return {k.name: rng.uniform(k.low, (k.low + k.high) / 2) for k in space.knobs}

    def _batch(self, example: torch.Tensor, n: int = 3) -> torch.Tensor:
        return torch.randn(n, *example.shape[1:], generator=torch.Generator().manual_seed(0))

    def test_the_space_has_knobs_of_these_kinds(self, model_and_input):
        model, example = model_and_input
        assert self.space(model, example).knobs, f"no {'/'.join(self.kinds)} knob on this model"

    def test_neutral_setting_gives_identical_outputs(self, model_and_input):
        model, example = model_and_input
        space = self.space(model, example)
        small = compress(model, space, space.resolve(space.neutral()), example)
        batch = self._batch(example)
        with torch.no_grad():
            assert torch.equal(small(batch), model(batch))

    def test_costs_are_what_the_space_predicts_and_lower(self, model_and_input):
        model, example = model_and_input
        space = self.space(model, example)
        base = measure_costs(model, example)
        for seed in self.seeds:
            settings = space.resolve(self.candidate(space, seed))
            small = compress(model, space, settings, example)
            measured = measure_costs(small, example)
            assert space.cost(settings) == measured
            assert all(measured[m] <= base[m] for m in measured)
            assert any(measured[m] < base[m] for m in measured)

    def test_bake_gives_plain_modules_with_the_same_outputs(self, model_and_input):
        model, example = model_and_input
        space = self.space(model, example)
        small = compress(model, space, space.resolve(self.candidate(space, 0)), example)
        batch = self._batch(example)
        with torch.no_grad():
            attached = small(batch)
            baked = bake(small)(batch)
        assert not any(hasattr(m, "parametrizations") for m in small.modules())
        torch.testing.assert_close(baked, attached, rtol=1e-5, atol=1e-5)
        assert baked.shape == model(batch).shape

    def test_state_dict_round_trips_into_a_rebuilt_model(self, model_and_input):
        model, example = model_and_input
        space = self.space(model, example)
        settings = space.resolve(self.candidate(space, 1))
        trained = bake(compress(model, space, settings, example))
        with torch.no_grad():
            for p in trained.parameters():
                p.add_(0.01)
        rebuilt = bake(compress(model, space, settings, example))
        rebuilt.load_state_dict(trained.state_dict())
        batch = self._batch(example)
        with torch.no_grad():
            assert torch.equal(rebuilt(batch), trained(batch))

    def test_exported_model_loads_and_runs_at_any_batch_size(self, model_and_input, tmp_path):
        model, example = model_and_input
        space = self.space(model, example)
        small = bake(compress(model, space, space.resolve(self.candidate(space, 0)), example))
        path = tmp_path / "model.pt2"
        export_model(copy.deepcopy(small), example, path)
        loaded = torch.export.load(str(path)).module()
        for n in (1, 4):
            batch = self._batch(example, n)
            with torch.no_grad():
                # channels-last kernels sum in another order: float rounding, not a different function
                torch.testing.assert_close(loaded(batch), small(batch), rtol=1e-3, atol=2e-4)


class StrategySuite:
    """What every search strategy guarantees (``search.base.Strategy``'s contract).

    Scores are synthetic (a smooth function of the candidate, so a strategy that learns
    has something to learn), trials are simulated as the engine runs them (search
    proposals projected onto the budget, scans evaluated as given), and the problem is
    the demo model at ``budget`` with the knob kinds in ``kinds``.
    """

    budget = "flops=0.5"
    kinds: tuple[str, ...] = ("channels",)
    mixed_kinds: tuple[str, ...] = ("channels", "sparsity", "rank", "bits")
    trials = 8  # search trials per simulated run (scans come on top)

    @staticmethod
    def problem(kinds: tuple[str, ...], budget: str = "flops=0.5"):
        from .engine import base_metrics, limits_for
        from .evaluators import accuracy
        from .search import Problem
        from .workload import load_workload

        workload = load_workload()
        space = build_space(workload.model, workload.example_input).restrict(kinds)
        base = base_metrics(workload)
        limits = limits_for(parse_budget(budget), base)
        return Problem(space, limits, base, accuracy(workload.model, workload.val), 1.0, "accuracy", workload,
                       {"calibration_batches": 2, "finetune_steps": 0, "lr": 1e-4, "temperature": 4.0, "seed": 0})

    @staticmethod
    def score(candidate: dict[str, float]) -> float:
        """Synthetic proxy accuracy: rewards density, more on the first knobs."""
        values = list(candidate.values())
        return 50.0 + 50.0 * sum(v * (1 + 1 / (i + 1)) for i, v in enumerate(values)) / sum(
            1 + 1 / (i + 1) for i in range(len(values)))

    def simulate(self, strategy, problem, trials: int, fail_every: int = 0, history=None, max_asks: int = 400):
        """Run ``strategy`` as the engine would until ``trials`` search trials finished."""
        from .search import as_proposal, project
        from .trial import COMPLETE, FAILED, SCAN, TrialRecord

        history = list(history or [])
        done = sum(r.state == COMPLETE and r.purpose != SCAN for r in history)
        for _ in range(max_asks):
            if done >= trials:
                break
            proposal = as_proposal(strategy.ask(problem, history), problem.space)
            if proposal is None:
                break
            from .search.projection import fits

            keep = proposal.purpose == SCAN or (strategy.keeps_feasible and fits(
                problem.space, proposal.values, problem.limits))
            candidate = proposal.values if keep else project(problem.space, proposal.values, problem.limits)
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

    def test_best_is_a_feasible_search_trial(self, strategy_factory, channel_problem):
        strategy = strategy_factory(0)
        history = self.simulate(strategy, channel_problem, self.trials)
        best = strategy.best(channel_problem, history)
        assert best is not None and best.feasible and best.purpose == "search" and best.state == "complete"


class LatencyModelSuite:
    """What every latency model guarantees.  Subclass it and provide a
    ``latency_model`` fixture; the ops are the demo model's, plain, pruned, low-rank,
    sparse and 8-bit, and the attention products of the zoo's ViT, all heads and half.
    ``monotone_slack``: a measured model times real kernels on a noisy machine, so it may
    predict twice the work up to that fraction faster; analytic and learned models get
    none."""

    monotone_slack = 0.0

    @pytest.fixture(scope="class")
    def ops(self):
        from . import zoo
        from .demo import DemoNet
        from .ops import space_ops

        model, x = DemoNet().eval(), torch.randn(1, 1, 8, 8)
        space = build_space(model, x, sparsity_pattern="2:4")
        everything = []
        for density in (1.0, 0.5, 0.25):
            candidate = {k.name: density for k in space.knobs if k.kind in ("channels",)}
            everything += space_ops(space, space.resolve(candidate))
        ranks = {k.name: 0.5 for k in space.knobs if k.kind == "rank"}
        everything += space_ops(space, space.resolve(ranks))
        sparse = {k.name: 0.5 for k in space.knobs if k.kind in ("sparsity", "bits")}
        everything += space_ops(space, space.resolve(sparse))
        vit = build_space(zoo.vit_tiny().eval(), zoo.example_input("vit_tiny"))
        for density in (1.0, 0.5):
            heads = vit.resolve({k.name: density for k in vit.knobs if k.kind == "channels"})
            everything += [op for op in space_ops(vit, heads) if op.kind == "attention"]
        return everything

    def test_never_negative(self, latency_model, ops):
        for batch in (1, 8):
            assert all(latency_model.predict_op(op, batch) >= 0 for op in ops)

    def test_round_trips_to_the_same_predictions(self, latency_model, ops, tmp_path):
        from .latency_models import load_latency_model

        path = tmp_path / "model.json"
        latency_model.save(path)
        assert "pickle" not in path.read_text()
        again = load_latency_model(path)
        assert [again.predict_op(op, 4) for op in ops] == [latency_model.predict_op(op, 4) for op in ops]

    def test_more_work_is_never_faster(self, latency_model, ops):
        import dataclasses

        for op in ops:
            base = latency_model.predict_op(op, 2)
            # attention: more queries, keys or heads; not a wider head, which CPUs can run
            # faster (on this one 16 features per head beat 8 by up to 34%, BENCHMARKS.md)
            for field in ("m", "n", "groups") if op.kind == "attention" else ("m", "n", "k"):
                bigger = dataclasses.replace(op, **{field: getattr(op, field) * 2})
                assert latency_model.predict_op(bigger, 2) >= base * (1 - self.monotone_slack), \
                    f"{field} x2 predicted faster for {op}"
            assert latency_model.predict_op(op, 4) >= base * (1 - self.monotone_slack)

    def test_report_has_a_row_per_op_and_sums_them(self, latency_model, ops):
        report = latency_model.predict(ops, 2)
        assert len(report.rows) == len(ops)
        assert abs(report.total_ms - sum(latency_model.predict_op(op, 2) for op in ops)) < 1e-9
        assert report.target in report.table()
