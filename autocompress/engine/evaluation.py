"""Evaluating one trial: the space a search turns, the base model's metrics, the budget's
limits, recovery (structure first, a recovery regime on the dense weights, the weight
constraints, BatchNorm recalibration and the masked distillation fine-tune) and the
proxy score.

Recovery and scoring run on a ``Runtime``'s device (a candidate is compressed on the CPU,
moved there, and moved back to count its costs); the teacher is the base model, or its
copy on the device."""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import torch.nn as nn

from ..compress import constrain, restructure, weight_constraints
from ..core.budget import Budget
from ..core.recipe import DEFAULT_METHOD
from ..core.space import Space
from ..core.trial import SCAN, SEARCH
from ..core.workload import Workload
from ..evaluators import distill, evaluate, measure_costs, recalibrate_batchnorm
from ..evaluators.accuracy import spread_batches
from ..evaluators.device import CPU, Runtime
from ..evaluators.metrics import Metric, get_metric
from ..evaluators.recovery import Recovery, TrainingRun, get_recovery
from ..latency_models import LatencyModel, get_latency_model
from ..latency_models.registry import model_from_dict
from ..spaces import build_space
from .pruning import RUNG_BATCHES, rung_steps
from .settings import SearchSettings

Report = Callable[[float, int], None]
"""``report(score, step)``: a trial's proxy score on part of the validation split after
``step`` fine-tune steps; it raises (``optuna.TrialPruned``) to stop the trial there."""


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


def base_metrics(workload: Workload, metric: Metric | None = None, runtime: Runtime = CPU,
                 teacher: nn.Module | None = None) -> dict[str, float]:
    """The base model's costs (counted on the CPU) and its value of ``metric`` (default:
    accuracy) on the test split under the metric's name (run on ``runtime``'s device:
    ``teacher`` is the base model there).  ModelError for an output the metric cannot read."""
    metric = get_metric(metric)
    metrics = measure_costs(workload.model, workload.example_input)
    metrics[metric.name] = evaluate(teacher if teacher is not None else runtime.place(workload.model), workload.test,
                                    metric, runtime)
    return metrics


def limits_for(budget: Budget, base: dict[str, float]) -> dict[str, float]:
    """Absolute limits by cost name (``latency@<target>`` for latency terms); ``base``
    holds the base model's value of each."""
    return {t.cost_name: t.limit(base[t.cost_name]) for t in budget.terms}


def recovery_regime(recovery: Mapping[str, Any]) -> Recovery:
    """The regime a recipe's (or the settings') recovery names (``method`` with its
    ``params``; ``distill`` without one).  AutocompressError for an unknown one."""
    return get_recovery(str(recovery.get("method", DEFAULT_METHOD)), **dict(recovery.get("params", {}) or {}))


def compress_and_recover(workload: Workload, space: Space, layers: Mapping[str, Mapping[str, Any]],
                         recovery: Mapping[str, Any], runtime: Runtime = CPU, metric: Metric | None = None,
                         teacher: nn.Module | None = None,
                         constrained: Callable[[nn.Module], None] | None = None,
                         rungs: Sequence[int] = (), at_rung: Callable[[nn.Module, int], None] | None = None
                         ) -> nn.Module:
    """The compressed model of resolved per-layer ``layers``, recovered as ``recovery``
    says, on ``runtime``'s device with its weight constraints attached.

    Structure (channels, heads) is removed from a copy of the model; the recovery's regime
    (``recovery_regime``) trains the dense weights towards the constraints for its share
    of ``finetune_steps``, distilling from ``teacher`` (the base model on the device;
    placed there when None); the constraints are computed from the trained weights (on
    the CPU, as ``compress`` does); BatchNorm is recalibrated; ``constrained(model)`` is
    called (to measure the model right after the constraints); the masked distillation
    fine-tune runs the remaining steps, calling ``at_rung(model, n)`` after ``n`` of them
    for each ``n`` in ``rungs`` (``evaluators.distill``).  What the regime, the data or
    ``at_rung`` raise propagates."""
    regime = recovery_regime(recovery)
    first, rest = regime.split(int(recovery["finetune_steps"]))
    model = restructure(workload.model, space, layers, workload.example_input)
    teacher = teacher if teacher is not None else runtime.place(workload.model)
    calibration = int(recovery["calibration_batches"])
    if first > 0:
        model.to(runtime.device)
        recalibrate_batchnorm(model, workload.train, calibration, runtime)
        run = TrainingRun(teacher, workload.train, first, float(recovery["lr"]), float(recovery["temperature"]),
                          int(recovery["seed"]), runtime, metric)
        regime.train(model, weight_constraints(model, space, layers), run)
        model.cpu().eval()
    constrain(model, space, layers, workload.example_input)
    model.to(runtime.device)
    recalibrate_batchnorm(model, workload.train, calibration, runtime)
    if constrained is not None:
        constrained(model)
    distill(model, teacher, workload.train, rest, float(recovery["lr"]), float(recovery["temperature"]),
            int(recovery["seed"]), runtime, metric, rungs=rungs,
            at_rung=None if at_rung is None else lambda step: at_rung(model, step))
    return model


def evaluate_trial(workload: Workload, space: Space, candidate: dict[str, float], settings: SearchSettings,
                   limits: dict[str, float], purpose: str = SEARCH,
                   channel_order: dict[str, list[int]] | None = None, runtime: Runtime = CPU,
                   teacher: nn.Module | None = None,
                   report: Report | None = None,
                   initial_state: Mapping[str, Any] | None = None) -> tuple[float, dict[str, float], bool]:
    """The proxy score (the settings' metric on the validation split, as the engine
    maximises it: ``Metric.score``), measured costs and feasibility of one candidate.
    Recovery and scoring run on ``runtime`` with ``teacher`` (the base model on its
    device; placed here when None); costs are counted on the CPU.

    With ``report`` (a search trial under a pruner) the fine-tune also scores the model
    on ``RUNG_BATCHES`` validation batches spread over the split at each of
    ``pruning.rung_steps`` and calls ``report(score, step)``, which raises to stop the
    trial; the final score is the same as without it.  Scans never report.

    With ``initial_state`` (``Proposal.initial_state``: a strategy's trained weights, some
    or all of the model's state dict) the trial compresses and fine-tunes those weights
    instead of the base model's (``with_weights``); the teacher stays the base model."""
    if initial_state is not None:
        teacher = teacher if teacher is not None else runtime.place(workload.model)
        workload = replace(workload, model=with_weights(workload.model, initial_state))
    metric = settings.make_metric()
    recovery = settings.recovery(final=False, scan=purpose == SCAN)
    rungs, at_rung = [], None
    if report is not None and purpose != SCAN:
        rungs = rung_steps(int(recovery["finetune_steps"]), settings.rungs)
        at_rung = _rung_reporter(workload, metric, runtime, report)
    model = compress_and_recover(workload, space, space.resolve(candidate, channel_order), recovery, runtime, metric,
                                 teacher, rungs=rungs, at_rung=at_rung)
    value = evaluate(model, workload.val, metric, runtime)  # with the weight constraints attached, as measured
    if not math.isfinite(value):
        raise FloatingPointError(f"{metric.name} is not finite")
    score = metric.score(value)
    costs = measure_costs(model.cpu(), workload.example_input)
    costs.update(predicted_latency(space, space.resolve(candidate, channel_order)))
    feasible = all(costs[m] <= limit for m, limit in limits.items())
    return score, costs, feasible


def with_weights(model: nn.Module, state: Mapping[str, Any]) -> nn.Module:
    """A copy of ``model`` with the entries of ``state`` (names of its state dict to
    tensors, some or all) in place of its own.  RuntimeError for a name the model does not
    have or a shape that differs."""
    start = copy.deepcopy(model)
    start.load_state_dict({**start.state_dict(), **state})
    return start


def _rung_reporter(workload: Workload, metric: Metric, runtime: Runtime,
                   report: Report) -> Callable[[nn.Module, int], None]:
    """``at_rung(model, step)``: ``report`` the model's score on ``RUNG_BATCHES``
    validation batches spread over the split (chosen at the first rung)."""
    batches: list[Any] = []

    def at_rung(model: nn.Module, step: int) -> None:
        if not batches:
            batches.extend(spread_batches(workload.val, RUNG_BATCHES))
        report(metric.score(evaluate(model, batches, metric, runtime)), step)

    return at_rung
