"""The Python API: ``ac.search(...)``, ``ac.apply(...)`` and ``ac.export_trial(...)`` on objects, not import
specs."""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import torch.nn as nn

from . import budget as _budget
from .engine import SearchResult, SearchSettings, export_trial as _export_trial, replay
from .runner import run_search
from .errors import ModelError
from .recipe import Recipe
from .workload import Workload, _first_input, load_workload


def _workload(model: nn.Module | None, data: Sequence[Iterable] | None) -> Workload:
    if model is None and data is None:
        return load_workload()
    if model is None or data is None or len(data) not in (2, 3):
        raise ModelError("pass both model= (a trained nn.Module) and data=(train, val[, test]) batch iterables")
    test, split = (data[2], "test") if len(data) == 3 else (data[1], "validation")
    return Workload(type(model).__name__, model.eval(), _first_input(data[0], "data"), data[0], data[1], test, split)


def search(budget: str | Sequence[str], model: nn.Module | None = None, data: Sequence[Iterable] | None = None,
           out: str | Path = "autocompress-run", progress: bool = True, **settings) -> SearchResult:
    """Search for a recipe meeting ``budget`` (e.g. ``"flops=0.3"``); see SearchSettings for
    ``trials``, ``strategy``, ``seed``, ``finetune_steps``... Without a model, the demo."""
    return run_search(_workload(model, data), SearchSettings(_budget.parse(budget), **settings), out, progress)


def apply(recipe: str | Path | Recipe, model: nn.Module | None = None,
          data: Sequence[Iterable] | None = None) -> tuple[nn.Module, dict[str, float]]:
    """The compressed model a recipe describes, and its measured metrics."""
    if not isinstance(recipe, Recipe):
        recipe = Recipe.load(recipe)
    return replay(_workload(model, data), recipe)


def export_trial(folder: str | Path, trial: int, model: nn.Module | None = None,
                 data: Sequence[Iterable] | None = None, path: str | Path | None = None) -> tuple[Recipe, Path]:
    """Write the recipe of search trial ``trial`` in ``folder`` (e.g. a point of its
    ``pareto.yaml``), replayed and measured, to ``path`` (default
    ``folder/recipe-trial-N.yaml``); returns it and its path.  Raises StudyError for a
    trial that is unknown, failed, a scan or over the budget."""
    recipe, path, _ = _export_trial(_workload(model, data), folder, trial, path)
    return recipe, path


__all__ = ["search", "apply", "export_trial", "load_workload"]
