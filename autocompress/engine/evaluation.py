"""Evaluating one trial: the space a search turns, the base model's metrics, the budget's
limits, recovery (BatchNorm recalibration and distillation) and the proxy score."""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import torch.nn as nn

from ..compress import compress
from ..core.budget import Budget
from ..core.space import Space
from ..core.trial import SCAN, SEARCH
from ..core.workload import Workload
from ..evaluators import accuracy, distill, measure_costs, recalibrate_batchnorm
from ..latency_models import LatencyModel, get_latency_model
from ..latency_models.registry import model_from_dict
from ..spaces import build_space
from .settings import SearchSettings


def search_space(workload: Workload, settings: SearchSettings) -> Space:
    """The model's space with the knob kinds the search turns (``settings.knob_kinds()``)
    and the budget's latency models (not calibrated yet)."""
    space = build_space(workload.model, workload.example_input, settings.sparsity_pattern, settings.conv_decomposition)
    return replace(space.restrict(settings.knob_kinds()), channel_multiple=settings.channel_multiple,
                   latency_models=latency_models_for(settings.budget, settings.latency_models),
                   latency_batch=settings.latency_batch)


def latency_models_for(budget: Budget, given: Mapping[str, LatencyModel] | None = None) -> dict[str, LatencyModel]:
    """The latency model of every latency term of ``budget``, by cost name: the one
    ``given`` for its target, else the named target's (BudgetError for an unknown one)."""
    given = given or {}
    return {term.cost_name: given[term.target] if term.target in given else get_latency_model(term.target)
            for term in budget.terms if term.metric == "latency"}


def storable_latency_models(space: Space, settings: SearchSettings) -> dict[str, dict]:
    """The space's latency models a study keeps (``to_dict()`` by cost name): all but the
    per-op measured ones (each process times ops itself, with its disk cache) and those the
    settings give (stored with the settings)."""
    given = {f"latency@{target}" for target in settings.latency_models}
    return {name: model.to_dict() for name, model in space.latency_models.items()
            if model.kind != "measured" and name not in given}


def with_latency_models(space: Space, stored: dict[str, dict]) -> Space:
    """``space`` with the latency models a study stored in place of its own."""
    models = {name: model_from_dict(data, f"the study's latency model {name}") for name, data in stored.items()}
    return replace(space, latency_models={**space.latency_models, **models})


def predicted_latency(space: Space, layers: Mapping[str, Any]) -> dict[str, float]:
    """The space's latency predictions for resolved per-layer ``layers`` (empty without
    latency budgets)."""
    return {k: v for k, v in space.cost(layers).items() if k.startswith("latency@")} if space.latency_models else {}


def base_metrics(workload: Workload) -> dict[str, float]:
    metrics = measure_costs(workload.model, workload.example_input)
    metrics["accuracy"] = accuracy(workload.model, workload.test)
    return metrics


def limits_for(budget: Budget, base: dict[str, float]) -> dict[str, float]:
    """Absolute limits by cost name (``latency@<target>`` for latency terms); ``base``
    holds the base model's value of each."""
    return {t.cost_name: t.limit(base[t.cost_name]) for t in budget.terms}


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
