"""The projection regimes ``admm``, ``slr`` and ``lc``: they train the dense weights onto
the recipe's constraints (sparsity, rank, ternary bits), reproducibly, and the engine's
hard projection then holds the recipe exactly."""
from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import torch

from autocompress.compress import restructure, weight_constraints
from autocompress.core.errors import AutocompressError
from autocompress.core.patterns import zeroed_weights
from autocompress.engine.evaluation import compress_and_recover
from autocompress.evaluators.recovery import RECOVERIES, TrainingRun, get_recovery
from autocompress.evaluators.recovery._penalty import update_steps
from autocompress.models.workload import load_workload
from autocompress.spaces import build_space
from autocompress.testing import RecoverySuite

STEPS = 100
FAST = {
    "admm": {"rho": 0.3, "stages": 2, "updates": 3, "lr": 1e-2},
    "slr": {"rho": 1.0, "stages": 1, "updates": 5, "lr": 1e-2},
    "lc": {"mu": 0.3, "iterations": 8, "mu_growth": 2.0, "lr": 5e-3},
}
"""Each regime's options for a run of ``STEPS`` (the defaults are sized for epochs): Adam
moves a weight by at most about lr per step, and the zoo's head weights are ~0.4."""
RECIPES = {
    "sparsity": {"fc1/sparsity": 0.1, "fc2/sparsity": 0.1, "head/sparsity": 0.1},
    "rank": {"fc1/rank": 0.2, "fc2/sparsity": 0.1, "head/sparsity": 0.1},
    "ternary": {"fc1/bits": 2 / 32, "fc2/bits": 2 / 32, "head/bits": 2 / 32},
}
"""Knob values (kept fractions): 90% unstructured sparsity on every Linear; fc1 at a
fifth of its rank and the others sparse; every Linear ternary (2 bits)."""


class TestADMM(RecoverySuite):
    name = "admm"
    params = FAST["admm"]


class TestSLR(RecoverySuite):
    name = "slr"
    params = FAST["slr"]


class TestLC(RecoverySuite):
    name = "lc"
    params = FAST["lc"]


@pytest.fixture(scope="module")
def workload():
    return load_workload("autocompress.models.zoo:lenet300_100", data="autocompress.models.zoo:lenet300_100_data")


@pytest.fixture(scope="module")
def space(workload):
    return build_space(workload.model, workload.example_input)


def trained(workload, space, name: str, recipe: str, steps: int = STEPS, **params):
    """The restructured model after ``steps`` of regime ``name`` (``FAST`` options updated
    with ``params``), its constraints, and their mean distance before training."""
    layers = space.resolve(RECIPES[recipe])
    model = restructure(workload.model, space, layers, workload.example_input)
    constraints = weight_constraints(model, space, layers)
    before = sum(c.distance() for c in constraints) / len(constraints)
    run = TrainingRun(workload.model, workload.train, steps, seed=0)
    get_recovery(name, **{**FAST[name], **params}).train(model.train(), constraints, run)
    return model, constraints, before


@pytest.mark.parametrize("recipe", sorted(RECIPES))
@pytest.mark.parametrize("name", sorted(FAST))
def test_training_brings_the_weights_onto_their_constraints(workload, space, name, recipe):
    model, constraints, before = trained(workload, space, name, recipe)
    after = sum(c.distance() for c in constraints) / len(constraints)
    assert after < 0.5 * before, (before, after)
    assert not any(m._forward_hooks or m._forward_pre_hooks or hasattr(m, "parametrizations")
                   for m in model.modules())
    assert set(dict(model.named_parameters())) == set(dict(workload.model.named_parameters()))


@pytest.mark.parametrize("name", sorted(FAST))
def test_the_weights_left_are_the_trained_ones_not_their_projection(workload, space, name):
    _, constraints, _ = trained(workload, space, name, "sparsity", steps=20)
    assert all(c.distance() > 0 for c in constraints)  # the engine's hard projection comes after


@pytest.mark.parametrize("name", sorted(FAST))
def test_a_seed_gives_the_same_weights(workload, space, name):
    first, _, _ = trained(workload, space, name, "rank", steps=20)
    second, _, _ = trained(workload, space, name, "rank", steps=20)
    for (key, a), b in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(a, b), key


@dataclass
class Recording(TrainingRun):
    """A TrainingRun that records the penalty's value at every step of its last ``fit``."""

    penalties: list[float] = field(default_factory=list)

    def fit(self, model, steps=None, penalty=None, after_step=None, lr=None) -> None:
        self.penalties = []

        def tracked():
            value = penalty()
            self.penalties.append(float(value.detach()))
            return value

        super().fit(model, steps, tracked if penalty is not None else None, after_step, lr)


def test_the_penalty_is_the_squared_distance_to_the_shifted_target(workload, space):
    """ADMM's first W-step: rho/2 * sum ||W - Z||^2 with Z = project(W0), U = 0."""
    layers = space.resolve(RECIPES["sparsity"])
    model = restructure(workload.model, space, layers, workload.example_input)
    constraints = weight_constraints(model, space, layers)
    weights = [c.weight.detach() for c in constraints]
    expected = 0.5 * 0.01 * sum(float(((w - c.project(w)) ** 2).sum()) for w, c in zip(weights, constraints))
    run = Recording(workload.model, workload.train, 1, seed=0)
    get_recovery("admm", rho=0.01).train(model.train(), constraints, run)
    assert run.penalties == pytest.approx([expected], rel=1e-5)


def test_the_w_steps_are_cut_evenly_and_no_update_follows_the_last():
    assert update_steps(12, 4) == {2: [1], 5: [2], 8: [3]}
    assert update_steps(2, 4) == {0: [1, 2, 3]}
    assert update_steps(10, 1) == {}


@pytest.mark.parametrize("name, option, value", [
    ("admm", "rho", 0.0), ("admm", "rho_growth", 0.5), ("admm", "stages", 0), ("admm", "updates", 2.5),
    ("admm", "share", 0.0), ("admm", "share", 1.5), ("admm", "lr", -1e-3), ("slr", "alpha_r", 1.0),
    ("slr", "alpha_m", 1.0), ("slr", "step_size", "big"), ("slr", "probe_batches", 0), ("lc", "mu", -1.0),
    ("lc", "mu_growth", 0.9), ("lc", "iterations", True),
])
def test_a_bad_value_is_one_line_naming_the_option(name, option, value):
    with pytest.raises(AutocompressError, match=f"recovery regime '{name}': {option} must be") as error:
        get_recovery(name, **{option: value})
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", sorted(FAST))
def test_an_unknown_option_names_the_regimes_options(name):
    expected = f"recovery regime '{name}' has no option 'rhoo'; its options are: share"
    with pytest.raises(AutocompressError, match=expected):
        get_recovery(name, rhoo=1.0)


@pytest.mark.parametrize("name", sorted(FAST))
def test_options_are_stored_as_given_and_rebuild_the_regime(name):
    regime = get_recovery(name, **FAST[name])
    params = regime.get_params()
    assert list(params)[0] == "share" and params["share"] == 0.5
    assert {k: params[k] for k in FAST[name]} == FAST[name]
    assert RECOVERIES[name](**params).get_params() == params


def test_a_recipe_without_constrained_weights_is_distilled(workload, space):
    layers = space.resolve({"fc1/channels": 0.5})
    model = restructure(workload.model, space, layers, workload.example_input)
    before = [p.detach().clone() for p in model.parameters()]
    run = Recording(workload.model, workload.train, 3, seed=0)
    get_recovery("admm").train(model.train(), weight_constraints(model, space, layers), run)
    assert run.penalties == [] and any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_admm_end_to_end_holds_the_sparsity_exactly(workload, space):
    layers = space.resolve(RECIPES["sparsity"])
    recovery = {"calibration_batches": 2, "finetune_steps": 40, "lr": 1e-3, "temperature": 4.0, "seed": 0,
                "method": "admm", "params": {}}
    model = compress_and_recover(workload, space, layers, recovery)
    for name in ("fc1", "fc2", "head"):
        module = model.get_submodule(name)
        rows, cols = module.weight.shape
        mask = module.parametrizations.weight[0].mask
        assert int((mask == 0).sum()) == zeroed_weights(rows, cols, 0.9), name
        assert torch.all(module.weight[mask == 0] == 0), name


@pytest.mark.parametrize("lagrangian_fell", [True, False])
def test_slr_moves_its_multipliers_only_when_the_lagrangian_fell(workload, space, lagrangian_fell):
    layers = space.resolve(RECIPES["sparsity"])
    model = restructure(workload.model, space, layers, workload.example_input)
    regime = get_recovery("slr")
    state = regime.start(model.train(), weight_constraints(model, space, layers), TrainingRun(workload.model,
                                                                                                workload.train, 10))
    state.last_loss += 1.0 if lagrangian_fell else -1.0  # as if the last accepted point had been worse / better
    regime.update(state, 1)  # W is unchanged: with no multiplier yet, the Z-step finds the same Z
    if lagrangian_fell:
        assert state.k >= 2 and any(bool(u.any()) for u in state.shifts)
    else:
        assert state.k == 1 and state.step == 1e-2
        assert not any(bool(u.any()) for u in state.shifts)
    assert regime.alpha(1) == pytest.approx(1 - 1 / 300) and regime.alpha(2) < regime.alpha(50) < 1
