"""The search loop and recipe replay: wires spaces, search, compress and evaluators.

Data flows one way: model -> Space -> strategy proposal -> budget projection -> compress
-> evaluate -> study; the best feasible trial becomes a Recipe, and ``replay`` rebuilds
the compressed model from a Recipe (used by both ``search`` and ``apply``).
"""
from __future__ import annotations

import copy
import logging
import math
import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import __version__
from .budget import Budget
from .compress import bake, compress
from .compress.fold import fold_batchnorm
from .errors import AutocompressError, BudgetError, RecipeError
from .evaluators import accuracy, distill, measure_costs, recalibrate_batchnorm
from .latency_models import measure_cpu_latency
from .ops import space_ops
from .recipe import Recipe
from .search import STRATEGIES, Problem, project
from .search.base import feasible_trials, search_trials
from .space import KINDS_FOR_METRIC, Space
from .spaces import build_space
from .study import Study, study_location
from .trial import COMPLETE, SCAN, SEARCH, TrialRecord
from .workload import Workload

log = logging.getLogger(__name__)

OBJECTIVES = ("accuracy", "pareto")


@dataclass
class SearchSettings:
    """Everything that defines a search besides the model and data.

    ``trials`` is the number of search trials to finish (None: the strategy's
    ``default_trials``).  ``finetune_steps`` is the per-trial distillation fine-tune of the proxy (0: BatchNorm
    recalibration only; sensitivity scans always use 0); ``final_finetune_steps`` is the
    fine-tune of the chosen recipe.  ``max_accuracy_drop`` (points of proxy accuracy) is
    the tolerance of strategies that minimise cost under an accuracy floor (condensa);
    ``objective`` is ``"accuracy"`` or ``"pareto"`` (also save the accuracy/cost front; search
    proposals already within the budget are then evaluated as proposed, not scaled up to it);
    ``strategy_options`` are keyword arguments for the strategy's constructor;
    ``channel_multiple`` rounds kept channel counts (``space.kept_channels``);
    ``latency_batch`` is the batch size latency budgets are predicted and measured at.
    ``knobs`` names the knob kinds to search (empty: those that can lower the budget's
    metrics, ``space.KINDS_FOR_METRIC``); ``sparsity_pattern`` and ``conv_decomposition``
    shape the sparsity and rank knobs (see ``spaces.build_space``).
    """

    budget: Budget
    trials: int | None = None
    strategy: str = "bo"
    seed: int = 0
    calibration_batches: int = 20
    finetune_steps: int = 20
    final_finetune_steps: int = 300
    lr: float = 1e-3
    temperature: float = 4.0
    knobs: tuple[str, ...] = ()
    sparsity_pattern: str = "unstructured"
    conv_decomposition: str = "tucker2"
    channel_multiple: int = 8
    latency_batch: int = 1
    max_accuracy_drop: float = 1.0
    objective: str = "accuracy"
    strategy_options: dict[str, Any] = field(default_factory=dict)

    def recovery(self, final: bool, scan: bool = False) -> dict[str, Any]:
        return {
            "calibration_batches": self.calibration_batches,
            "finetune_steps": 0 if scan else self.final_finetune_steps if final else self.finetune_steps,
            "lr": self.lr, "temperature": self.temperature, "seed": self.seed,
        }


@dataclass
class SearchResult:
    recipe: Recipe
    recipe_path: Path
    model: nn.Module
    history: list[TrialRecord] = field(default_factory=list)
    interrupted: bool = False


def search_space(workload: Workload, settings: SearchSettings) -> Space:
    """The model's space with the knob kinds the search turns: ``settings.knobs``, else the
    kinds the strategy is limited to (haloc: rank), else those that lower the budget's metrics."""
    kinds = settings.knobs
    if not kinds and settings.strategy in STRATEGIES:
        kinds = STRATEGIES[settings.strategy].knob_kinds
    if not kinds:
        for metric in settings.budget.metrics:
            kinds += tuple(k for k in KINDS_FOR_METRIC[metric] if k not in kinds)
    space = build_space(workload.model, workload.example_input, settings.sparsity_pattern, settings.conv_decomposition)
    return replace(space.restrict(kinds), channel_multiple=settings.channel_multiple,
                   latency_models=latency_models_for(settings.budget), latency_batch=settings.latency_batch)


def latency_key(term) -> str:
    """The cost name of a latency budget term: ``latency@<target>``."""
    return f"latency@{term.target}"


def latency_models_for(budget: Budget) -> dict[str, Any]:
    """The latency model of every latency term of ``budget``, by cost name."""
    from .latency_models import get_latency_model

    models = {}
    for term in budget.terms:
        if term.metric == "latency":
            models[latency_key(term)] = get_latency_model(term.target)
    return models


def shipped(model: nn.Module, fold: bool = True, channels_last: bool = True) -> nn.Module:
    """An eval-mode copy of ``model`` as ``export_model`` ships it: BatchNorm folded into
    the convolution before it where possible (``fold``) and, for models with 2-d
    convolutions, channels-last weights (``channels_last``).  Whole-model latency
    measurements time this eager copy."""
    model = fold_batchnorm(model) if fold else copy.deepcopy(model).eval()
    if channels_last and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model = model.to(memory_format=torch.channels_last)
    return model


def calibrate_latency(workload: Workload, space: Space, budget: Budget) -> Space:
    """Calibrate the per-op ``cpu`` latency model against whole models measured on this
    machine (the base and two compressed candidates near the budget; see
    ``latency_models.calibrated``), so a ``latency=...@cpu`` budget holds when measured."""
    from .latency_models.calibrated import CalibratedLatency

    models = dict(space.latency_models)
    for term in budget.terms:
        key = latency_key(term)
        if term.metric != "latency" or term.target != "cpu" or isinstance(models.get(key), CalibratedLatency):
            continue
        inner = models[key]
        x = workload.example_input.expand(space.latency_batch, *workload.example_input.shape[1:]).contiguous()

        def measure(candidate) -> float:
            model = shipped(bake(compress(workload.model, space, space.resolve(candidate), x)))
            return sorted(measure_cpu_latency(model, x, repeats=30) for _ in range(3))[1]

        def predicted(candidate) -> float:
            return inner.total(space_ops(space, space.resolve(candidate)), space.latency_batch)

        neutral = space.neutral()
        points = [(predicted(neutral), measure(neutral))]
        model = CalibratedLatency.fit(inner, points)
        for _ in range(2):  # project with the current calibration, measure there, refit
            trial_space = replace(space, latency_models={**models, key: model})
            limit = term.limit(points[0][1])
            try:
                candidate = project(trial_space, {k.name: k.high for k in space.knobs}, {key: limit})
            except BudgetError:
                break
            points.append((predicted(candidate), measure(candidate)))
            model = CalibratedLatency.fit(inner, points)
        log.info("cpu latency calibrated on %d measured models: ms = %.3f + %.3f x per-op sum", len(points),
                 model.a, model.b)
        models[key] = model
    return replace(space, latency_models=models)


def predicted_latency(space: Space, settings) -> dict[str, float]:
    """The space's latency predictions for ``settings`` (empty without latency budgets)."""
    return {k: v for k, v in space.cost(settings).items() if k.startswith("latency@")} if space.latency_models else {}


def base_metrics(workload: Workload) -> dict[str, float]:
    metrics = measure_costs(workload.model, workload.example_input)
    metrics["accuracy"] = accuracy(workload.model, workload.test)
    return metrics


def limits_for(budget: Budget, base: dict[str, float]) -> dict[str, float]:
    """Absolute limits by cost name (``latency@<target>`` for latency terms); ``base``
    holds the base model's value of each."""
    return {(latency_key(t) if t.metric == "latency" else t.metric): t.limit(base[latency_key(t) if t.metric == "latency"
                                                                                 else t.metric]) for t in budget.terms}


def recover(model: nn.Module, teacher: nn.Module, workload: Workload, recovery: dict[str, Any]) -> None:
    """Recalibrate BatchNorm, then fine-tune with distillation from ``teacher``."""
    recalibrate_batchnorm(model, workload.train, int(recovery["calibration_batches"]))
    distill(model, teacher, workload.train, int(recovery["finetune_steps"]), float(recovery["lr"]),
            float(recovery["temperature"]), int(recovery["seed"]))


def evaluate_trial(workload: Workload, space: Space, candidate: dict[str, float], settings: SearchSettings,
                   limits: dict[str, float], purpose: str = SEARCH,
                   channel_order: dict[str, list[int]] | None = None) -> tuple[float, dict[str, float], bool]:
    """Proxy accuracy (validation), measured costs and feasibility of one candidate."""
    model = compress(workload.model, space, space.resolve(candidate, channel_order), workload.example_input)
    recover(model, workload.model, workload, settings.recovery(final=False, scan=purpose == SCAN))
    score = accuracy(model, workload.val)  # with the weight constraints attached, as measured
    if not math.isfinite(score):
        raise FloatingPointError("accuracy is not finite")
    costs = measure_costs(model, workload.example_input)
    costs.update(predicted_latency(space, space.resolve(candidate, channel_order)))
    feasible = all(costs[m] <= limit for m, limit in limits.items())
    return score, costs, feasible


def study_config(workload: Workload, settings: SearchSettings, space: Space) -> dict[str, Any]:
    """What identifies a search: a study in ``--out`` resumes only with the same config."""
    return {
        "model": workload.fingerprint, "budget": str(settings.budget), "strategy": settings.strategy,
        "seed": settings.seed, "knobs": ",".join(space.knob_names),
        "sparsity_pattern": settings.sparsity_pattern, "conv_decomposition": settings.conv_decomposition,
        "channel_multiple": settings.channel_multiple, "latency_batch": settings.latency_batch,
        "final_finetune_steps": settings.final_finetune_steps, "objective": settings.objective, "max_accuracy_drop": settings.max_accuracy_drop,
        "strategy_options": repr(sorted(settings.strategy_options.items())),
        "recovery": repr(sorted(settings.recovery(final=False).items())),
    }


def finished(history: list[TrialRecord]) -> int:
    """Search trials that finished (scans and failures do not count toward --trials)."""
    return sum(r.state == COMPLETE for r in search_trials(history))


def measured_recipe(workload: Workload, settings: SearchSettings, problem: Problem, record: TrialRecord,
                    history: list[TrialRecord]) -> tuple[Recipe, nn.Module]:
    """The recipe of one trial, replayed (final fine-tune) and measured, with its model."""
    recipe = recipe_for(workload, settings, problem, record, finished(history))
    log.info("fine-tuning the recipe of trial %d (%d steps)", record.number, settings.final_finetune_steps)
    model, compressed = replay(workload, recipe)
    compressed.update(predicted_latency(problem.space, recipe.layers))  # calibrated, at the search's batch
    base = dict(problem.base)
    base["latency_cpu_ms"], compressed["latency_cpu_ms"] = measure_pair(workload.model, model, workload.example_input)
    recipe.metrics = {"base": base, "compressed": compressed}
    return recipe, model


def recipe_for(workload: Workload, settings: SearchSettings, problem: Problem, record: TrialRecord,
               trials: int) -> Recipe:
    """The (not yet measured) recipe of one trial."""
    return Recipe(
        model={"name": workload.name, "fingerprint": workload.fingerprint,
               "input_shape": list(workload.example_input.shape[1:])},
        budget=settings.budget.to_strings(),
        layers=problem.space.resolve(record.candidate, record.channel_order),
        search={
            "strategy": settings.strategy, "trials": trials,
            "seed": settings.seed, "best_trial": record.number, "best_proxy_accuracy": record.score,
            "proxy_finetune_steps": settings.finetune_steps, "autocompress": __version__,
        },
        recovery=settings.recovery(final=True),
        excluded=dict(problem.space.excluded),
    )


def pareto_front(history: list[TrialRecord], metric: str) -> list[TrialRecord]:
    """Feasible search trials no other one beats on both proxy accuracy and ``metric``."""
    points = [r for r in feasible_trials(history) if metric in r.metrics]
    front = [r for r in points if not any(
        o.score >= r.score and o.metrics[metric] <= r.metrics[metric]
        and (o.score > r.score or o.metrics[metric] < r.metrics[metric]) for o in points)]
    return sorted(front, key=lambda r: r.metrics[metric])


def save_front(problem: Problem, history: list[TrialRecord], path: Path) -> None:
    """Write the accuracy/cost front (``pareto.yaml``); ``autocompress export`` turns any
    of its trials into a recipe."""
    import yaml

    metric = problem.primary_metric
    front = [{"trial": r.number, "proxy_accuracy": r.score, metric: r.metrics[metric],
              f"{metric}_ratio": r.metrics[metric] / problem.base[metric],
              **{m: v for m, v in r.metrics.items() if m != metric}} for r in pareto_front(history, metric)]
    path.write_text(yaml.safe_dump({"objective": ["proxy_accuracy", metric], "base": dict(problem.base),
                                    "front": front}, sort_keys=False))



def settings_from_config(config: dict[str, Any]) -> SearchSettings:
    """The SearchSettings a study was made with, from its stored ``study_config``
    (``trials`` is left at its default).  Raises StudyError for a study that lacks a
    setting (one made by an older autocompress)."""
    import ast

    from . import budget as _budget
    from .errors import StudyError

    missing = [k for k in ("budget", "knobs", "recovery", "final_finetune_steps", "strategy_options") if k not in config]
    if missing:
        raise StudyError(f"the study does not record {missing[0]} (made by an older autocompress); "
                         "rerun the search to export its trials")
    recovery = dict(ast.literal_eval(config["recovery"]))
    kinds = tuple(dict.fromkeys(name.rsplit("/", 1)[-1] for name in config["knobs"].split(",") if name))
    return SearchSettings(
        budget=_budget.parse(config["budget"]), strategy=config["strategy"], seed=int(config["seed"]),
        calibration_batches=int(recovery["calibration_batches"]), finetune_steps=int(recovery["finetune_steps"]),
        final_finetune_steps=int(config["final_finetune_steps"]), lr=float(recovery["lr"]),
        temperature=float(recovery["temperature"]), knobs=kinds, sparsity_pattern=config["sparsity_pattern"],
        conv_decomposition=config["conv_decomposition"], channel_multiple=int(config["channel_multiple"]),
        latency_batch=int(config["latency_batch"]), max_accuracy_drop=float(config["max_accuracy_drop"]),
        objective=config["objective"], strategy_options=dict(ast.literal_eval(config["strategy_options"])),
    )


def export_trial(workload: Workload, out: str | Path, trial: int,
                 path: str | Path | None = None) -> tuple[Recipe, Path, nn.Module]:
    """Turn one trial of the search in ``out`` (a point of ``pareto.yaml``, or any complete
    search trial within the budget) into a recipe: replayed with the search's final
    fine-tune, measured, and saved to ``path`` (default ``out/recipe-trial-N.yaml``).

    Raises StudyError for a folder without a study and for a trial that is unknown,
    failed, a sensitivity scan or over the budget; RecipeError for another model.
    """
    from .errors import StudyError

    out = Path(out)
    study = Study.open(*study_location(out))
    config, history = study.config, study.history()
    if config.get("model") != workload.fingerprint:
        raise RecipeError(f"the search in {out} was made for model fingerprint {config.get('model')}, not for "
                          f"{workload.name!r} ({workload.fingerprint}); pass the model it was made for with "
                          "--model/--weights")
    settings = settings_from_config(config)
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
    space = calibrate_latency(workload, search_space(workload, settings), settings.budget)
    if space.knob_names != config["knobs"].split(","):
        raise StudyError(f"the search in {out} turned other knobs than this model's space has; rerun the search")
    base = {k: v for k, v in study.base.items() if k != "proxy_accuracy"}
    problem = Problem(space, limits_for(settings.budget, base), base, study.base.get("proxy_accuracy", 100.0),
                      settings.max_accuracy_drop, settings.objective, workload, settings.recovery(final=False))
    recipe, model = measured_recipe(workload, settings, problem, record, history)
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


def replay(workload: Workload, recipe: Recipe, finetune_epochs: float | None = None) -> tuple[nn.Module, dict[str, float]]:
    """Rebuild the compressed model a recipe describes, measure it (test accuracy) and
    return it baked into plain modules.  ``finetune_epochs`` replaces the recipe's final
    fine-tune (distillation from the base model) by that many passes over the training
    batches."""
    space = check_recipe(workload, recipe)
    model = compress(workload.model, space, recipe.layers, workload.example_input)
    recovery = dict(recipe.recovery)
    if finetune_epochs is not None:
        recovery["finetune_steps"] = finetune_steps_for(workload, finetune_epochs)
    recover(model, workload.model, workload, recovery)
    metrics = measure_costs(model, workload.example_input)
    from . import budget as _budget

    analytic = {k: m for k, m in latency_models_for(_budget.parse(recipe.budget)).items() if m.kind != "measured"}
    metrics.update(predicted_latency(replace(space, latency_models=analytic), recipe.layers))
    metrics["accuracy"] = accuracy(model, workload.test)
    return bake(model), metrics


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


def measure_pair(base: nn.Module, compressed: nn.Module, example_input: torch.Tensor,
                 rounds: int = 3) -> tuple[float, float]:
    """CPU latency (ms, median) of two models at the example's batch size, timed in
    alternating rounds so machine noise hits both alike."""
    a, b = [], []
    for _ in range(rounds):
        a.append(measure_cpu_latency(base, example_input, repeats=30))
        b.append(measure_cpu_latency(compressed, example_input, repeats=30))
    return sorted(a)[len(a) // 2], sorted(b)[len(b) // 2]


def export_model(model: nn.Module, example_input: torch.Tensor, path: str | Path, fold: bool = True,
                 channels_last: bool = True) -> None:
    """Write a self-contained ``torch.export`` program with a dynamic batch dimension,
    with BatchNorm folded into the convolution before it where possible (``fold``) and,
    for models with 2-d convolutions, weights in channels-last layout (``channels_last``:
    oneDNN then runs NHWC kernels, which suit narrow pruned layers; BENCHMARKS.md)."""
    batch = torch.export.Dim("batch", min=1, max=65536)
    example = example_input.expand(2, *example_input.shape[1:]).contiguous()
    program = torch.export.export(shipped(model, fold, channels_last), (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))


def require_onnx() -> None:
    """AutocompressError naming the install command unless the ONNX exporter's packages
    (``onnx``, ``onnxscript``) are installed."""
    import importlib.util

    if importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxscript") is None:
        raise AutocompressError("--onnx needs the onnx and onnxscript packages; "
                                "pip install 'autocompress[onnx]' (or pip install onnx onnxscript)")


def export_onnx(model: nn.Module, example_input: torch.Tensor, path: str | Path, fold: bool = True) -> None:
    """Write an ONNX model (opset of torch's dynamo exporter) with a dynamic batch
    dimension and BatchNorm folded (``fold``).  Needs the ``onnx`` and ``onnxscript``
    packages (``pip install 'autocompress[onnx]'``); AutocompressError without them."""
    require_onnx()
    example = example_input.expand(2, *example_input.shape[1:]).contiguous()
    batch = torch.export.Dim("batch", min=1, max=65536)
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms" and the like
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.onnx.export(shipped(model, fold, channels_last=False), (example,), dynamo=True,
                                        dynamic_shapes=({0: batch},), input_names=["input"], output_names=["output"],
                                        verbose=False)
    finally:
        onnx_log.setLevel(level)
    program.save(str(path))
