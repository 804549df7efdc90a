"""What the Optuna-backed strategies (bo, nsga2) share: an in-memory study rebuilt from
the search trials on every ask, over one float distribution per knob."""
from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import optuna

from ..core.space import Space
from ..core.trial import TrialRecord


def knob_distributions(space: Space) -> dict[str, optuna.distributions.FloatDistribution]:
    return {k.name: optuna.distributions.FloatDistribution(k.low, k.high) for k in space.knobs}


def proposal_params(record: TrialRecord, distributions: dict[str, Any]) -> dict[str, float]:
    """The trial's proposal (what the strategy asked, before the budget projection) as params."""
    return {n: min(d.high, max(d.low, record.proposal.get(n, d.high))) for n, d in distributions.items()}


def quietly(make: Callable[..., Any], *args, **kwargs) -> Any:
    """``make(*args, **kwargs)`` without Optuna's ExperimentalWarning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return make(*args, **kwargs)
