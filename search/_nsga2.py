from __future__ import annotations

from collections.abc import Sequence

import optuna

from ..core.space import Candidate
from ..core.trial import COMPLETE, FAILED, TrialRecord, search_trials
from ._optuna import knob_distributions, proposal_params, quietly, relative_cost, violations
from .base import Problem, Strategy

_GENERATION_KEY = "NSGAIISampler:generation"


class NSGA2Strategy(Strategy):
    """Multi-objective evolution with Optuna's NSGA-II: maximise proxy accuracy and
    minimise the primary budget metric's cost (``problem.primary_metric``), so the search
    trials spread along the accuracy/cost front (``--objective pareto`` saves it).

    The first proposal is the uniform allocation; afterwards an in-memory NSGA-II study
    is rebuilt from the search trials on every ask (each trial's generation recomputed
    the way the sampler assigns it), seeded by ``seed`` and the history's length.
    ``population_size`` is the number of trials per generation.  Trials whose measured
    costs miss the budget are constraint violations (Optuna reads them off the trials);
    under the cost objective so are trials whose proxy score is below the accuracy floor,
    so the front NSGA-II keeps is the one within the floor, whose cheapest end is the answer.
    """

    name = "nsga2"
    objectives = ("accuracy", "pareto", "cost")

    def __init__(self, seed: int = 0, population_size: int = 10):
        super().__init__(seed)
        if population_size < 2:
            raise ValueError(f"population_size {population_size} must be 2 or more")
        self.population_size = population_size

    def ask(self, problem: Problem, history: Sequence[TrialRecord]) -> Candidate | None:
        space = problem.space
        history = search_trials(history)
        if not history:
            return {k.name: k.high for k in space.knobs}
        distributions = knob_distributions(space)
        sampler = quietly(optuna.samplers.NSGAIISampler, seed=self.seed * 1_000_003 + len(history),
                          population_size=self.population_size)
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
        counts: dict[int, int] = {}
        for record in history:
            generation = _generation(counts, self.population_size)
            params = proposal_params(record, distributions)
            attrs = {_GENERATION_KEY: generation}
            if record.state == COMPLETE and record.score is not None:
                counts[generation] = counts.get(generation, 0) + 1
                trial = optuna.trial.create_trial(params=params, distributions=distributions,
                                                  values=[record.score, relative_cost(problem, record)],
                                                  system_attrs=attrs, constraints=violations(problem, record))
            elif record.state == FAILED:
                trial = optuna.trial.create_trial(params=params, distributions=distributions, system_attrs=attrs,
                                                  state=optuna.trial.TrialState.FAIL)
            else:
                continue
            study.add_trial(trial)
        return dict(quietly(study.ask, distributions).params)


def _generation(counts: dict[int, int], population_size: int) -> int:
    """The generation NSGA-II gives the next trial: the latest one with complete trials,
    or the one after it once that holds ``population_size`` complete trials."""
    latest = max(counts, default=0)
    return latest + 1 if counts.get(latest, 0) >= population_size else latest

