"""Reusable test suites for extension points (in the manner of ``optuna.testing``).

``OperatorSuite``: subclass it in a pytest module, set ``kinds`` (the knob kinds that
drive your operator) and ``space_options`` (``build_space`` keyword arguments), and
provide a ``model_and_input`` fixture returning ``(model, example_input)``; every test
below then runs for your operator on that model.
"""
from __future__ import annotations

import copy
import random
from typing import Any

import torch
import torch.nn as nn

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
                torch.testing.assert_close(loaded(batch), small(batch), rtol=1e-4, atol=1e-5)
