"""The Python API stays functions whatever is imported (issue 13: ``ac.search`` used to
become the strategies subpackage once ``autocompress.api`` was imported)."""
from __future__ import annotations

import importlib
import inspect

import autocompress as ac


def test_api_functions_stay_functions_after_every_subpackage_is_imported():
    for name in ("autocompress.api", "autocompress.search", "autocompress.engine.runner", "autocompress.cli",
                 "autocompress.report", "autocompress.testing"):
        importlib.import_module(name)
    for name in ("search", "apply", "export_trial", "load_workload"):
        assert inspect.isfunction(getattr(ac, name)), name
    from autocompress.search import STRATEGIES  # the strategies package is still importable by name

    assert "bo" in STRATEGIES


def test_search_can_be_called_twice_in_one_session(tmp_path):
    options = dict(trials=1, strategy="uniform", progress=False, finetune_steps=0, final_finetune_steps=0)
    first = ac.search("flops=0.5", out=tmp_path / "a", **options)
    second = ac.search("flops=0.5", out=tmp_path / "b", **options)
    assert first.recipe.layers == second.recipe.layers
    assert second.recipe.metrics["compressed"]["flops"] <= 0.5 * second.recipe.metrics["base"]["flops"]
