"""The trial steps every backend shares.

``next_trial`` picks what to evaluate next (an interrupted trial once more, else the
strategy's proposal, kept or repaired onto the budget by ``core.projection.candidate_for``)
and records it as running; ``evaluate`` scores it (under a pruner its fine-tune reports
rung scores to the study, which may stop it: ``optuna.TrialPruned``); ``record`` stores
the outcome (complete, failed or pruned) and tells the strategy.  The in-process loop
and the shared-study worker (``backends``) run them in a row; the Ray backend
(``ray_tune``) calls ``next_trial`` and ``record`` on the driver and ``evaluate_trial``
in Ray workers (Ray Tune's scheduler prunes there).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import optuna

from ..core.errors import SearchError
from ..core.projection import candidate_for
from ..core.trial import COMPLETE, FAILED, INTERRUPTED, PRUNED, RUNNING, SCAN, TrialRecord, finished, search_trials
from ..core.workload import Workload
from ..evaluators.device import CPU, Runtime, is_out_of_memory
from ..evaluators.metrics import Metric
from ..search import Problem, Strategy, as_proposal
from ..search.sensitivity import repair_preference
from .evaluation import Report, evaluate_trial
from .settings import SearchSettings
from .study import Study

log = logging.getLogger(__name__)
FAILURES_IN_A_ROW = 5  # then the search stops with the last error (SearchError)


@dataclass
class Search:
    """Everything a process needs to run trials of one search: ``runtime`` is where this
    process recovers and scores them (a run option, not a setting), ``teacher`` the base
    model on its device (the base model itself on the CPU)."""

    workload: Workload
    settings: SearchSettings
    strategy: Strategy
    problem: Problem
    study: Study
    ran: int = 0  # trials this process finished (complete or failed)
    runtime: Runtime = CPU
    teacher: Any = None
    metric: Metric | None = None  # settings.make_metric() when None

    def __post_init__(self) -> None:
        if self.teacher is None:
            self.teacher = self.runtime.place(self.workload.model)
        if self.metric is None:
            self.metric = self.settings.make_metric()

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
    initial_state: Any = None  # the proposal's (Proposal.initial_state): weights to compress instead of the base's

    @property
    def number(self) -> int:
        return self.trial.number


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
    ended = [r for r in history if r.state in (COMPLETE, FAILED, PRUNED) and not r.interrupted]
    last = ended[-FAILURES_IN_A_ROW:]
    if len(last) == FAILURES_IN_A_ROW and all(r.state == FAILED for r in last):
        raise SearchError(f"the last {FAILURES_IN_A_ROW} trials failed, the last one (trial {last[-1].number}) with: "
                          f"{last[-1].error}; the finished trials are kept and the same command resumes")


def next_trial(search: Search, history: list[TrialRecord]) -> Pending | None:
    """Record the next trial as running: an interrupted one again, else the strategy's
    proposal, repaired onto the budget (``core.projection.candidate_for``) by its
    preference, else by the sensitivities of the study's scans, else equally; one that
    fits is kept where the strategy keeps proposals feasible or the objective is not
    accuracy, else grown into the headroom.  None when the strategy has nothing more to try."""
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
    keep = search.settings.objective != "accuracy" or search.strategy.keeps_feasible
    preference = proposal.preference or repair_preference(space, history, search.problem.base_score)
    candidate = candidate_for(space, proposal.values, limits, proposal.purpose, keep, preference=preference or None)
    trial = study.start(space, proposal.values, candidate, proposal.purpose, proposal.channel_order)
    return Pending(trial, dict(candidate), proposal.purpose, proposal.channel_order, proposal.initial_state)


def reporter(search: Search, pending: Pending) -> Report | None:
    """What a pending search trial's fine-tune reports its rung scores to under a pruner:
    the study, which raises ``optuna.TrialPruned`` when its pruner stops the trial there.
    None without a pruner and for scans (never pruned)."""
    if search.settings.pruner == "none" or pending.purpose == SCAN:
        return None

    def report(score: float, step: int) -> None:
        search.study.report(pending.trial, score, step)
        if search.study.should_prune(pending.trial):
            raise optuna.TrialPruned(f"pruned after {step} fine-tune steps at proxy score {score:.4g}")

    return report


def evaluate(search: Search, pending: Pending) -> tuple[float, dict[str, float], bool]:
    """Proxy score, measured costs and feasibility of a pending trial, on the search's
    runtime; ``optuna.TrialPruned`` when the study's pruner stops it (``reporter``)."""
    return evaluate_trial(search.workload, search.problem.space, pending.candidate, search.settings,
                          search.problem.limits, pending.purpose, pending.channel_order, search.runtime,
                          search.teacher, report=reporter(search, pending), initial_state=pending.initial_state)


def record(search: Search, pending: Pending, outcome: tuple[float, dict[str, float], bool] | None,
           error: str = "", pruned: bool = False) -> list[TrialRecord]:
    """Store a trial's outcome (None: failed with ``error``, or ``pruned`` at its last
    rung), tell the strategy; the history."""
    if pruned:
        search.study.prune(pending.trial)
    elif outcome is None:
        search.study.fail(pending.trial, error)
    else:
        search.study.finish(pending.trial, *outcome)
    history = search.study.history()
    record_ = next(r for r in reversed(history) if r.number == pending.number)
    search.strategy.tell(search.problem, record_)
    return history


def failure(exc: BaseException, runtime: Runtime) -> str:
    """What a failed trial records for ``exc``: its type and first line (out of GPU memory
    says on which device)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if is_out_of_memory(exc):
        return f"{type(exc).__name__}: out of GPU memory on {runtime.device} ({first})"
    return f"{type(exc).__name__}: {exc}"


def run_one(search: Search, pending: Pending) -> list[TrialRecord]:
    """Evaluate and record one pending trial in this process.  A failing candidate (out of
    GPU memory included) is recorded failed and the search goes on; a trial the pruner
    stops is recorded pruned; a KeyboardInterrupt records the trial as interrupted
    (evaluated again on resume) and propagates."""
    outcome, error, oom, pruned = None, "", False, False
    try:
        with search.study.running(pending.trial):
            outcome = evaluate(search, pending)
    except optuna.TrialPruned as exc:
        pruned = True
        log.info("trial %d %s", pending.number, exc)
    except KeyboardInterrupt:
        search.study.fail(pending.trial, f"{INTERRUPTED} by the user")
        raise
    except Exception as exc:  # a failing trial is recorded; the search goes on
        error, oom = failure(exc, search.runtime), is_out_of_memory(exc)
        log.warning("trial %d failed: %s", pending.number, error)
    if oom:
        search.runtime.release()  # the failed candidate's memory, now that nothing refers to it
    search.ran += 1
    return record(search, pending, outcome, error, pruned)


def show_progress(bar, search: Search, history: list[TrialRecord]) -> None:
    """Finished search trials and the best feasible one so far on ``bar`` (a tqdm bar, or None)."""
    if bar is None:
        return
    bar.n = min(finished(history), search.trials)
    best = search.strategy.best(search.problem, history)
    if best is not None:
        metric = search.metric
        bar.set_postfix_str(f"best feasible proxy {metric.name} {metric.format(metric.value(best.score))} "
                            f"(trial {best.number})", refresh=False)
    bar.refresh()
