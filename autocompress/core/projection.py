"""Budget projection: scale a proposal until it just meets the budget.

A proposal is read as an allocation profile; the projected candidate is
``clip(density * level, low, high)`` per knob with the largest global ``level`` whose
analytic costs are all within the limits.  No trial is spent on an infeasible point, and
no compression is wasted past what the budget asks.
"""
from __future__ import annotations

from collections.abc import Mapping

from .errors import BudgetError
from .space import Candidate, Space
from .trial import SCAN


def fits(space: Space, candidate: Mapping[str, float], limits: Mapping[str, float]) -> bool:
    cost = space.candidate_cost(candidate)
    return all(cost[metric] <= limit for metric, limit in limits.items())


def _scaled(space: Space, proposal: Mapping[str, float], level: float) -> Candidate:
    return {k.name: min(k.high, max(k.low, proposal.get(k.name, k.high) * level)) for k in space.knobs}


def check_reachable(space: Space, limits: Mapping[str, float], base: Mapping[str, float]) -> None:
    """Raise BudgetError if even the most compressed candidate misses a limit."""
    cost = space.candidate_cost(space.most_compressed())
    for metric, limit in limits.items():
        if cost[metric] > limit:
            raise BudgetError(
                f"the {metric} budget cannot be met: the most this model can be compressed is "
                f"{metric}={cost[metric] / base[metric]:.3f} of the base ({cost[metric]:.4g} > {limit:.4g})"
            )


def project(space: Space, proposal: Mapping[str, float], limits: Mapping[str, float],
            iterations: int = 50) -> Candidate:
    """The feasible candidate closest to ``proposal`` along its allocation profile.

    Raises BudgetError if no level meets the limits (see ``check_reachable``).
    """
    lows = [max(proposal.get(k.name, k.high), 1e-9) for k in space.knobs]
    top = max((k.high / p for k, p in zip(space.knobs, lows)), default=1.0)
    if fits(space, _scaled(space, proposal, top), limits):
        return _scaled(space, proposal, top)
    lo, hi = 0.0, top
    if not fits(space, _scaled(space, proposal, lo), limits):
        raise BudgetError("no setting of this space meets the budget")
    for _ in range(iterations):
        mid = (lo + hi) / 2
        if fits(space, _scaled(space, proposal, mid), limits):
            lo = mid
        else:
            hi = mid
    return _scaled(space, proposal, lo)


def candidate_for(space: Space, proposal: Mapping[str, float], limits: Mapping[str, float], purpose: str,
                  keep_fitting: bool) -> Candidate:
    """What is evaluated for a proposal: a scan as given; a search proposal projected onto
    the budget, unless ``keep_fitting`` (a strategy that asks inside the budget on
    purpose, or the pareto objective) and it already fits.  Raises BudgetError as
    ``project`` does."""
    if purpose == SCAN or keep_fitting and fits(space, proposal, limits):
        return dict(proposal)
    return project(space, proposal, limits)
