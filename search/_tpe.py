from __future__ import annotations

import warnings
from typing import Sequence

import optuna

from ..space import Candidate, Space
from ..trial import COMPLETE, FAILED, TrialRecord
from .base import Problem, Strategy, search_trials


class BayesianStrategy(Strategy):
    """Bayesian optimisation with Optuna's multivariate TPE over the per-knob allocation.

    The first proposal is the uniform allocation (every knob equal), so the search starts
    from the baseline; afterwards a TPE model is refitted from the history on every ask.
    """

    name = "bo"

    def __init__(self, seed: int = 0, n_startup_trials: int = 8):
        super().__init__(seed)
        self.n_startup_trials = n_startup_trials

    def ask(self, problem: Problem, history: Sequence[TrialRecord]) -> Candidate | None:
        space = problem.space
        history = search_trials(history)
        if not history:
            return {k.name: k.high for k in space.knobs}
        distributions = {k.name: optuna.distributions.FloatDistribution(k.low, k.high) for k in space.knobs}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            sampler = optuna.samplers.TPESampler(
                seed=self.seed * 1_000_003 + len(history), multivariate=True,
                n_startup_trials=self.n_startup_trials,
            )
        study = optuna.create_study(direction="maximize", sampler=sampler)
        for record in history:
            params = {n: min(d.high, max(d.low, record.proposal.get(n, d.high))) for n, d in distributions.items()}
            if record.state == COMPLETE and record.score is not None:
                state, value = optuna.trial.TrialState.COMPLETE, record.score
            elif record.state == FAILED:
                state, value = optuna.trial.TrialState.FAIL, None
            else:
                continue
            study.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=value, state=state))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return dict(study.ask(distributions).params)
