from __future__ import annotations

from collections.abc import Sequence

from ..core.space import Candidate
from ..core.trial import COMPLETE, TrialRecord
from .base import Problem, Strategy


class UniformStrategy(Strategy):
    """The baseline: the same density on every knob, set by the budget projection.

    Deterministic, so it proposes once and is done after one complete trial.
    """

    name = "uniform"

    def ask(self, problem: Problem, history: Sequence[TrialRecord]) -> Candidate | None:
        space = problem.space
        if any(r.state == COMPLETE for r in history):
            return None
        return {k.name: k.high for k in space.knobs}
