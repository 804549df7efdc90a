"""Running a search's trials on a Ray cluster with Ray Tune (``--backend ray``).

The only module that imports Ray.  Any strategy runs unchanged: ``StrategySearcher`` is
a Tune ``Searcher`` whose ``suggest`` is ``trials.next_trial`` (the strategy's ask,
projected, recorded as running in the study) and whose ``on_trial_complete`` is
``trials.record`` (stored in the study, told to the strategy).  Both run on the driver,
so the study database is written by one process and ``report``, ``export`` and resume see
one history whatever the backend; a driver that dies leaves its running trials to be
marked interrupted and evaluated again when the same command runs again.  Trials run in
Ray workers as ``evaluate_on_worker``, which lives in the installed package (workers
import it) and receives the workload, space and limits once through Ray's object store
(``tune.with_parameters``).  ``RayBackend`` is this behind the ``backends.Backend``
interface.

Under a pruner (``engine.pruning``) a search trial's fine-tune reports its rung scores
with ``tune.report`` (``{"score", "step", "rung": 1}``) and Ray Tune's scheduler
(``scheduler_for``: ASHA for ``sha`` and ``hyperband``, the median stopping rule for
``median``) stops unpromising trials there; the driver records each rung score in the
study (``on_trial_result``) and a trial stopped at a rung as pruned.
"""
from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import AutocompressError, SearchError
from ..core.space import Space
from ..core.trial import SCAN, TrialRecord, finished
from ..core.workload import Workload
from ..evaluators.device import Runtime, is_out_of_memory, runtime
from .backends import Backend, time_is_up
from .evaluation import evaluate_trial
from .pruning import REDUCTION_FACTOR, STARTUP_TRIALS, check_pruner, rung_steps
from .settings import SearchSettings
from .stopping import Stop
from .trials import Pending, Search, check_failing, failure, next_trial, record, running, show_progress

log = logging.getLogger(__name__)

try:
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, MedianStoppingRule
    from ray.tune.search import ConcurrencyLimiter, Searcher
except ImportError:  # the optional extra is not installed
    ray = None
    Searcher = object


def require_ray() -> None:
    if ray is None:
        raise AutocompressError("--backend ray needs Ray Tune, which is not installed; "
                                "pip install 'autocompress[ray]' (or pip install 'ray[tune]')")


@dataclass
class Job:
    """What every Ray worker needs to evaluate trials of one search (shipped once)."""

    workload: Workload
    space: Space
    settings: SearchSettings
    limits: dict[str, float]
    precision: str | None = None  # --precision as given (None: each worker's device default)


def worker_runtime(precision: str | None = None) -> Runtime:
    """Where a Ray trial runs: the GPU Ray gave it (``ray.get_gpu_ids()``; Ray makes it the
    only visible one, ``cuda``), else the CPU; at ``precision`` (None: the device's default)."""
    gpus = ray.get_gpu_ids() if ray is not None and ray.is_initialized() else []
    return runtime("cuda" if gpus else "cpu", precision)


def _report_rung(score: float, step: int) -> None:
    """A rung score to Ray Tune, whose scheduler may stop the trial here."""
    tune.report({"score": float(score), "step": int(step), "rung": 1})


def scheduler_for(settings: SearchSettings):
    """Ray Tune's scheduler for the settings' pruner, on the fine-tune steps the trials
    report (``pruning.rung_steps``): ASHA (one bracket for ``sha``, Hyperband's brackets
    for ``hyperband``) or the median stopping rule; None (Tune's FIFO) without a pruner
    or without rungs.  AutocompressError for an unknown pruner."""
    check_pruner(settings.pruner, settings.rungs)
    steps = int(settings.finetune_steps)
    at = rung_steps(steps, settings.rungs)
    if settings.pruner == "none" or not at:
        return None
    common = {"time_attr": "step", "metric": "score", "mode": "max"}
    if settings.pruner == "median":
        return MedianStoppingRule(**common, grace_period=at[0], min_samples_required=STARTUP_TRIALS)
    brackets = 1 if settings.pruner == "sha" else int(math.floor(math.log(steps / at[0], REDUCTION_FACTOR))) + 1
    return ASHAScheduler(**common, max_t=steps, grace_period=at[0], reduction_factor=REDUCTION_FACTOR,
                         brackets=brackets)


def evaluate_on_worker(config: dict[str, Any], job: Job) -> dict[str, Any]:
    """The Tune trainable: evaluate one trial in a Ray worker, on its ``worker_runtime``.
    A failing candidate (out of GPU memory included) returns its error (recorded as a
    failed trial by the driver), not a Ray error.  Under a pruner a search trial reports
    its rung scores (``_report_rung``); its result's ``step`` is its fine-tune steps (0
    for a scan, which never enters the scheduler's rungs)."""
    where = None
    pruning = {}
    if job.settings.pruner != "none" and config["purpose"] != SCAN:
        pruning = {"report": _report_rung}
    try:
        where = worker_runtime(job.precision)
        score, costs, feasible = evaluate_trial(job.workload, job.space, config["candidate"], job.settings,
                                                job.limits, config["purpose"], config["channel_order"], where,
                                                **pruning)
    except Exception as exc:  # the search goes on; the driver records the trial as failed
        error = failure(exc, where) if where is not None else f"{type(exc).__name__}: {exc}"
        if where is not None and is_out_of_memory(exc):
            del exc
            where.release()
        return {"score": math.nan, "error": error}
    steps = 0 if config["purpose"] == SCAN else int(job.settings.finetune_steps)
    return {"score": score, "costs": costs, "feasible": feasible, "step": steps}


class StrategySearcher(Searcher):
    """A Tune Searcher that asks the search's strategy and records results in its study.

    ``suggest`` returns None (ask again later) while the study has enough search trials
    finished or running but some still run (one may fail and need replacing), and
    ``Searcher.FINISHED`` when they are all done, the search's deadline has passed
    (``backends.time_is_up``; Tune lets the running trials finish, which its
    ``time_budget_s`` would stop) or the strategy has nothing more."""

    def __init__(self, search: Search, stop: Stop, bar=None):
        super().__init__(metric="score", mode="max")
        self.search, self.stop, self.bar = search, stop, bar
        self.pending: dict[str, Pending] = {}
        self.history: list[TrialRecord] = search.study.history()

    def suggest(self, trial_id: str) -> dict[str, Any] | str | None:
        history = self.history
        try:
            check_failing(history)
        except SearchError:
            return Searcher.FINISHED  # run_ray_trials raises it after Tune stops
        if self.stop.signum is not None or time_is_up(self.search.study):
            return Searcher.FINISHED
        if finished(history) + running(history) >= self.search.trials:
            return Searcher.FINISHED if not running(history) else None
        pending = next_trial(self.search, history)
        if pending is None:
            return Searcher.FINISHED if not self.pending else None
        self.pending[trial_id] = pending
        self.history = self.search.study.history()
        return {"number": pending.number, "candidate": pending.candidate, "purpose": pending.purpose,
                "channel_order": pending.channel_order}

    def save(self, checkpoint_path: str) -> None:
        """Nothing to save: the study database holds the state."""

    def restore(self, checkpoint_path: str) -> None:
        """Nothing to restore: the study database holds the state."""

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        """A rung score (``result["rung"]``) is recorded in the study as it arrives."""
        pending = self.pending.get(trial_id)
        if pending is not None and result.get("rung"):
            self.search.study.report(pending.trial, float(result["score"]), int(result["step"]))

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        pending = self.pending.pop(trial_id, None)
        if pending is None:
            return
        costs = {k.split("/", 1)[1]: float(v) for k, v in (result or {}).items() if k.startswith("costs/")}
        if not error and result and result.get("rung"):  # the scheduler stopped it at this rung
            self.search.study.report(pending.trial, float(result["score"]), int(result["step"]))
            log.info("trial %d pruned after %d fine-tune steps", pending.number, int(result["step"]))
            self.history = record(self.search, pending, None, pruned=True)
        elif error or not result or result.get("error") or not costs:  # Tune flattens costs to costs/<name>
            message = (result or {}).get("error") or "the Ray trial raised or its worker died (see Ray's log)"
            log.warning("trial %d failed: %s", pending.number, message)
            self.history = record(self.search, pending, None, message)
        else:
            self.history = record(self.search, pending, (float(result["score"]), costs, bool(result["feasible"])))
        show_progress(self.bar, self.search, self.history)


def _dirname(trial) -> str:
    """Tune's folder for a trial: the study's trial number (Tune's default spells out the config)."""
    return f"trial-{trial.config.get('number', trial.trial_id)}"


def run_ray_trials(search: Search, stop: Stop, out: Path, address: str | None = None, workers: int | None = None,
                   cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0, bar=None,
                   precision: str | None = None) -> list[TrialRecord]:
    """Run the search's trials as Ray Tune trials, ``workers`` at a time, on the cluster at
    ``address`` (None: start a local Ray; ``auto``: the one this machine belongs to;
    ``ray://host:port``: a remote one), each on the GPU Ray gives it when
    ``gpus_per_trial`` is above 0, at ``precision`` (``worker_runtime``).  Returns the
    study's history."""
    require_ray()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no phoning home from offline machines
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")  # Ctrl-C and SIGTERM are ours (stopping.py)
    if workers is None:
        workers = max(1, int((os.cpu_count() or 1) // max(cpus_per_trial, 1e-9)))
    if workers < 1 or cpus_per_trial <= 0 or gpus_per_trial < 0:
        raise AutocompressError(f"--workers {workers}, --cpus-per-trial {cpus_per_trial} and --gpus-per-trial "
                                f"{gpus_per_trial} must be positive (GPUs: zero or more)")
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
        if address is None:
            kwargs["num_cpus"] = max(int(math.ceil(workers * cpus_per_trial)), 1)
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise AutocompressError(f"cannot reach the Ray cluster at {address}: {exc}") from None
    job = Job(search.workload, search.problem.space, search.settings, search.problem.limits, precision)
    trainable = tune.with_resources(tune.with_parameters(evaluate_on_worker, job=job),
                                    {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
    searcher = StrategySearcher(search, stop, bar)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=ConcurrencyLimiter(searcher, max_concurrent=workers),
                                    scheduler=scheduler_for(search.settings), num_samples=-1, reuse_actors=True,
                                    trial_dirname_creator=_dirname),
        run_config=tune.RunConfig(name=f"autocompress-{search.study.name}", storage_path=str((out / "ray").resolve()),
                                  verbose=0),
    )
    tuner.fit()
    stop.check()
    history = search.study.history()
    check_failing(history)
    return history


class RayBackend(Backend):
    """Trials as Ray Tune trials (``run_ray_trials``), Tune's files under ``out/ray``.
    AutocompressError when Ray Tune is not installed."""

    def __init__(self, out: Path, address: str | None = None, workers: int | None = None,
                 cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0, precision: str | None = None):
        require_ray()
        self.out, self.address, self.workers = Path(out), address, workers
        self.cpus_per_trial, self.gpus_per_trial, self.precision = cpus_per_trial, gpus_per_trial, precision

    def run(self, search: Search, stop: Stop, bar=None) -> list[TrialRecord]:
        return run_ray_trials(search, stop, self.out, self.address, self.workers, self.cpus_per_trial,
                              self.gpus_per_trial, bar, self.precision)


__all__ = ["RayBackend", "StrategySearcher", "Job", "evaluate_on_worker", "worker_runtime", "run_ray_trials",
           "require_ray", "scheduler_for"]
