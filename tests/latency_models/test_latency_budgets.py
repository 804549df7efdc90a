from __future__ import annotations

import pytest

from autocompress.cli.main import main
from autocompress.core.recipe import Recipe


def test_latency_budget_on_an_analytic_target_holds_for_the_recipe(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["search", "--budget", "latency=0.5@eyeriss", "--trials", "3", "--finetune-steps", "0",
                 "--final-finetune-steps", "0", "--out", str(out), "--no-progress"])
    assert code == 0
    recipe = Recipe.load(out / "recipe.yaml")
    base, small = recipe.metrics["base"]["latency@eyeriss"], recipe.metrics["compressed"]["latency@eyeriss"]
    assert 0 < small <= 0.5 * base
    assert "latency@eyeriss (ms, predicted)" in capsys.readouterr().out
    # the per-layer table of the same recipe agrees with what the recipe recorded
    assert main(["latency", "--target", "eyeriss", str(out / "recipe.yaml")]) == 0
    text = capsys.readouterr().out
    assert "predicted speedup" in text and "block1.conv1" in text
    assert f"{base / small:.2f}x" in text


@pytest.mark.parametrize("budget,message", [
    ("latency=0.2@cpu", "the latency@cpu budget cannot be met"),  # batch 1 on the demo: overhead-bound
    pytest.param("latency=0.5@cuda", "needs a CUDA GPU", marks=pytest.mark.skipif(
        __import__("torch").cuda.is_available(), reason="this machine has a GPU")),
    ("latency=0.5@tpu-v9", "unknown latency target 'tpu-v9'"),
    ("latency=0.01@h100", "cannot be met"),
])
def test_latency_budgets_that_cannot_run_say_why(tmp_path, capsys, budget, message):
    code = main(["search", "--budget", budget, "--trials", "1", "--out", str(tmp_path / "x"), "--no-progress"])
    assert code == 2
    assert message in capsys.readouterr().err


def test_latency_table_of_a_transformer_has_its_attention_rows(capsys):
    """The zoo ViT's table: each block's attention product is a row of its own (heads as
    groups), and a model without data is refused with what the data is needed for."""
    assert main(["latency", "--target", "tpu-v1", "--model", "autocompress.models.zoo:vit_tiny",
                 "--data", "autocompress.models.zoo:vit_tiny_data", "--batch", "2"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if ".attn.attention" in line]
    assert [row[:6] for row in rows] == [[f"blocks.{i}.attn.attention", "attention", "65", "65", "16", "4"]
                                         for i in (0, 1)]
    assert main(["latency", "--target", "tpu-v1", "--model", "autocompress.models.zoo:vit_tiny"]) == 2
    assert "gives the model's input shape" in capsys.readouterr().err
