"""The regulariser regimes ``hoyer``, ``group-hoyer`` and ``hspg``: they train the dense
weights towards sparsity, and the recipe's masks then hold exactly."""
from __future__ import annotations

import pytest
import torch

from autocompress.compress import restructure, weight_constraints
from autocompress.core.errors import AutocompressError
from autocompress.core.patterns import zeroed_weights
from autocompress.engine.evaluation import compress_and_recover
from autocompress.evaluators.recovery import RECOVERIES, TrainingRun, get_recovery
from autocompress.evaluators.recovery._hoyer import group_expand, group_hoyer_square, group_sums, hoyer_square
from autocompress.models.workload import load_workload
from autocompress.spaces import build_space
from autocompress.testing.recovery import RecoverySuite

SPARSITY = 0.9
REGIMES = ("hoyer", "group-hoyer", "hspg")


@pytest.fixture(scope="module")
def workload():
    return load_workload("autocompress.models.zoo:lenet300_100", data="autocompress.models.zoo:lenet300_100_data")


@pytest.fixture(scope="module")
def recipe(workload):
    """LeNet-300-100's space and every Linear at ``SPARSITY`` (unstructured)."""
    space = build_space(workload.model, workload.example_input).restrict(("sparsity",))
    return space, space.resolve({k.name: 1.0 - SPARSITY for k in space.knobs})


def trained(workload, recipe, name: str, steps: int = 40, seed: int = 0, **params):
    """The restructured model after ``steps`` of regime ``name``, its constraints and
    their weights before training."""
    space, layers = recipe
    model = restructure(workload.model, space, layers, workload.example_input)
    constraints = weight_constraints(model, space, layers)
    before = [c.weight.detach().clone() for c in constraints]
    run = TrainingRun(workload.model, workload.train, steps, seed=seed)
    if name == "none":
        run.fit(model.train())
    else:
        get_recovery(name, **params).train(model.train(), constraints, run)
    return model, constraints, before


def near_zero(weights: list[torch.Tensor]) -> float:
    """The share of all entries below 1% of their weight's largest magnitude."""
    small = sum(int((w.abs() < 1e-2 * w.abs().max()).sum()) for w in weights)
    return small / sum(w.numel() for w in weights)


def mass_outside(constraints, weights: list[torch.Tensor]) -> float:
    """The share of the squared weight mass the recipe's masks would drop."""
    dropped = sum(float((w - c.project(w)).square().sum()) for c, w in zip(constraints, weights))
    return dropped / sum(float(w.square().sum()) for w in weights)


def row_norms(weight: torch.Tensor) -> torch.Tensor:
    return group_sums(weight.detach().square(), "rows").sqrt()


def test_the_regimes_are_registered():
    assert {"hoyer", "group-hoyer", "hspg"} <= set(RECOVERIES)


def test_hoyer_square_is_one_for_one_entry_and_the_size_for_a_constant():
    assert float(hoyer_square(torch.tensor([0.0, 3.0, 0.0]))) == pytest.approx(1.0)
    assert float(hoyer_square(torch.full((4, 5), -2.0))) == pytest.approx(20.0)
    assert float(hoyer_square(torch.zeros(3))) == 0.0
    rows = torch.tensor([[3.0, 4.0], [0.0, 0.0], [0.0, 0.0]])
    assert float(group_hoyer_square(rows, "rows")) == pytest.approx(1.0)
    assert float(group_hoyer_square(rows, "columns")) == pytest.approx(49.0 / 25.0)


def test_groups_sum_and_expand_consistently():
    weight = torch.arange(6 * 10, dtype=torch.float32).view(6, 10)
    assert torch.equal(group_sums(weight, "rows"), weight.sum(1))
    assert torch.equal(group_sums(weight, "columns"), weight.sum(0))
    blocks = group_sums(weight, "blocks", (4, 4))
    assert torch.equal(blocks, torch.stack([weight[:4, :4].sum(), weight[:4, 4:8].sum()]))
    expanded = group_expand(weight, torch.tensor([2.0, 3.0]), "blocks", (4, 4), fill=-1.0)
    assert (expanded[:4, :4] == 2).all() and (expanded[:4, 4:8] == 3).all()
    assert (expanded[4:] == -1).all() and (expanded[:, 8:] == -1).all()
    assert torch.equal(group_expand(weight, torch.arange(6.0), "rows")[:, 3], torch.arange(6.0))


def test_hoyer_moves_the_mass_into_the_recipes_mask(workload, recipe):
    _, constraints, before = trained(workload, recipe, "hoyer", decay=1e-3)
    after = [c.weight.detach() for c in constraints]
    _, plain, _ = trained(workload, recipe, "none")
    plain = [c.weight.detach() for c in plain]
    assert near_zero(after) > near_zero(before) + 0.15, (near_zero(before), near_zero(after))
    assert near_zero(after) > near_zero(plain) + 0.15
    assert mass_outside(constraints, after) < 0.75 * mass_outside(constraints, before)
    assert mass_outside(constraints, after) < 0.75 * mass_outside(constraints, plain)
    for c, w in zip(constraints, before):
        assert c.distance() < float((w - c.project(w)).norm() / w.norm()), c.name


def test_group_hoyer_shrinks_whole_rows(workload, recipe):
    _, constraints, before = trained(workload, recipe, "group-hoyer", decay=1.0, groups="rows")
    for c, w in zip(constraints[:2], before[:2]):  # fc1 and fc2; the 10-row head keeps its rows
        norms, start = row_norms(c.weight), row_norms(w)
        assert float(group_hoyer_square(c.weight.detach(), "rows")) < 0.8 * float(group_hoyer_square(w, "rows"))
        small, small_before = (norms < 1e-2 * norms.max()).float().mean(), (start < 1e-2 * start.max()).float().mean()
        assert small > small_before + 0.1, (c.name, float(small_before), float(small))


@pytest.mark.parametrize("groups", ["rows", "blocks"])
def test_hspg_sets_whole_groups_exactly_to_zero(workload, recipe, groups):
    _, constraints, before = trained(workload, recipe, "hspg", lam=30.0, groups=groups)
    for c, w in zip(constraints[:2], before[:2]):
        assert int((group_sums(w.square(), groups) == 0).sum()) == 0
        zero = int((group_sums(c.weight.detach().square(), groups) == 0).sum())
        assert zero >= 10, (c.name, zero)


def test_hspg_without_the_half_space_phase_zeroes_no_group(workload, recipe):
    _, constraints, _ = trained(workload, recipe, "hspg", lam=30.0, switch=1.0, groups="rows")
    assert all(int((row_norms(c.weight) == 0).sum()) == 0 for c in constraints)


@pytest.mark.parametrize("name", REGIMES)
def test_the_regime_is_reproducible_and_leaves_the_model_as_it_was(workload, recipe, name):
    first, constraints, _ = trained(workload, recipe, name, steps=15, seed=3)
    second, again, _ = trained(workload, recipe, name, steps=15, seed=3)
    for a, b in zip(constraints, again):
        assert torch.equal(a.weight, b.weight), a.name
    assert [n for n, _ in first.named_parameters()] == [n for n, _ in workload.model.named_parameters()]
    assert [n for n, _ in first.named_buffers()] == [n for n, _ in workload.model.named_buffers()]
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks or hasattr(m, "parametrizations")
                   for m in first.modules())
    assert not any(p._backward_hooks for p in first.parameters() if p._backward_hooks is not None)


@pytest.mark.parametrize("name, params, option", [
    ("hoyer", {"decay": -1.0}, "decay"),
    ("hoyer", {"decay": True}, "decay"),
    ("hoyer", {"share": 1.5}, "share"),
    ("group-hoyer", {"groups": "heads"}, "groups"),
    ("group-hoyer", {"decay": float("inf")}, "decay"),
    ("hspg", {"epsilon": 1.0}, "epsilon"),
    ("hspg", {"switch": "half"}, "switch"),
    ("hspg", {"lam": float("nan")}, "lam"),
    ("hspg", {"groups": "channels"}, "groups"),
])
def test_a_bad_option_is_one_line_naming_it(name, params, option):
    with pytest.raises(AutocompressError, match=option) as info:
        get_recovery(name, **params)
    assert "\n" not in str(info.value) and name in str(info.value)


@pytest.mark.parametrize("name, params", [
    ("hoyer", {"share": 0.25, "decay": 3e-4}),
    ("group-hoyer", {"share": 0.5, "decay": 0.1, "groups": "blocks"}),
    ("hspg", {"share": 0.75, "lam": 5.0, "epsilon": 0.2, "switch": 0.3, "groups": "columns"}),
])
def test_the_options_are_given_back_as_built(name, params):
    regime = get_recovery(name, **params)
    assert regime.get_params() == params
    assert get_recovery(name, **regime.get_params()).get_params() == params


@pytest.mark.parametrize("name", REGIMES)
def test_the_recovered_model_holds_the_recipes_sparsity_exactly(workload, recipe, name):
    space, layers = recipe
    recovery = {"calibration_batches": 2, "finetune_steps": 40, "lr": 1e-3, "temperature": 4.0, "seed": 0,
                "method": name, "params": {}}
    model = compress_and_recover(workload, space, layers, recovery)
    for layer in layers:
        module = model.get_submodule(layer)
        rows, cols = module.weight.shape
        assert int((module.parametrizations.weight[0].mask == 0).sum()) == zeroed_weights(rows, cols, SPARSITY), layer
        assert int((module.weight == 0).sum()) == zeroed_weights(rows, cols, SPARSITY), layer  # kept ones trained


class TestHoyerSuite(RecoverySuite):
    name = "hoyer"
    params = {"decay": 1e-3}


class TestGroupHoyerSuite(RecoverySuite):
    name = "group-hoyer"
    params = {"decay": 1.0}
    distance_ratio = 0.95  # rows shrink as wholes: an unstructured mask's cut is approached more slowly


class TestHSPGSuite(RecoverySuite):
    name = "hspg"
    params = {"lam": 30.0}
