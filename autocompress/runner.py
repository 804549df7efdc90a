"""Running a search's trials: the steps every backend shares.

``prepare`` turns a workload and settings into a ``Search`` (space, limits, problem,
strategy, study); ``next_trial`` picks what to evaluate next (an interrupted trial once
more, else the strategy's proposal, projected onto the budget) and records it as running;
``evaluate`` scores it; ``record`` stores the outcome and tells the strategy.  The
in-process loop (``run_trials``) is those steps in a row; ``autocompress worker`` runs the
same loop against a shared study; the Ray backend (``ray_tune``) calls ``next_trial`` and
``record`` on the driver and ``evaluate`` in Ray workers.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import optuna

from .engine import (OBJECTIVES, SearchResult, SearchSettings, base_metrics, calibrate_latency, evaluate_trial, finished,
                     limits_for, measured_recipe, predicted_latency, recipe_for, save_front, search_space, settings_from_config,
                     study_config)
from .errors import AutocompressError, BudgetError, SearchError, StudyError
from .search import Problem, Strategy, as_proposal, check_reachable, get_strategy, project
from .search.base import search_trials
from .search.projection import fits
from .evaluators import accuracy
from .stopping import Stop, stop_on_signals
from .study import STUDY_NAME, Study, write_location
from .trial import COMPLETE, FAILED, INTERRUPTED, RUNNING, SCAN, TrialRecord
from .workload import Workload

log = logging.getLogger(__name__)
BACKENDS = ("local", "ray")
FAILURES_IN_A_ROW = 5  # then the search stops with the last error (SearchError)
WAIT_SECONDS = 2.0  # how often a process polls a shared study for trials other processes run


@dataclass
class Search:
    """Everything a process needs to run trials of one search."""

    workload: Workload
    settings: SearchSettings
    strategy: Strategy
    problem: Problem
    study: Study
    ran: int = 0  # trials this process finished (complete or failed)

    @property
    def trials(self) -> int:
        return int(self.settings.trials)


@dataclass
class Pending:
    """A trial recorded as running, with what to evaluate."""

    trial: optuna.Trial
    candidate: dict[str, float]
    purpose: str
    channel_order: dict[str, list[int]] | None

    @property
    def number(self) -> int:
        return self.trial.number


def storage_for(out: Path, storage: str | None) -> str:
    """The study's storage URL: ``storage`` (shared), else ``out/study.db`` (SQLite)."""
    return storage or f"sqlite:///{(out / 'study.db').resolve()}"


def prepare(workload: Workload, settings: SearchSettings, storage_url: str, name: str = STUDY_NAME,
            shared: bool = False) -> Search:
    """Measure the base model, build the space (latency calibrated), check the budget can
    be met, and open (or create) the study.  Raises BudgetError, StudyError."""
    if settings.objective not in OBJECTIVES:
        raise AutocompressError(f"unknown objective {settings.objective!r}; use one of {', '.join(OBJECTIVES)}")
    strategy = get_strategy(settings.strategy, seed=settings.seed, **settings.strategy_options)
    if settings.trials is None:
        settings = replace(settings, trials=strategy.default_trials)
    base = base_metrics(workload)
    space = calibrate_latency(workload, search_space(workload, settings), settings.budget)
    base.update(predicted_latency(space, space.resolve(space.neutral())))
    limits = limits_for(settings.budget, base)
    check_reachable(space, limits, base)
    problem = Problem(space, limits, base, accuracy(workload.model, workload.val), settings.max_accuracy_drop,
                      settings.objective, workload, settings.recovery(final=False))
    study = Study(storage_url, study_config(workload, settings, space), name, shared)
    study.set_base({**base, "proxy_accuracy": problem.base_score})
    return Search(workload, settings, strategy, problem, study)


def running(history: list[TrialRecord]) -> int:
    """Search trials running now (in this or another process)."""
    return sum(r.state == RUNNING for r in search_trials(history))


def retry_due(history: list[TrialRecord]) -> TrialRecord | None:
    """The oldest interrupted trial not evaluated again yet (each is retried once; a
    retry that is interrupted in turn stays failed)."""
    retried = {r.retry_of for r in history if r.retry_of is not None}
    return next((r for r in history if r.interrupted and r.retry_of is None and r.number not in retried), None)


def check_failing(history: list[TrialRecord]) -> None:
    """Raise SearchError when the last ``FAILURES_IN_A_ROW`` trials all failed (not
    interrupted): something is wrong beyond one candidate, and going on would loop."""
    ended = [r for r in history if r.state in (COMPLETE, FAILED) and not r.interrupted]
    last = ended[-FAILURES_IN_A_ROW:]
    if len(last) == FAILURES_IN_A_ROW and all(r.state == FAILED for r in last):
        raise SearchError(f"the last {FAILURES_IN_A_ROW} trials failed, the last one (trial {last[-1].number}) with: "
                          f"{last[-1].error}; the finished trials are kept and the same command resumes")


def next_trial(search: Search, history: list[TrialRecord]) -> Pending | None:
    """Record the next trial as running: an interrupted one again, else the strategy's
    proposal (projected onto the budget unless it already fits and the strategy or the
    pareto objective keeps it).  None when the strategy has nothing more to try."""
    study, space, limits = search.study, search.problem.space, search.problem.limits
    again = retry_due(history)
    if again is not None:
        log.info("trial %d was interrupted; evaluating it again", again.number)
        trial = study.start(space, again.proposal, again.candidate, again.purpose, again.channel_order or None,
                            retry_of=again.number)
        return Pending(trial, dict(again.candidate), again.purpose, again.channel_order or None)
    proposal = as_proposal(search.strategy.ask(search.problem, history), space)
    if proposal is None:
        return None
    kept = proposal.purpose == SCAN or (search.settings.objective == "pareto" or search.strategy.keeps_feasible) \
        and fits(space, proposal.values, limits)
    candidate = proposal.values if kept else project(space, proposal.values, limits)
    trial = study.start(space, proposal.values, candidate, proposal.purpose, proposal.channel_order)
    return Pending(trial, dict(candidate), proposal.purpose, proposal.channel_order)


def evaluate(search: Search, pending: Pending) -> tuple[float, dict[str, float], bool]:
    """Proxy accuracy, measured costs and feasibility of a pending trial."""
    return evaluate_trial(search.workload, search.problem.space, pending.candidate, search.settings,
                          search.problem.limits, pending.purpose, pending.channel_order)


def record(search: Search, pending: Pending, outcome: tuple[float, dict[str, float], bool] | None,
           error: str = "") -> list[TrialRecord]:
    """Store a trial's outcome (None: failed with ``error``), tell the strategy; the history."""
    if outcome is None:
        search.study.fail(pending.trial, error)
    else:
        search.study.finish(pending.trial, *outcome)
    history = search.study.history()
    record_ = next(r for r in reversed(history) if r.number == pending.number)
    search.strategy.tell(search.problem, record_)
    return history


def run_one(search: Search, pending: Pending) -> list[TrialRecord]:
    """Evaluate and record one pending trial in this process.  A failing candidate is
    recorded failed and the search goes on; a KeyboardInterrupt records the trial as
    interrupted (evaluated again on resume) and propagates."""
    outcome, error = None, ""
    try:
        with search.study.running(pending.trial):
            outcome = evaluate(search, pending)
    except KeyboardInterrupt:
        search.study.fail(pending.trial, f"{INTERRUPTED} by the user")
        raise
    except Exception as exc:  # a failing trial is recorded; the search goes on
        log.warning("trial %d failed: %s: %s", pending.number, type(exc).__name__, exc)
        error = f"{type(exc).__name__}: {exc}"
    search.ran += 1
    return record(search, pending, outcome, error)


def run_trials(search: Search, stop: Stop, bar=None, wait_for_others: bool = True) -> list[TrialRecord]:
    """Evaluate trials in this process until the study has ``search.trials`` finished
    search trials (counting those other processes run, in a shared study) or the strategy
    has nothing more to try; with ``wait_for_others``, then wait until no search trial of
    another process is still running.  Returns the history."""
    study = search.study
    history = study.history()
    show_progress(bar, search, history)
    while True:
        stop.check()  # a signal whose KeyboardInterrupt a finaliser swallowed
        check_failing(history)
        if study.shared:
            study.fail_interrupted()  # trials of processes that died are retried
            history = study.history()
        if finished(history) + running(history) >= search.trials:
            if not (wait_for_others and running(history)):
                return history
            time.sleep(WAIT_SECONDS)
            history = study.history()
            show_progress(bar, search, history)
            continue
        pending = next_trial(search, history)
        if pending is None:
            log.info("strategy %s has nothing more to try", search.settings.strategy)
            return history
        if bar is not None:
            bar.set_description("scan" if pending.purpose == SCAN else "search")
        history = run_one(search, pending)
        show_progress(bar, search, history)


def show_progress(bar, search: Search, history: list[TrialRecord]) -> None:
    """Finished search trials and the best feasible one so far on the progress bar."""
    if bar is None:
        return
    bar.n = min(finished(history), search.trials)
    best = search.strategy.best(search.problem, history)
    if best is not None:
        bar.set_postfix_str(f"best feasible proxy acc {best.score:.2f}% (trial {best.number})", refresh=False)
    bar.refresh()


def run_search(workload: Workload, settings: SearchSettings, out: str | Path, progress: bool = True,
               storage: str | None = None, study_name: str = STUDY_NAME, backend: str = "local",
               **ray_options) -> SearchResult:
    """Search, write ``out/recipe.yaml`` and the study (``out/study.db``, or the shared
    ``storage`` URL that ``autocompress worker`` processes can join); resumes a study
    already there.  ``backend`` ``"ray"`` runs the trials as Ray Tune trials
    (``ray_options``: ``address``, ``workers``, ``cpus_per_trial``, ``gpus_per_trial``;
    see ``ray_tune.run_ray_trials``).  Raises BudgetError for a budget the model cannot
    meet, StudyError for a study holding a different search; a KeyboardInterrupt keeps
    every finished trial."""
    from tqdm.auto import tqdm

    if backend not in BACKENDS:
        raise AutocompressError(f"unknown backend {backend!r}; use one of {', '.join(BACKENDS)}")
    if backend == "ray":
        from .ray_tune import require_ray

        require_ray()  # before minutes of base measurements
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    search = prepare(workload, settings, storage_for(out, storage), study_name, shared=storage is not None)
    search.study.trials = search.trials
    write_location(out, storage, study_name)
    done = finished(search.study.history())
    if done:
        log.info("resuming study %r with %d finished trials", study_name, done)
    with stop_on_signals() as stop, tqdm(total=search.trials, initial=min(done, search.trials), desc="search",
                                          unit="trial", disable=not progress, dynamic_ncols=True) as bar:
        if backend == "ray":
            from .ray_tune import run_ray_trials

            history = run_ray_trials(search, stop, out, bar=bar, **ray_options)
        else:
            history = run_trials(search, stop, bar)
    return finish(search, history, out)


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
               wait: float = 120.0) -> int:
    """Join the shared study ``study_name`` in ``storage`` (made by ``autocompress search
    --storage``) and evaluate its trials until it has enough; returns how many trials
    this process ran (complete or failed).  The settings come from the study; the model and data must be the
    ones the search was made with (their fingerprint is checked).  Waits up to ``wait``
    seconds for the search to start the study."""
    from tqdm.auto import tqdm

    existing = _wait_for_study(storage, study_name, wait)
    if existing.config.get("model") != workload.fingerprint:
        raise StudyError(f"the study {study_name!r} was made for model fingerprint {existing.config.get('model')}, "
                         f"not {workload.fingerprint} ({workload.name}); pass the same --model/--weights/--data")
    settings = replace(settings_from_config(existing.config), trials=existing.trials)
    search = prepare(workload, settings, storage, study_name, shared=True)
    with stop_on_signals() as stop, tqdm(total=search.trials, desc="worker", unit="trial",
                                          disable=not progress, dynamic_ncols=True) as bar:
        run_trials(search, stop, bar, wait_for_others=False)
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
    if search.settings.objective == "pareto":
        save_front(search.problem, history, out / "pareto.yaml")
    recipe, model = measured_recipe(search.workload, search.settings, search.problem, best, history)
    path = out / "recipe.yaml"
    recipe.save(path)
    return SearchResult(recipe, path, model, history)


__all__ = ["Search", "Pending", "prepare", "next_trial", "evaluate", "record", "run_trials", "run_search",
           "run_worker", "finish"]
