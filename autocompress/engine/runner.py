"""Running a search: ``prepare`` a process for it, run its trials on a backend, ``finish``.

``prepare`` turns a workload and settings into a ``trials.Search`` (space, limits, problem,
strategy, study); a ``backends.Backend`` runs its trials (``trials`` holds the steps every
backend shares); ``finish`` turns the best trial into the recipe.  ``run_search`` is what
``autocompress search`` runs, ``run_worker`` what ``autocompress worker`` runs.
"""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

from ..core.errors import AutocompressError, BudgetError, StudyError
from ..core.pareto import save_front
from ..core.projection import check_reachable
from ..core.trial import COMPLETE, TrialRecord, finished, search_trials
from ..core.workload import Workload
from ..evaluators import evaluate
from ..evaluators.device import CPU, Runtime, runtime
from ..latency_models.calibration import calibrate_latency
from ..search import STRATEGIES, Problem
from .backends import WAIT_SECONDS, Backend, InProcess, SharedStudyWorker, run_trials, start_clock
from .evaluation import (
    base_metrics,
    limits_for,
    predicted_latency,
    search_space,
    storable_latency_models,
    with_latency_models,
)
from .recipes import SearchResult, measured_recipe, recipe_for
from .settings import UNLIMITED, SearchSettings, check_objective, recorded_metric, study_config
from .stopping import stop_on_signals
from .study import STUDY_NAME, Study, write_location
from .trials import Search

log = logging.getLogger(__name__)
BACKENDS = ("local", "ray")


def storage_for(out: Path, storage: str | None) -> str:
    """The study's storage URL: ``storage`` (shared), else ``out/study.db`` (SQLite)."""
    return storage or f"sqlite:///{(out / 'study.db').resolve()}"


def prepare(workload: Workload, settings: SearchSettings, storage_url: str, name: str = STUDY_NAME,
            shared: bool = False, runtime: Runtime = CPU) -> Search:
    """Measure the base model (its metric on ``runtime``'s device), build the space
    (latency models calibrated, or as the study stored them), check the budget can be
    met, and open (or create) the study.  Raises AutocompressError for an objective the
    strategy does not serve (``Strategy.objectives``), BudgetError, StudyError; ModelError
    for a model output the metric cannot read."""
    strategy = settings.make_strategy()
    check_objective(settings.objective, strategy, settings.strategy_name, settings.pruner)
    if settings.trials is None:  # with a time limit, the time decides
        settings = replace(settings, trials=strategy.default_trials if settings.time_limit is None else UNLIMITED)
    metric = settings.make_metric()
    teacher = runtime.place(workload.model)
    base = base_metrics(workload, metric, runtime, teacher)
    space = search_space(workload, settings)
    stored = Study.stored_latency_models(storage_url, name)
    if stored is None:
        space = calibrate_latency(workload, space, settings.budget, given=settings.latency_models)
    else:
        space = with_latency_models(space, stored)
    base.update(predicted_latency(space, space.resolve(space.neutral())))
    limits = limits_for(settings.budget, base)
    check_reachable(space, limits, base)
    base_score = metric.score(evaluate(teacher, workload.val, metric, runtime))
    problem = Problem(space, limits, base, base_score=base_score,
                      max_accuracy_drop=settings.max_accuracy_drop, objective=settings.objective, workload=workload,
                      recovery=settings.recovery(final=False), metric=metric)
    study = Study(storage_url, study_config(workload, settings, space), name, shared)
    if study.latency_models is None:
        study.store_latency_models(storable_latency_models(space, settings))
    study.set_base({**base, "proxy_accuracy": problem.base_score})
    return Search(workload, settings, strategy, problem, study, runtime=runtime, teacher=teacher, metric=metric)


def run_search(workload: Workload, settings: SearchSettings, out: str | Path, progress: bool = True,
               storage: str | None = None, study_name: str = STUDY_NAME, backend: str = "local",
               device: str | None = "auto", precision: str | None = None, **ray_options) -> SearchResult:
    """Search, write ``out/recipe.yaml`` and the study (``out/study.db``, or the shared
    ``storage`` URL that ``autocompress worker`` processes can join); resumes a study
    already there.  ``backend`` ``"ray"`` runs the trials as Ray Tune trials
    (``ray_options``: ``address``, ``workers``, ``cpus_per_trial``, ``gpus_per_trial``;
    see ``ray_tune.run_ray_trials``).  ``device`` and ``precision`` say where base
    metrics, trials and the final fine-tune run (``evaluators.device.runtime``; Ray
    trials run on the GPU Ray gives them, else the CPU).  Raises BudgetError for a budget
    the model cannot meet, StudyError for a study holding a different search,
    AutocompressError for a device this machine lacks; a KeyboardInterrupt keeps every
    finished trial.  ``settings.time_limit`` starts counting here, after the base
    measurements, when the trials start (``backends.start_clock``)."""
    from tqdm.auto import tqdm

    out = Path(out)
    where = runtime(device, precision)
    if backend == "ray":
        ray_options["precision"] = precision
    runner = backend_for(backend, out, **ray_options)  # before minutes of base measurements
    out.mkdir(parents=True, exist_ok=True)
    search = prepare(workload, settings, storage_for(out, storage), study_name, shared=storage is not None,
                     runtime=where)
    search.study.trials = search.trials
    start_clock(search.study, settings.time_limit)
    write_location(out, storage, study_name)
    done = finished(search.study.history())
    if done:
        log.info("resuming study %r with %d finished trials", study_name, done)
    total = None if search.trials >= UNLIMITED else search.trials  # None: the time limit decides
    with stop_on_signals() as stop, tqdm(total=total, initial=min(done, search.trials), desc="search",
                                          unit="trial", disable=not progress, dynamic_ncols=True) as bar:
        history = runner.run(search, stop, bar)
    return finish(search, history, out)


def backend_for(name: str, out: Path, **ray_options) -> Backend:
    """The backend called ``name`` (``BACKENDS``); ``ray_options`` are ``RayBackend``'s.
    AutocompressError for an unknown name or a backend whose package is missing."""
    if name not in BACKENDS:
        raise AutocompressError(f"unknown backend {name!r}; use one of {', '.join(BACKENDS)}")
    if name == "ray":
        from .ray_tune import RayBackend  # Ray is imported only when asked for

        return RayBackend(out, **ray_options)
    if ray_options:
        raise AutocompressError(f"{', '.join(sorted(ray_options))} are options of the ray backend, not {name!r}")
    return InProcess()


def _wait_for_study(storage: str, name: str, wait: float) -> Study:
    """The study ``name`` once its search has started it (workers may start first)."""
    deadline = time.monotonic() + wait
    while True:
        try:
            study = Study.open(storage, name)
            if study.trials is not None:
                return study
        except StudyError:
            pass
        if time.monotonic() >= deadline:
            raise StudyError(f"no search has started the study {name!r} in {storage} (waited {wait:.0f} s); "
                             f"start `autocompress search --storage {storage} --study {name}` first or beside it")
        time.sleep(WAIT_SECONDS)


def run_worker(workload: Workload, storage: str, study_name: str = STUDY_NAME, progress: bool = True,
               wait: float = 120.0, device: str | None = "auto", precision: str | None = None,
               metric: str | None = None) -> int:
    """Join the shared study ``study_name`` in ``storage`` (made by ``autocompress search
    --storage``) and evaluate its trials until it has enough; returns how many trials
    this process ran (complete or failed), stopping at the search's deadline too (its
    ``time_limit``, kept in the study).  The settings and latency calibration come from
    the study; the model and data must be the ones the search was made with (their
    fingerprint is checked).  Trials run on ``device`` at ``precision`` (this process's
    own: a study stores neither).  Waits up to ``wait`` seconds for the search to start
    the study.  ``metric`` names the study's metric again where that is a function
    (``pkg.module:fn``: nothing named in a study is imported by itself).  StudyError for a
    study of another model, of an older autocompress, or whose strategy is an
    unregistered class."""
    from tqdm.auto import tqdm

    where = runtime(device, precision)
    existing = _wait_for_study(storage, study_name, wait)
    settings = SearchSettings.from_dict(existing.config)
    settings = replace(settings, trials=existing.trials,
                       metric=recorded_metric(settings.metric_spec, metric, f"the study {study_name!r}"))
    if existing.config.get("model") != workload.fingerprint:
        raise StudyError(f"the study {study_name!r} was made for model fingerprint {existing.config.get('model')}, "
                         f"not {workload.fingerprint} ({workload.name}); pass the same --model/--weights/--data")
    if settings.strategy not in STRATEGIES:
        raise StudyError(f"the study {study_name!r} searches with the strategy class {settings.strategy}, which is not "
                         "registered, so only the search's own process can run it; register it in "
                         "autocompress.search.STRATEGIES to run workers")
    search = prepare(workload, settings, storage, study_name, shared=True, runtime=where)
    total = None if search.trials >= UNLIMITED else search.trials
    with stop_on_signals() as stop, tqdm(total=total, desc="worker", unit="trial",
                                          disable=not progress, dynamic_ncols=True) as bar:
        SharedStudyWorker().run(search, stop, bar)
    return search.ran


def over_budget(record: TrialRecord, limits: dict[str, float]) -> dict[str, float]:
    """How far a trial's measured costs exceed each limit, as a fraction (0.05: 5% over)."""
    return {m: record.metrics[m] / limit - 1.0 for m, limit in limits.items()
            if m in record.metrics and record.metrics[m] > limit}


def save_closest(search: Search, history: list[TrialRecord], out: Path) -> str:
    """Save the complete search trial closest to the budget (smallest largest excess) as
    ``out/closest.yaml``, not fine-tuned, with its excess under ``search.over_budget``;
    the sentence saying so ("" when no search trial completed)."""
    limits = search.problem.limits
    complete = [r for r in search_trials(history) if r.state == COMPLETE]
    if not complete:
        return ""
    closest = min(complete, key=lambda r: max(over_budget(r, limits).values(), default=0.0))
    excess = over_budget(closest, limits)
    recipe = recipe_for(search.workload, search.settings, search.problem, closest, finished(history))
    recipe.search["over_budget"] = {m: round(v, 4) for m, v in excess.items()}
    recipe.metrics = {"base": dict(search.problem.base), "compressed": dict(closest.metrics)}  # proxy-measured
    path = out / "closest.yaml"
    recipe.save(path)
    gap = ", ".join(f"{m} {100 * v:.1f}% over" for m, v in excess.items()) or "within the budget as measured"
    return f"the closest, trial {closest.number} ({gap}), is saved as {path} (not fine-tuned); "


def finish(search: Search, history: list[TrialRecord], out: Path) -> SearchResult:
    """The best trial's recipe, fine-tuned, measured and saved as ``out/recipe.yaml``
    (with ``out/pareto.yaml`` for the pareto objective)."""
    best = search.strategy.best(search.problem, history)
    if best is None:
        raise BudgetError(f"no finished trial met the budget {search.settings.budget}; "
                          f"{save_closest(search, history, out)}the trials are kept in the study {search.study.name!r}")
    if search.settings.objective == "cost" and best.score < search.problem.accuracy_floor:
        log.warning("no feasible trial is within --max-accuracy-drop %g of the base proxy score; the recipe is the "
                    "most accurate feasible one (trial %d)", search.settings.max_accuracy_drop, best.number)
    if search.settings.objective == "pareto":
        save_front(history, search.problem.primary_metric, search.problem.base, out / "pareto.yaml")
    recipe, model = measured_recipe(search.workload, search.settings, search.problem, best, history, search.runtime,
                                    search.teacher)
    path = out / "recipe.yaml"
    recipe.save(path)
    return SearchResult(recipe, path, model, history)


__all__ = ["prepare", "run_trials", "run_search", "backend_for", "run_worker", "finish"]
