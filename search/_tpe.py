from __future__ import annotations

from collections.abc import Sequence

import optuna

from ..core.space import Candidate
from ..core.trial import COMPLETE, FAILED, PRUNED, TrialRecord, search_trials
from ._optuna import knob_distributions, proposal_params, quietly, relative_cost, violations
from .base import Problem, Strategy


class BayesianStrategy(Strategy):
    """Bayesian optimisation with Optuna's multivariate TPE over the per-knob allocation.

    The first proposal is the uniform allocation (every knob equal), so the search starts
    from the baseline; afterwards a TPE model is refitted from the history on every ask.
    Under the accuracy and pareto objectives TPE maximises the proxy score.  Under the
    cost objective it minimises the primary cost (a fraction of the base) with
    constraints (``_optuna.violations``): the accuracy floor and the budget's limits;
    Optuna's constrained TPE ranks feasible trials by cost and puts infeasible ones after
    them by their total violation.
    """

    name = "bo"
    objectives = ("accuracy", "pareto", "cost")

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
        cost = problem.objective == "cost"
        study = optuna.create_study(direction="minimize" if cost else "maximize", sampler=sampler)
        for record in history:
            params = proposal_params(record, distributions)
            if record.state == COMPLETE and record.score is not None:
                trial = optuna.trial.create_trial(
                    params=params, distributions=distributions,
                    value=relative_cost(problem, record) if cost else record.score,
                    constraints=violations(problem, record) if cost else None)
            elif record.state == FAILED:
                trial = optuna.trial.create_trial(params=params, distributions=distributions,
                                                  state=optuna.trial.TrialState.FAIL)
            elif record.state == PRUNED and not cost:  # TPE ranks it below every complete trial
                trial = optuna.trial.create_trial(params=params, distributions=distributions,
                                                  state=optuna.trial.TrialState.PRUNED,
                                                  intermediate_values=record.intermediate)
            else:
                continue
            study.add_trial(trial)
        return dict(quietly(study.ask, distributions).params)
