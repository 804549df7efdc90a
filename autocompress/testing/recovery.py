"""``RecoverySuite``: what every recovery regime guarantees."""
from __future__ import annotations

import itertools

import pytest
import torch

from ..compress import bake, restructure, weight_constraints
from ..core.errors import AutocompressError
from ..core.patterns import zeroed_weights
from ..core.recipe import Recipe
from ..evaluators.recovery import RECOVERIES, TrainingRun, get_recovery


class RecoverySuite:
    """What every recovery regime guarantees (``evaluators.recovery.Recovery``'s
    contract), on the demo model and its digits data.

    Subclass it in a pytest module and set ``name`` (the regime's registered name) and
    ``params`` (its options for these tests, e.g. fewer stages); ``steps`` is the number
    of regime steps the convergence test trains, ``distance_ratio`` the share of the
    initial distance to the constraints it must be under afterwards (regularisers that
    only shrink what the masks drop may set it closer to 1; None for a regime that trains
    nothing before the constraints, such as ``distill``).  The recipe of every test
    keeps ``density`` of each layer's weights (unstructured) and quantises every layer
    to ``bits``.
    """

    name = ""
    params: dict = {}
    steps = 40
    distance_ratio = 0.9
    density = 0.2
    bits = 8

    @pytest.fixture(scope="class")
    def workload(self):
        from ..models.workload import load_workload

        return load_workload()

    def layers(self, workload) -> dict:
        from ..spaces import build_space

        space = build_space(workload.model, workload.example_input).restrict(("sparsity", "bits"))
        candidate = {k.name: self.density if k.kind == "sparsity" else self.bits / 32 for k in space.knobs}
        return space, space.resolve(candidate)

    def recovery(self, steps: int = 30, **changes) -> dict:
        return {"calibration_batches": 2, "finetune_steps": steps, "lr": 1e-3, "temperature": 4.0, "seed": 0,
                "method": self.name, "params": dict(self.params), **changes}

    def regime(self):
        return get_recovery(self.name, **self.params)

    def test_it_is_registered_and_rebuilds_from_its_params(self):
        assert RECOVERIES[self.name].name == self.name
        regime = self.regime()
        params = regime.get_params()
        assert type(regime)(**params).get_params() == params
        assert 0.0 <= regime.share <= 1.0
        first, rest = regime.split(100)
        assert first + rest == 100 and first == round(regime.share * 100)

    def test_an_unknown_option_is_one_clear_error(self):
        with pytest.raises(AutocompressError, match=self.name):
            get_recovery(self.name, no_such_option=1)

    def test_training_moves_the_weights_towards_the_constraints(self, workload):
        space, layers = self.layers(workload)
        model = restructure(workload.model, space, layers, workload.example_input)
        constraints = weight_constraints(model, space, layers)
        assert constraints, "the recipe constrains no weight"
        before = sum(c.distance() for c in constraints) / len(constraints)
        run = TrainingRun(workload.model, workload.train, self.steps, seed=0)
        self.regime().train(model.train(), constraints, run)
        after = sum(c.distance() for c in constraints) / len(constraints)
        if self.distance_ratio is None:
            assert after == before
        else:
            assert after < self.distance_ratio * before, (before, after)
        assert not any(m._forward_hooks or m._forward_pre_hooks or hasattr(m, "parametrizations")
                       for m in model.modules()), "the regime left a hook or parametrization on the model"

    def test_the_constraints_hold_exactly_after_recovery(self, workload):
        from ..engine.evaluation import compress_and_recover

        space, layers = self.layers(workload)
        model = bake(compress_and_recover(workload, space, layers, self.recovery()))
        for constraint in weight_constraints(model, space, layers):
            w = constraint.weight.detach()
            torch.testing.assert_close(constraint.project(w), w, rtol=0, atol=1e-6, msg=constraint.name)
            if "sparsity" in constraint.kinds:
                rows = w.shape[0]
                zeroed = zeroed_weights(rows, w.numel() // rows, constraint.sparsity, constraint.pattern)
                assert int((w == 0).sum()) >= zeroed, constraint.name

    def test_it_is_reproducible_with_a_seed(self, workload):
        from ..engine.evaluation import compress_and_recover

        space, layers = self.layers(workload)
        first = bake(compress_and_recover(workload, space, layers, self.recovery())).state_dict()
        second = bake(compress_and_recover(workload, space, layers, self.recovery())).state_dict()
        assert first.keys() == second.keys()
        for key in first:
            assert torch.equal(first[key], second[key]), key

    def test_an_interrupted_training_fails_and_leaves_no_hook(self, workload):
        if self.distance_ratio is None:
            pytest.skip(f"{self.name} trains nothing before the constraints")
        space, layers = self.layers(workload)
        model = restructure(workload.model, space, layers, workload.example_input)

        class Interrupted(RuntimeError):
            pass

        def batches():
            yield from itertools.islice(workload.train, 3)
            raise Interrupted("the data stopped")

        class Once:
            def __iter__(self):
                return batches()

        run = TrainingRun(workload.model, Once(), self.steps, seed=0)
        with pytest.raises(Interrupted):
            self.regime().train(model.train(), weight_constraints(model, space, layers), run)
        assert not any(m._forward_hooks or m._forward_pre_hooks or hasattr(m, "parametrizations")
                       for m in model.modules())

    def test_it_replays_from_a_recipe(self, workload, tmp_path):
        from ..engine.recipes import replay

        space, layers = self.layers(workload)
        recipe = Recipe(model={"name": "demo", "fingerprint": workload.fingerprint}, budget=["params=0.5"],
                        layers=layers, recovery=self.recovery())
        path = tmp_path / "recipe.yaml"
        recipe.save(path)
        loaded = Recipe.load(path)
        assert loaded.recovery.get("method", "distill") == self.name
        model, metrics = replay(workload, loaded)
        again, _ = replay(workload, loaded)
        assert metrics["accuracy"] > 0
        for key, value in model.state_dict().items():
            assert torch.equal(value, again.state_dict()[key]), key
