"""The search loop and recipe replay: wires spaces, search, compress and evaluators.

Data flows one way: model -> Space -> strategy proposal -> budget projection -> compress
-> evaluate -> study; the best feasible trial becomes a Recipe, and ``replay`` rebuilds
the compressed model from a Recipe (used by both ``search`` and ``apply``).
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import __version__
from .budget import Budget
from .compress import bake, compress
from .errors import BudgetError, RecipeError
from .evaluators import accuracy, distill, measure_costs, recalibrate_batchnorm
from .latency_models import measure_cpu_latency
from .recipe import Recipe
from .search import check_reachable, get_strategy, project
from .space import KINDS_FOR_METRIC, Space
from .spaces import build_space
from .study import Study
from .trial import COMPLETE, TrialRecord
from .workload import Workload

log = logging.getLogger(__name__)


@dataclass
class SearchSettings:
    """Everything that defines a search besides the model and data.

    ``finetune_steps`` is the per-trial distillation fine-tune of the proxy (0: BatchNorm
    recalibration only); ``final_finetune_steps`` is the fine-tune of the chosen recipe.
    ``knobs`` names the knob kinds to search (empty: those that can lower the budget's
    metrics, ``space.KINDS_FOR_METRIC``); ``sparsity_pattern`` and ``conv_decomposition``
    shape the sparsity and rank knobs (see ``spaces.build_space``).
    """

    budget: Budget
    trials: int = 30
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

    def recovery(self, final: bool) -> dict[str, Any]:
        return {
            "calibration_batches": self.calibration_batches,
            "finetune_steps": self.final_finetune_steps if final else self.finetune_steps,
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
    """The model's space with the knob kinds the search turns."""
    kinds = settings.knobs
    if not kinds:
        for metric in settings.budget.metrics:
            kinds += tuple(k for k in KINDS_FOR_METRIC[metric] if k not in kinds)
    space = build_space(workload.model, workload.example_input, settings.sparsity_pattern, settings.conv_decomposition)
    return space.restrict(kinds)


def base_metrics(workload: Workload) -> dict[str, float]:
    metrics = measure_costs(workload.model, workload.example_input)
    metrics["accuracy"] = accuracy(workload.model, workload.test)
    return metrics


def limits_for(budget: Budget, base: dict[str, float]) -> dict[str, float]:
    for term in budget.terms:
        if term.metric == "latency":
            raise BudgetError(
                f"budget {term} needs a latency model for {term.target!r}, which this release does not have yet; "
                "use flops=, params= or size= budgets"
            )
    return {t.metric: t.limit(base[t.metric]) for t in budget.terms}


def recover(model: nn.Module, teacher: nn.Module, workload: Workload, recovery: dict[str, Any]) -> None:
    """Recalibrate BatchNorm, then fine-tune with distillation from ``teacher``."""
    recalibrate_batchnorm(model, workload.train, int(recovery["calibration_batches"]))
    distill(model, teacher, workload.train, int(recovery["finetune_steps"]), float(recovery["lr"]),
            float(recovery["temperature"]), int(recovery["seed"]))


def evaluate_trial(workload: Workload, space: Space, candidate: dict[str, float], settings: SearchSettings,
                   limits: dict[str, float]) -> tuple[float, dict[str, float], bool]:
    """Proxy accuracy (validation), measured costs and feasibility of one candidate."""
    model = compress(workload.model, space, space.resolve(candidate), workload.example_input)
    recover(model, workload.model, workload, settings.recovery(final=False))
    score = accuracy(model, workload.val)  # with the weight constraints attached, as measured
    if not math.isfinite(score):
        raise FloatingPointError("accuracy is not finite")
    costs = measure_costs(model, workload.example_input)
    feasible = all(costs[m] <= limit for m, limit in limits.items())
    return score, costs, feasible


def run_search(workload: Workload, settings: SearchSettings, out: str | Path, progress: bool = True) -> SearchResult:
    """Search, write ``out/recipe.yaml`` and ``out/study.db``; resumes a study already in ``out``.

    Raises BudgetError for a budget the model cannot meet, StudyError for an ``out``
    holding a different search; a KeyboardInterrupt keeps every finished trial.
    """
    from tqdm.auto import tqdm

    out = Path(out)
    strategy = get_strategy(settings.strategy, seed=settings.seed)
    base = base_metrics(workload)
    limits = limits_for(settings.budget, base)
    space = search_space(workload, settings)
    check_reachable(space, limits, base)
    out.mkdir(parents=True, exist_ok=True)
    config = {
        "model": workload.fingerprint, "budget": str(settings.budget), "strategy": settings.strategy,
        "seed": settings.seed, "knobs": ",".join(space.knob_names),
        "recovery": repr(sorted(settings.recovery(final=False).items())),
    }
    study = Study(f"sqlite:///{(out / 'study.db').resolve()}", config)
    history = study.history()
    done = sum(r.state == COMPLETE for r in history)
    if done:
        log.info("resuming the study in %s with %d finished trials", out, done)
    bar = tqdm(total=settings.trials, initial=min(done, settings.trials), desc="search", unit="trial",
               disable=not progress, dynamic_ncols=True)
    _show_best(bar, history)
    interrupted = False
    try:
        while done < settings.trials:
            proposal = strategy.ask(space, history)
            if proposal is None:
                log.info("strategy %s has nothing more to try", settings.strategy)
                break
            candidate = project(space, proposal, limits)
            trial = study.start(space, proposal, candidate)
            try:
                score, costs, feasible = evaluate_trial(workload, space, candidate, settings, limits)
            except KeyboardInterrupt:
                study.fail(trial, "interrupted by the user")
                raise
            except Exception as exc:  # a failing trial is recorded; the search goes on
                log.warning("trial %d failed: %s: %s", trial.number, type(exc).__name__, exc)
                study.fail(trial, f"{type(exc).__name__}: {exc}")
            else:
                study.finish(trial, score, costs, feasible)
                done += 1
                bar.update(1)
            history = study.history()
            _show_best(bar, history)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    if interrupted:
        raise KeyboardInterrupt
    return _finish(workload, settings, space, base, history, out)


def _show_best(bar, history: list[TrialRecord]) -> None:
    best = _best(history)
    if best is not None:
        bar.set_postfix_str(f"best feasible proxy acc {best.score:.2f}% (trial {best.number})")


def _best(history: list[TrialRecord]) -> TrialRecord | None:
    feasible = [r for r in history if r.state == COMPLETE and r.feasible and r.score is not None]
    return max(feasible, key=lambda r: (r.score, -r.number)) if feasible else None


def _finish(workload: Workload, settings: SearchSettings, space: Space, base: dict[str, float],
            history: list[TrialRecord], out: Path) -> SearchResult:
    best = _best(history)
    if best is None:
        raise BudgetError(f"no finished trial met the budget {settings.budget}; see {out / 'study.db'}")
    recipe = Recipe(
        model={"name": workload.name, "fingerprint": workload.fingerprint,
               "input_shape": list(workload.example_input.shape[1:])},
        budget=settings.budget.to_strings(),
        layers=space.resolve(best.candidate),
        search={
            "strategy": settings.strategy, "trials": sum(r.state == COMPLETE for r in history),
            "seed": settings.seed, "best_trial": best.number, "best_proxy_accuracy": best.score,
            "proxy_finetune_steps": settings.finetune_steps, "autocompress": __version__,
        },
        recovery=settings.recovery(final=True),
        excluded=dict(space.excluded),
    )
    log.info("fine-tuning the chosen recipe (%d steps)", settings.final_finetune_steps)
    model, compressed = replay(workload, recipe)
    base = dict(base)
    base["latency_cpu_ms"], compressed["latency_cpu_ms"] = measure_pair(workload.model, model, workload.example_input)
    recipe.metrics = {"base": base, "compressed": compressed}
    path = out / "recipe.yaml"
    recipe.save(path)
    return SearchResult(recipe, path, model, history)


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


def replay(workload: Workload, recipe: Recipe) -> tuple[nn.Module, dict[str, float]]:
    """Rebuild the compressed model a recipe describes, measure it (test accuracy) and
    return it baked into plain modules."""
    space = check_recipe(workload, recipe)
    model = compress(workload.model, space, recipe.layers, workload.example_input)
    recover(model, workload.model, workload, recipe.recovery)
    metrics = measure_costs(model, workload.example_input)
    metrics["accuracy"] = accuracy(model, workload.test)
    return bake(model), metrics


def measure_pair(base: nn.Module, compressed: nn.Module, example_input: torch.Tensor,
                 rounds: int = 3) -> tuple[float, float]:
    """CPU latency (ms, median) of two models at the example's batch size, timed in
    alternating rounds so machine noise hits both alike."""
    a, b = [], []
    for _ in range(rounds):
        a.append(measure_cpu_latency(base, example_input, repeats=30))
        b.append(measure_cpu_latency(compressed, example_input, repeats=30))
    return sorted(a)[len(a) // 2], sorted(b)[len(b) // 2]


def export_model(model: nn.Module, example_input: torch.Tensor, path: str | Path) -> None:
    """Write a self-contained ``torch.export`` program with a dynamic batch dimension."""
    batch = torch.export.Dim("batch", min=1, max=65536)
    example = example_input.expand(2, *example_input.shape[1:]).contiguous()
    program = torch.export.export(model.eval(), (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
