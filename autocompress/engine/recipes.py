"""Recipes from trials: the chosen trial replayed and measured, any trial exported, and
``replay`` (what ``apply`` runs) rebuilding a recipe's model."""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..compress import bake
from ..core import __version__
from ..core import budget as _budget
from ..core.errors import AutocompressError, RecipeError, StudyError
from ..core.recipe import DEFAULT_METHOD, Recipe
from ..core.space import Space
from ..core.trial import COMPLETE, SCAN, TrialRecord, finished
from ..core.workload import Workload
from ..evaluators import batches, evaluate, measure_costs
from ..evaluators.device import CPU, Runtime
from ..evaluators.metrics import Metric
from ..latency_models.base import LatencyModel
from ..latency_models.calibration import calibrate_latency
from ..latency_models.measured import measure_pair
from ..search import Problem
from ..spaces import build_space
from .evaluation import (
    compress_and_recover,
    latency_models_for,
    limits_for,
    predicted_latency,
    recovery_regime,
    search_space,
    with_latency_models,
)
from .settings import SearchSettings, recorded_metric
from .study import Study, study_location

log = logging.getLogger(__name__)


@dataclass
class SearchResult:
    """What ``ac.search`` returns: the recipe, where it was saved, its model (fine-tuned,
    baked into plain modules) and the study's trials."""

    recipe: Recipe
    recipe_path: Path
    model: nn.Module
    history: list[TrialRecord] = field(default_factory=list)


def measured_recipe(workload: Workload, settings: SearchSettings, problem: Problem, record: TrialRecord,
                    history: list[TrialRecord], runtime: Runtime = CPU,
                    teacher: nn.Module | None = None) -> tuple[Recipe, nn.Module]:
    """The recipe of one trial, replayed (final fine-tune on ``runtime``, distilled from
    ``teacher``, the base model on its device) and measured, with its model (on the CPU)."""
    recipe = recipe_for(workload, settings, problem, record, finished(history))
    log.info("recovering the recipe of trial %d (%s, %d steps) on %s", record.number, settings.final_recovery,
             settings.final_finetune_steps, runtime)
    model, compressed = replay(workload, recipe, latency_models=settings.latency_models, runtime=runtime,
                               metric=settings.make_metric(), teacher=teacher)
    compressed.update(predicted_latency(problem.space, recipe.layers))  # calibrated, at the search's batch
    base = dict(problem.base)
    base["latency_cpu_ms"], compressed["latency_cpu_ms"] = measure_pair(workload.model, model, workload.example_input)
    recipe.metrics = {"base": base, "compressed": compressed}
    return recipe, model


def input_shape(example_input: batches.Inputs) -> list[int] | list[list[int]] | dict[str, list[int]]:
    """The per-sample shape of an example input as a recipe records it: ``[3, 32, 32]``
    for a tensor, one such list per tensor of a tuple, ``{input_ids: [128], ...}`` for
    keyword inputs."""
    if isinstance(example_input, dict):
        return {k: list(v.shape[1:]) for k, v in example_input.items() if hasattr(v, "shape")}
    if isinstance(example_input, tuple):
        return [list(t.shape[1:]) for t in batches.tensors(example_input)]
    return list(example_input.shape[1:])


def recipe_for(workload: Workload, settings: SearchSettings, problem: Problem, record: TrialRecord,
               trials: int) -> Recipe:
    """The (not yet measured) recipe of one trial.  It records the search's metric
    (``metric``), the objective that chose the trial (``search.objective``) and the trial's
    proxy value of the metric (``search.best_proxy_<name>``), never the device it ran on."""
    metric = settings.make_metric()
    return Recipe(
        model={"name": workload.name, "fingerprint": workload.fingerprint,
               "input_shape": input_shape(workload.example_input)},
        budget=settings.budget.to_strings(),
        layers=problem.space.resolve(record.candidate, record.channel_order),
        search={
            "strategy": settings.strategy_name, "objective": settings.objective, "trials": trials,
            "seed": settings.seed, "best_trial": record.number,
            f"best_proxy_{metric.name}": metric.value(record.score),
            "proxy_finetune_steps": settings.finetune_steps, "autocompress": __version__,
        },
        recovery=settings.recovery(final=True),
        excluded=dict(problem.space.excluded),
        metric=settings.metric_spec,
    )


def export_trial(workload: Workload, out: str | Path, trial: int, path: str | Path | None = None,
                 runtime: Runtime = CPU, metric: str | Metric | None = None) -> tuple[Recipe, Path, nn.Module]:
    """Turn one trial of the search in ``out`` (a point of ``pareto.yaml``, or any complete
    search trial within the budget) into a recipe: replayed with the search's final
    fine-tune on ``runtime``, measured, and saved to ``path`` (default
    ``out/recipe-trial-N.yaml``).  ``metric`` names the search's metric again where that
    is a function (``pkg.module:fn``).

    Raises StudyError for a folder without a study and for a trial that is unknown,
    failed, a sensitivity scan or over the budget; RecipeError for another model.
    """
    out = Path(out)
    study = Study.open(*study_location(out))
    history = study.history()
    settings = SearchSettings.from_dict(study.config)
    settings = replace(settings, metric=recorded_metric(settings.metric_spec, metric, f"the search in {out}"))
    fingerprint = study.config.get("model")
    if fingerprint != workload.fingerprint:
        raise RecipeError(f"the search in {out} was made for model fingerprint {fingerprint}, not for "
                          f"{workload.name!r} ({workload.fingerprint}); pass the model it was made for with "
                          "--model/--weights")
    record = next((r for r in history if r.number == trial), None)
    listed = f"see {out / 'pareto.yaml'}" if (out / "pareto.yaml").is_file() else "see its study.db"
    if record is None:
        raise StudyError(f"trial {trial} is not in the study of {out} (trials 0 to {len(history) - 1}); {listed}")
    if record.purpose == SCAN:
        raise StudyError(f"trial {trial} is a sensitivity scan (BatchNorm recalibration only), not a candidate "
                         f"recipe; choose a search trial, {listed}")
    if record.state != COMPLETE:
        raise StudyError(f"trial {trial} {record.state}" + (f" ({record.error})" if record.error else "")
                         + f"; choose a complete search trial, {listed}")
    if not record.feasible:
        raise StudyError(f"trial {trial} is over the budget {settings.budget}; choose one within it, {listed}")
    space = search_space(workload, settings)
    if list(space.knob_names) != study.config["knob_names"]:
        raise StudyError(f"the search in {out} turned other knobs than this model's space has; rerun the search")
    stored = study.latency_models
    if stored is None:  # the search stopped before it stored its calibration
        space = calibrate_latency(workload, space, settings.budget, given=settings.latency_models)
    else:
        space = with_latency_models(space, stored)
    base = {k: v for k, v in study.base.items() if k != "proxy_accuracy"}
    problem = Problem(space, limits_for(settings.budget, base), base,
                      base_score=study.base.get("proxy_accuracy", 100.0),
                      max_accuracy_drop=settings.max_accuracy_drop, objective=settings.objective, workload=workload,
                      recovery=settings.recovery(final=False), metric=settings.make_metric())
    recipe, model = measured_recipe(workload, settings, problem, record, history, runtime)
    path = Path(path) if path is not None else out / f"recipe-trial-{trial}.yaml"
    recipe.save(path)
    return recipe, path, model


def check_recipe(workload: Workload, recipe: Recipe) -> Space:
    """The model's space, after checking the recipe was made for this model."""
    if recipe.model.get("fingerprint") != workload.fingerprint:
        raise RecipeError(
            f"the recipe was made for model {recipe.model.get('name')!r} (fingerprint "
            f"{recipe.model.get('fingerprint')}), not for {workload.name!r} ({workload.fingerprint}); "
            "pass the model it was made for with --model/--weights"
        )
    space = build_space(workload.model, workload.example_input)
    known = {layer.name for layer in space.layers}
    for name in recipe.layers:
        if name not in known:
            raise RecipeError(f"recipe layer {name!r} is not a compressible layer of {workload.name!r}")
    return space


def replay(workload: Workload, recipe: Recipe, finetune_epochs: float | None = None,
           latency_models: Mapping[str, LatencyModel] | None = None, runtime: Runtime = CPU,
           metric: str | Metric | None = None, teacher: nn.Module | None = None,
           recovery: str | None = None, recovery_options: Mapping[str, Any] | None = None,
           constrained: Callable[[nn.Module], None] | None = None) -> tuple[nn.Module, dict[str, float]]:
    """Rebuild the compressed model a recipe describes, measure it (the recipe's metric on
    the test split, under the metric's name) and return it baked into plain modules, on
    the CPU.  Recovery is the recipe's (``engine.evaluation.compress_and_recover``):
    ``finetune_epochs`` replaces its training steps by that many passes over the training
    batches, ``recovery`` (a regime's name) with ``recovery_options`` replaces its regime.
    Recovery and scoring run on ``runtime`` (``teacher``: the base model on its device,
    copied there when None); costs are counted on the CPU.  ``metric`` replaces the
    recipe's metric (a recipe scored with a ``pkg.module:fn`` needs it given again:
    AutocompressError; an unknown regime or option too).  ``constrained(model)`` is
    called right after the constraints are applied, before the fine-tune.  Latency
    budgets are predicted with their targets' analytic models (``latency_models``: the
    one to use for a target, by target name)."""
    from ..models.workload import load_metric

    space = check_recipe(workload, recipe)
    metric = load_metric(recorded_metric(recipe.metric, metric, "the recipe", same=False))
    settings = replaced_recovery(recipe.recovery, recovery, recovery_options)
    if finetune_epochs is not None:
        settings["finetune_steps"] = finetune_steps_for(workload, finetune_epochs)
    model = compress_and_recover(workload, space, recipe.layers, settings, runtime, metric, teacher, constrained)
    value = evaluate(model, workload.test, metric, runtime)
    model.cpu()
    metrics = measure_costs(model, workload.example_input)
    analytic = {k: m for k, m in latency_models_for(_budget.parse(recipe.budget), latency_models).items()
                if m.kind != "measured"}
    metrics.update(predicted_latency(replace(space, latency_models=analytic), recipe.layers))
    metrics[metric.name] = value
    return bake(model), metrics


def replaced_recovery(recovery: Mapping[str, Any], method: str | None,
                      options: Mapping[str, Any] | None) -> dict[str, Any]:
    """A recipe's ``recovery`` with its regime replaced by ``method`` (its ``options`` as
    params) where one is given, or its options updated by ``options``; the regime is
    built to check them (AutocompressError naming the regimes or options allowed)."""
    recovery = dict(recovery)
    if method is not None:
        recovery["method"], recovery["params"] = method, dict(options or {})
    elif options:
        recovery["params"] = {**recovery.get("params", {}), **options}
    regime = recovery_regime(recovery)
    if recovery.get("method", DEFAULT_METHOD) == DEFAULT_METHOD:
        recovery.pop("method", None)
        recovery.pop("params", None)
    else:
        recovery["params"] = regime.get_params()
    return recovery


def finetune_steps_for(workload: Workload, epochs: float) -> int:
    """Fine-tune steps in ``epochs`` passes over the workload's training batches."""
    if not epochs >= 0:
        raise AutocompressError(f"--finetune {epochs} must be zero or more epochs")
    try:
        batches = len(workload.train)
    except TypeError:
        raise AutocompressError("--finetune EPOCHS needs training data of known length (a list or a DataLoader); "
                                "this --data gives an iterable without len()") from None
    return int(round(epochs * batches))
