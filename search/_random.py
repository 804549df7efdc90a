from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.space import Candidate
from ..core.trial import TrialRecord
from .base import Problem, Strategy


class RandomStrategy(Strategy):
    """Random allocation profiles: every knob uniform in its range, then projected.

    Serves every objective: under pareto and cost the engine evaluates a profile that
    fits the budget as drawn, and ``best`` picks the answer among the trials.
    """

    name = "random"
    objectives = ("accuracy", "pareto", "cost")

    def ask(self, problem: Problem, history: Sequence[TrialRecord]) -> Candidate | None:
        space = problem.space
        rng = np.random.default_rng([self.seed, len(history)])
        return {k.name: float(rng.uniform(k.low, k.high)) for k in space.knobs}
