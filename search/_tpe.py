from __future__ import annotations

from collections.abc import Sequence

import optuna

from ..core.space import Candidate
from ..core.trial import COMPLETE, FAILED, TrialRecord, search_trials
from ._optuna import knob_distributions, proposal_params, quietly
from .base import Problem, Strategy


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
        distributions = knob_distributions(space)
        sampler = quietly(optuna.samplers.TPESampler, seed=self.seed * 1_000_003 + len(history), multivariate=True,
                          n_startup_trials=self.n_startup_trials)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        for record in history:
            params = proposal_params(record, distributions)
            if record.state == COMPLETE and record.score is not None:
                state, value = optuna.trial.TrialState.COMPLETE, record.score
            elif record.state == FAILED:
                state, value = optuna.trial.TrialState.FAIL, None
            else:
                continue
            trial = optuna.trial.create_trial(params=params, distributions=distributions, value=value, state=state)
            study.add_trial(trial)
        return dict(quietly(study.ask, distributions).params)
