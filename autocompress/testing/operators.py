"""``OperatorSuite``: what every compression kind and its operator guarantee."""
from __future__ import annotations

import copy
import random
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import torch
import torch.nn as nn

from ..compress import bake
from ..compress.export import export_model
from ..core.kinds import Kind, get_kind, kind_names, register_kind, unregister_kind
from ..core.space import Space
from ..evaluators import measure_costs
from ..spaces import build_space


class OperatorSuite:
    """What every compression kind guarantees, checked for its operator alone on one model
    at a time.

    Subclass it in a pytest module, set ``kind`` (a ``core.kinds.Kind``, or the name of a
    registered one) and ``space_options`` (``build_space`` keyword arguments), and
    provide a ``model_and_input`` fixture returning ``(model, example_input)``.  A kind
    not registered yet is registered for each test and removed after it.  The space is
    restricted to the kind's knobs; ``compress`` below runs the kind's operator only.
    """

    kind: Kind | str = ""
    space_options: dict[str, Any] = {}
    seeds: tuple[int, ...] = (0, 1)

    @pytest.fixture(autouse=True)
    def _kind_registered(self) -> Iterator[None]:
        kind = self.kind
        added = isinstance(kind, Kind) and kind.name not in kind_names()
        if added:
            register_kind(kind)
        try:
            yield
        finally:
            if added:
                unregister_kind(kind.name)

    def the_kind(self) -> Kind:
        return get_kind(self.kind) if isinstance(self.kind, str) else self.kind

    def space(self, model: nn.Module, example: torch.Tensor) -> Space:
        return build_space(model, example, **self.space_options).restrict((self.the_kind().name,))

    def compress(self, model: nn.Module, space: Space, settings: Mapping[str, Mapping[str, Any]],
                 example: torch.Tensor) -> nn.Module:
        """A copy of ``model`` with the kind's operator applied where it is needed."""
        space.shapes(settings)
        small = copy.deepcopy(model).eval()
        operator = self.the_kind().operator
        if operator.needed(settings, space):
            operator.apply(small, space, settings, example)
        return small

    def candidate(self, space: Space, seed: int) -> dict[str, float]:
        rng = random.Random(seed)
        return {k.name: rng.uniform(k.low, (k.low + k.high) / 2) for k in space.knobs}

    def _batch(self, example: torch.Tensor, n: int = 3) -> torch.Tensor:
        return torch.randn(n, *example.shape[1:], generator=torch.Generator().manual_seed(0))

    def test_the_space_has_knobs_of_this_kind(self, model_and_input):
        model, example = model_and_input
        assert self.space(model, example).knobs, f"no {self.the_kind().name} knob on this model"

    def test_neutral_settings_are_not_needed_and_change_nothing(self, model_and_input):
        model, example = model_and_input
        space = self.space(model, example)
        settings = space.resolve(space.neutral())
        operator = self.the_kind().operator
        assert not operator.needed(settings, space)
        small = copy.deepcopy(model).eval()
        operator.apply(small, space, settings, example)
        batch = self._batch(example)
        with torch.no_grad():
            assert torch.equal(small(batch), model(batch))

    def test_costs_are_what_the_space_predicts_and_lower(self, model_and_input):
        model, example = model_and_input
        space = self.space(model, example)
        base = measure_costs(model, example)
        for seed in self.seeds:
            settings = space.resolve(self.candidate(space, seed))
            assert self.the_kind().operator.needed(settings, space)
            measured = measure_costs(self.compress(model, space, settings, example), example)
            assert space.cost(settings) == measured
            assert all(measured[m] <= base[m] for m in measured)
            assert any(measured[m] < base[m] for m in measured)

    def test_bake_gives_plain_modules_with_the_same_outputs(self, model_and_input):
        model, example = model_and_input
        space = self.space(model, example)
        small = self.compress(model, space, space.resolve(self.candidate(space, 0)), example)
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
        trained = bake(self.compress(model, space, settings, example))
        with torch.no_grad():
            for p in trained.parameters():
                p.add_(0.01)
        rebuilt = bake(self.compress(model, space, settings, example))
        rebuilt.load_state_dict(trained.state_dict())
        batch = self._batch(example)
        with torch.no_grad():
            assert torch.equal(rebuilt(batch), trained(batch))

    def test_exported_model_loads_and_runs_at_any_batch_size(self, model_and_input, tmp_path):
        model, example = model_and_input
        space = self.space(model, example)
        small = bake(self.compress(model, space, space.resolve(self.candidate(space, 0)), example))
        path = tmp_path / "model.pt2"
        export_model(copy.deepcopy(small), example, path)
        loaded = torch.export.load(str(path)).module()
        for n in (1, 4):
            batch = self._batch(example, n)
            with torch.no_grad():
                # channels-last kernels sum in another order: float rounding, not a different function
                torch.testing.assert_close(loaded(batch), small(batch), rtol=1e-3, atol=2e-4)
