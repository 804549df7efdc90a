"""The recovery spine: the distill regime through the RecoverySuite, projections that are
what the operators make, recipes and settings that name a regime."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from autocompress.compress import bake, compress, restructure, weight_constraints
from autocompress.core import budget
from autocompress.core.errors import AutocompressError, RecipeError
from autocompress.core.recipe import Recipe
from autocompress.engine.evaluation import compress_and_recover
from autocompress.engine.settings import SearchSettings
from autocompress.evaluators.recovery import get_recovery
from autocompress.models.workload import load_workload
from autocompress.spaces import build_space
from autocompress.testing import RecoverySuite


class TestDistill(RecoverySuite):
    name = "distill"
    distance_ratio = None


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(16, 24), nn.Linear(24, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


def test_a_weight_at_its_projection_is_what_compress_exports():
    torch.manual_seed(0)
    model, example = MLP().eval(), torch.randn(2, 16)
    space = build_space(model, example)
    layers = {"fc1": {"sparsity": 0.75, "bits": 4}, "fc2": {"rank": 2, "decomposition": "svd"}}
    dense = restructure(model, space, layers, example)
    constraints = {c.name: c for c in weight_constraints(dense, space, layers)}
    assert set(constraints) == {"fc1.weight", "fc2.weight"}
    assert constraints["fc1.weight"].kinds == ("sparsity", "bits") and constraints["fc1.weight"].sparsity == 0.75
    assert constraints["fc2.weight"].kinds == ("rank",)
    with torch.no_grad():
        for c in constraints.values():
            c.weight.copy_(c.project(c.weight))
        assert max(c.distance() for c in constraints.values()) < 1e-6
    exported = bake(compress(dense, space, layers, example))
    x = torch.randn(5, 16)
    with torch.no_grad():
        torch.testing.assert_close(exported(x), dense(x), rtol=1e-4, atol=1e-5)


def test_distill_recovery_is_the_compress_then_finetune_of_before():
    workload = load_workload()
    space = build_space(workload.model, workload.example_input)
    layers = space.resolve({k.name: 0.5 for k in space.knobs})
    recovery = {"calibration_batches": 2, "finetune_steps": 5, "lr": 1e-3, "temperature": 4.0, "seed": 0}
    a = bake(compress_and_recover(workload, space, layers, recovery))
    b = bake(compress_and_recover(workload, space, layers, {**recovery, "method": "distill", "params": {}}))
    for key, value in a.state_dict().items():
        assert torch.equal(value, b.state_dict()[key])


def test_a_recipe_names_its_regime_only_when_it_is_not_distill():
    base = {"schema": 1, "model": {"fingerprint": "x"}, "budget": [], "layers": {}}
    plain = Recipe.from_dict({**base, "recovery": {"finetune_steps": 3}})
    assert "method" not in plain.recovery and "method" not in plain.to_dict()["recovery"]
    named = Recipe.from_dict({**base, "recovery": {"method": "admm", "params": {"rho": 0.01}}})
    assert named.recovery["method"] == "admm" and named.recovery["params"] == {"rho": 0.01}
    assert Recipe.from_dict(named.to_dict()).recovery == named.recovery
    with pytest.raises(RecipeError, match="recovery.method"):
        Recipe.from_dict({**base, "recovery": {"method": 3}})
    with pytest.raises(RecipeError, match="recovery.params"):
        Recipe.from_dict({**base, "recovery": {"method": "admm", "params": [1]}})


def test_an_unknown_regime_names_the_known_ones():
    with pytest.raises(AutocompressError, match="unknown recovery regime 'nope'; use one of distill"):
        get_recovery("nope")
    with pytest.raises(AutocompressError, match="'distill' has no option 'rho'"):
        get_recovery("distill", rho=1)


def test_settings_store_the_final_recovery_and_old_studies_read_as_distill():
    settings = SearchSettings(budget.parse("flops=0.5"), final_recovery="distill")
    data = settings.to_dict()
    assert data["final_recovery"] == "distill" and data["recovery_options"] == {}
    assert "method" not in settings.recovery(final=True)
    old = {k: v for k, v in data.items() if k not in ("final_recovery", "recovery_options")}
    assert SearchSettings.from_dict(old).final_recovery == "distill"
    with pytest.raises(AutocompressError, match="unknown recovery regime"):
        SearchSettings(budget.parse("flops=0.5"), final_recovery="nope").to_dict()
