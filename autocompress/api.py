"""The Python API: ``ac.search(...)``, ``ac.apply(...)`` and ``ac.export_trial(...)`` on objects, not import
specs."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .core import budget as _budget
from .core.errors import ModelError
from .core.recipe import Recipe
from .core.workload import Workload

if TYPE_CHECKING:  # the engine (and torch) are imported when a function runs, not with the package
    import torch.nn as nn

    from .engine.recipes import SearchResult


def _workload(model: nn.Module | None, data: Sequence[Iterable] | None) -> Workload:
    from .models.workload import _first_input, load_workload

    if model is None and data is None:
        return load_workload()
    if model is None or data is None or len(data) not in (2, 3):
        raise ModelError("pass both model= (a trained nn.Module) and data=(train, val[, test]) batch iterables")
    test, split = (data[2], "test") if len(data) == 3 else (data[1], "validation")
    return Workload(type(model).__name__, model.eval(), _first_input(data[0], "data"), data[0], data[1], test, split)


def search(budget: str | Sequence[str], model: nn.Module | None = None, data: Sequence[Iterable] | None = None,
           out: str | Path = "autocompress-run", progress: bool = True, device: str | None = "auto",
           precision: str | None = None, **settings) -> SearchResult:
    """Search for a recipe meeting ``budget`` (e.g. ``"flops=0.3"``); see SearchSettings for
    ``trials``, ``time_limit`` (seconds of trials, then the recipe from those so far),
    ``strategy``, ``seed``, ``finetune_steps``, ``metric``... Without a model, the demo.
    ``data`` is ``(train, val[, test])`` iterables of ``(x, y)`` batches or of dicts with
    ``labels`` (Hugging Face style); the model may return logits, a ``ModelOutput`` or
    anything with ``.logits``.

    ``device`` (``"auto"``: a GPU when torch sees one; ``"cpu"``, ``"cuda"``, ``"cuda:1"``)
    and ``precision`` of fine-tunes (``"fp32"``, ``"bf16"``, ``"fp16"``; None: bf16 on a
    GPU that has it, else fp32) say where the search runs; neither is stored.  ``metric``
    is ``"accuracy"`` (default), ``"top5"``, ``"perplexity"``, ``"neg_loss"``, a
    ``"pkg.module:fn"`` or a function ``fn(output, target) -> float``.

    ``strategy`` is a registered name (``"bo"``) or a Strategy object (``strategy=
    RandomStrategy(seed=3)`` from ``autocompress.search``, or your own subclass);
    ``latency_models={"mydev": model}`` predicts ``latency=...@mydev`` budgets with a
    LatencyModel object.  Both are stored in the study as their name and parameters
    (JSON), so a resumed search must pass the same."""
    from .engine.runner import run_search
    from .engine.settings import SearchSettings

    if "metric" in settings:
        settings["metric"] = _metric(settings["metric"])
    return run_search(_workload(model, data), SearchSettings(_budget.parse(budget), **settings), out, progress,
                      device=device, precision=precision)


def apply(recipe: str | Path | Recipe, model: nn.Module | None = None,
          data: Sequence[Iterable] | None = None, device: str | None = "auto", precision: str | None = None,
          metric: str | Callable | None = None, recovery: str | None = None,
          recovery_options: dict | None = None,
          finetune_epochs: float | None = None) -> tuple[nn.Module, dict[str, float]]:
    """The compressed model a recipe describes (on the CPU), and its measured metrics.
    The recovery and scoring run on ``device`` at ``precision`` (see ``search``);
    ``metric`` replaces the recipe's (and must be given for a recipe scored with a
    function); ``recovery`` (a regime's name, with ``recovery_options``) replaces the
    recipe's recovery regime and ``finetune_epochs`` its training steps."""
    from .engine.recipes import replay
    from .evaluators.device import runtime

    if not isinstance(recipe, Recipe):
        recipe = Recipe.load(recipe)
    return replay(_workload(model, data), recipe, finetune_epochs, runtime=runtime(device, precision),
                  metric=_metric(metric), recovery=recovery, recovery_options=recovery_options)


def export_trial(folder: str | Path, trial: int, model: nn.Module | None = None,
                 data: Sequence[Iterable] | None = None, path: str | Path | None = None,
                 device: str | None = "auto", precision: str | None = None,
                 metric: str | Callable | None = None) -> tuple[Recipe, Path]:
    """Write the recipe of search trial ``trial`` in ``folder`` (e.g. a point of its
    ``pareto.yaml``), replayed (on ``device`` at ``precision``) and measured, to ``path``
    (default ``folder/recipe-trial-N.yaml``); returns it and its path.  ``metric`` names
    the search's metric again where that was a function.  Raises StudyError for a trial
    that is unknown, failed, a scan or over the budget."""
    from .engine.recipes import export_trial as _export_trial
    from .evaluators.device import runtime

    recipe, path, _ = _export_trial(_workload(model, data), folder, trial, path, runtime(device, precision),
                                    _metric(metric))
    return recipe, path


def _metric(metric):
    """A function given as a metric, as a Metric; names as they are."""
    if metric is None or isinstance(metric, str):
        return metric
    from .evaluators.metrics import get_metric

    return get_metric(metric)


def load_workload(model: str | None = None, weights: str | Path | None = None, data: str | None = None) -> Workload:
    """A model and its data from CLI-style specs (``pkg.module:attr``); the demo without ``model``."""
    from .models.workload import load_workload as load

    return load(model, weights, data)


__all__ = ["search", "apply", "export_trial", "load_workload"]
