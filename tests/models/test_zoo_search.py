"""Issue 3's acceptance check: a flops=0.4 search on every zoo model gives an exported
model that meets the budget."""
from __future__ import annotations

import pytest
import torch

from autocompress.api import apply, search
from autocompress.compress.export import export_model
from autocompress.evaluators import count_flops
from autocompress.models import zoo


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(zoo.MODELS))
def test_flops_budget_holds_for_the_exported_model(name, tmp_path):
    model, data = zoo.MODELS[name].factory(), getattr(zoo, f"{name}_data")()
    result = search("flops=0.4", model=model, data=data, out=tmp_path / "run", progress=False, trials=2,
                    strategy="random", finetune_steps=2, final_finetune_steps=5, calibration_batches=2)
    small, metrics = apply(result.recipe_path, model=model, data=data)
    path = tmp_path / "model.pt2"
    export_model(small, zoo.example_input(name), path)
    loaded = torch.export.load(str(path)).module()
    x = zoo.example_input(name)
    assert count_flops(loaded, x) == metrics["flops"] <= 0.4 * count_flops(model, x)
    assert loaded(zoo.example_input(name, batch=3)).shape == (3, 10)
