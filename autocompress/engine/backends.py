"""Where a search's trials run: one interface, ``Backend.run(search, stop, bar)``.

``InProcess`` evaluates trials one after another in this process (``autocompress
search``); ``SharedStudyWorker`` does the same as one of several processes sharing a study
(``autocompress worker``); ``ray_tune.RayBackend`` runs them as Ray Tune trials.  All of
them take their trials from ``trials.next_trial`` and store them with ``trials.record``,
so every backend writes the same study.  A search with a ``time_limit`` stores its
deadline in the study (``start_clock``) and every backend stops starting trials once it
has passed (``time_is_up``), its workers included.
"""
from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod

from ..core.trial import SCAN, TrialRecord, finished
from .stopping import Stop
from .study import Study
from .trials import Search, check_failing, next_trial, run_one, running, show_progress

log = logging.getLogger(__name__)
WAIT_SECONDS = 2.0  # how often a process polls a shared study for trials other processes run


class Backend(ABC):
    """Runs a prepared search's trials until the study has ``search.trials`` finished
    search trials, its deadline has passed (``time_is_up``: no new trial starts, those
    running finish) or the strategy has nothing more to try.

    Contract: ``run`` takes trials from ``trials.next_trial`` and stores each outcome with
    ``trials.record``; it checks ``stop`` between trials (``Stop.check``), raises
    SearchError when trials keep failing (``trials.check_failing``), updates ``bar`` (a
    tqdm bar, or None) and returns the study's history.  A backend checks what it needs
    (an optional package) when it is built, before minutes of base measurements.
    """

    @abstractmethod
    def run(self, search: Search, stop: Stop, bar=None) -> list[TrialRecord]:
        """Run the search's trials; the study's history when done."""


class InProcess(Backend):
    """Trials one after another in this process.  In a shared study it counts the trials
    other processes run, retries those whose process died, and (``wait_for_others``)
    waits at the end until none of theirs is still running."""

    wait_for_others = True

    def run(self, search: Search, stop: Stop, bar=None) -> list[TrialRecord]:
        study = search.study
        history = study.history()
        show_progress(bar, search, history)
        while True:
            stop.check()  # a signal whose KeyboardInterrupt a finaliser swallowed
            check_failing(history)
            if study.shared:
                study.fail_interrupted()  # trials of processes that died are retried
                history = study.history()
            if finished(history) + running(history) >= search.trials or time_is_up(study):
                if not (self.wait_for_others and running(history)):
                    return history
                time.sleep(WAIT_SECONDS)
                history = study.history()
                show_progress(bar, search, history)
                continue
            pending = next_trial(search, history)
            if pending is None:
                log.info("strategy %s has nothing more to try", search.settings.strategy_name)
                return history
            if bar is not None:
                bar.set_description("scan" if pending.purpose == SCAN else "search")
            history = run_one(search, pending)
            show_progress(bar, search, history)


class SharedStudyWorker(InProcess):
    """One of several processes sharing a study (``autocompress worker``): it stops when
    the study has its trials or its search's deadline has passed, leaving the search
    process to wait for the last ones."""

    wait_for_others = False


def start_clock(study: Study, time_limit: float | None) -> None:
    """Store in ``study`` the deadline ``time_limit`` seconds from now (None: no limit,
    clearing one an earlier run of the study set), which every process of the search
    reads (``time_is_up``)."""
    study.deadline = None if time_limit is None else time.time() + time_limit


def time_is_up(study: Study) -> bool:
    """Whether the study's deadline (``start_clock``) has passed; False without one."""
    deadline = study.deadline
    return deadline is not None and time.time() >= deadline


def run_trials(search: Search, stop: Stop, bar=None) -> list[TrialRecord]:
    """The search's trials in this process (``InProcess().run``); the history."""
    return InProcess().run(search, stop, bar)


__all__ = ["Backend", "InProcess", "SharedStudyWorker", "run_trials", "start_clock", "time_is_up"]
