from __future__ import annotations

from collections.abc import Sequence

from ..core.projection import fits as within_limits
from ..core.space import Candidate, Space
from ..core.trial import COMPLETE, FAILED, RUNNING, TrialRecord, search_trials
from .base import Problem, Strategy

_RESOLUTION = 1 / 64  # the cost objective's bisection stops when its interval of levels is this narrow
_STEPS = 40  # bisection steps finding the budget's edge level (analytic costs only)


class UniformStrategy(Strategy):
    """The baseline: the same density on every knob.

    Under the accuracy and pareto objectives it proposes the budget's edge (below), which
    the engine keeps as it is (``keeps_feasible``: the budget repair would move knobs one
    by one); deterministic, so it proposes once and is done after one complete trial.

    Under the cost objective it answers the objective's question along the uniform
    profile, a search in one number: the candidate of level ``L`` keeps ``L * high`` of
    every knob (clipped to its range), the first trial is the budget's edge (the highest
    level whose analytic costs meet every limit), and each next one bisects between the
    lowest level whose proxy score met ``problem.accuracy_floor`` and the highest level
    below it that missed (or the level at which every knob is at its lowest).  A midpoint
    that resolves to the same layer settings as an end is not evaluated (it would score
    the same).  Done (None) when the interval is narrower than 1/64 or the budget's edge
    already misses the floor.  Running trials count as meeting the floor until they finish.
    """

    name = "uniform"
    keeps_feasible = True
    objectives = ("accuracy", "pareto", "cost")

    def ask(self, problem: Problem, history: Sequence[TrialRecord]) -> Candidate | None:
        space = problem.space
        if problem.objective == "cost":
            return self._bisect(problem, history)
        if any(r.state == COMPLETE for r in history):
            return None
        bottom = min((k.low / k.high for k in space.knobs), default=1.0)
        return at_level(space, _edge_level(space, problem.limits, bottom))

    def _bisect(self, problem: Problem, history: Sequence[TrialRecord]) -> Candidate | None:
        space = problem.space
        bottom = min((k.low / k.high for k in space.knobs), default=1.0)  # every knob at its lowest
        edge = _edge_level(space, problem.limits, bottom)
        good, bad = [], []
        for record in search_trials(history):
            level = min(edge, max(bottom, min((record.proposal.get(k.name, k.high) / k.high for k in space.knobs),
                                              default=1.0)))
            met = record.state == COMPLETE and record.feasible and record.score >= problem.accuracy_floor
            if met or record.state == RUNNING:
                good.append(level)
            elif record.state == COMPLETE or (record.state == FAILED and not record.interrupted):
                bad.append(level)
        if not good and not bad:
            return at_level(space, edge)
        if not good:
            return None
        upper = min(good)
        lower = max((level for level in bad if level < upper), default=bottom)
        while upper - lower > _RESOLUTION:
            middle = (lower + upper) / 2
            settings = space.resolve(at_level(space, middle))
            if settings == space.resolve(at_level(space, upper)):
                upper = middle
            elif lower in bad and settings == space.resolve(at_level(space, lower)):
                lower = middle
            else:
                return at_level(space, middle)
        return None


def at_level(space: Space, level: float) -> Candidate:
    """The uniform candidate of ``level``: ``level * high`` of every knob, clipped to its range."""
    return {k.name: min(k.high, max(k.low, level * k.high)) for k in space.knobs}


def _edge_level(space: Space, limits, bottom: float) -> float:
    """The highest level in ``[bottom, 1]`` whose analytic costs meet every limit (``bottom``
    when none does: the engine's budget check has refused such a budget before)."""
    def fits(level: float) -> bool:
        return within_limits(space, at_level(space, level), limits)

    if fits(1.0):
        return 1.0
    lo, hi = bottom, 1.0
    for _ in range(_STEPS):
        middle = (lo + hi) / 2
        lo, hi = (middle, hi) if fits(middle) else (lo, middle)
    return lo
