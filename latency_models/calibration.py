"""Calibrating the per-op ``cpu`` latency model against whole models timed on this machine."""
from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import replace

from ..compress import bake, compress
from ..compress.export import shipped
from ..core.budget import Budget
from ..core.errors import BudgetError
from ..core.ops import space_ops
from ..core.projection import project
from ..core.space import Space
from ..core.workload import Workload
from ..evaluators import batches
from .calibrated import CalibratedLatency
from .measured import measure_cpu_latency

log = logging.getLogger(__name__)


def calibrate_latency(workload: Workload, space: Space, budget: Budget, given: Collection[str] = ()) -> Space:
    """Calibrate the per-op ``cpu`` latency model against whole models measured on this
    machine (the base and two compressed candidates near the budget; see
    ``latency_models.calibrated``), so a ``latency=...@cpu`` budget holds when measured.
    Targets in ``given`` (whose model the user gave) are left as they are.  Returns the
    space with the calibrated models."""
    models = dict(space.latency_models)
    x = batches.expand(workload.example_input, space.latency_batch)

    def measure(candidate) -> float:
        model = shipped(bake(compress(workload.model, space, space.resolve(candidate), x)))
        return sorted(measure_cpu_latency(model, x, repeats=30) for _ in range(3))[1]

    for term in budget.terms:
        key = term.cost_name
        if term.metric != "latency" or term.target != "cpu" or term.target in given \
                or isinstance(models.get(key), CalibratedLatency):
            continue
        inner = models[key]

        def predicted(candidate, inner=inner) -> float:
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
