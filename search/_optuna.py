"""What the Optuna-backed strategies (bo, nsga2) share: an in-memory study rebuilt from
the search trials on every ask, over one float distribution per knob, and what a finished
trial tells it (its primary cost and the constraints it violates)."""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import optuna

from ..core.space import Space
from ..core.trial import TrialRecord
from .base import Problem


def knob_distributions(space: Space) -> dict[str, optuna.distributions.FloatDistribution]:
    return {k.name: optuna.distributions.FloatDistribution(k.low, k.high) for k in space.knobs}


def proposal_params(record: TrialRecord, distributions: dict[str, Any]) -> dict[str, float]:
    """The trial's proposal (what the strategy asked, before the budget projection) as params."""
    return {n: min(d.high, max(d.low, record.proposal.get(n, d.high))) for n, d in distributions.items()}


def relative_cost(problem: Problem, record: TrialRecord) -> float:
    """A complete trial's primary cost as a fraction of the base model's."""
    return problem.primary_cost(record) / problem.base.get(problem.primary_metric, 1.0)


def violations(problem: Problem, record: TrialRecord) -> dict[str, float]:
    """A complete trial's constraints as Optuna reads them (``create_trial(constraints=)``:
    above 0 is violated): per budget metric, how far its measured cost is over the limit
    (a fraction); under the cost objective also ``accuracy``, the points its proxy score
    is below ``problem.accuracy_floor``."""
    costs = {**problem.space.candidate_cost(record.candidate), **record.metrics}
    out = {m: costs[m] / limit - 1.0 for m, limit in problem.limits.items()}
    if problem.objective == "cost":
        out["accuracy"] = problem.accuracy_floor - float(record.score)
    return out


def quietly(make: Callable[..., Any], *args, **kwargs) -> Any:
    """``make(*args, **kwargs)`` without Optuna's ExperimentalWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return make(*args, **kwargs)
