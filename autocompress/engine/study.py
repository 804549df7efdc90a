"""Trial storage: an Optuna study in SQLite (or any SQLAlchemy URL), resumable.

Each trial stores the projected candidate as Optuna params, the strategy's raw proposal,
the measured metrics and feasibility as user attributes, and the proxy score (the search
metric's value, negated where lower is better: ``Metric.score``) as its value; under a
pruner also its rung scores as Optuna intermediate values, and a trial the pruner
stopped is in Optuna's PRUNED state (``pruning``).  Trials
left running by a stopped or killed process are marked failed when the study is reopened
(shared studies: when their heartbeat goes stale), so nobody waits on them.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import optuna
import yaml
from optuna.trial import TrialState

from ..core.errors import StudyError
from ..core.space import Space
from ..core.trial import COMPLETE, FAILED, INTERRUPTED, PRUNED, RUNNING, SEARCH, TrialRecord
from .pruning import pruner_for
from .settings import ADDED

STUDY_NAME = "autocompress"
PROCESS = f"{socket.gethostname()}:{os.getpid()}"  # which process started a trial (shared studies)
HEARTBEAT_SECONDS, GRACE_SECONDS = 20, 120  # shared studies: a trial silent for 2 minutes is dead
SCHEMA_ATTEMPTS = 6  # tries at opening a database another process may be creating
_STATES = {TrialState.COMPLETE: COMPLETE, TrialState.FAIL: FAILED, TrialState.RUNNING: RUNNING,
           TrialState.PRUNED: PRUNED}

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger(__name__)


def _rdb_storage(url: str, shared: bool = False) -> optuna.storages.RDBStorage:
    """Optuna's storage at ``url`` (with heartbeats when ``shared``).  Opening creates the
    schema; when two processes open a new database at once (a search and its workers
    started together) one of them loses that race with an integrity or lock error, so it
    tries again a few times.  StudyError for a URL that cannot be opened."""
    import sqlalchemy.exc

    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {}
    heartbeat = {"heartbeat_interval": HEARTBEAT_SECONDS, "grace_period": GRACE_SECONDS} if shared else {}
    for attempt in range(1, SCHEMA_ATTEMPTS + 1):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5; we drive them ourselves
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
        except Exception as exc:  # a bad URL, a missing driver, a database that cannot be reached
            racing = isinstance(exc, (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.OperationalError))
            if not racing or attempt == SCHEMA_ATTEMPTS:
                raise StudyError(f"cannot open the study storage {url}: {type(exc).__name__}: {exc}") from None
            time.sleep(0.5 * attempt)  # another process is creating the schema


class Study:
    """The persistent history of one search, keyed by its configuration.

    The configuration (``settings.study_config``: JSON with a ``schema`` version) is kept
    as the study's ``config`` attribute; reopening with another raises one StudyError
    naming the first setting that differs (nested settings by dotted name,
    ``strategy_params.seed``).  Beside it the study keeps the base model's metrics and
    the latency models its first process calibrated (``latency_models``).

    A study in its own ``--out`` folder has one process at a time: trials it finds running
    were left by a run that stopped, and are marked failed.  A ``shared`` study (a
    ``--storage`` database several processes join) keeps a heartbeat per running trial
    instead, and marks failed only the trials whose heartbeat went stale (their process
    died).  Either way the engine evaluates such an interrupted trial once more.

    The study prunes with the pruner its stored settings name (``pruning.pruner_for``;
    AutocompressError for an unknown one), so every process of a shared study prunes alike.
    """

    def __init__(self, storage_url: str, config: Mapping[str, Any], name: str = STUDY_NAME, shared: bool = False):
        pruner = pruner_for(config)
        storage = _rdb_storage(storage_url, shared)
        self.name, self.shared = name, shared
        self._study = optuna.create_study(study_name=name, storage=storage, direction="maximize",
                                          load_if_exists=True, pruner=pruner)
        stored = self._study.user_attrs.get("config")
        where = "--study" if shared else "--out"
        if stored is None:
            self._study.set_user_attr("config", dict(config))
        elif stored.get("schema") != config.get("schema"):
            form = "as text" if stored.get("schema") is None else f"in schema {stored['schema']}"
            raise StudyError(f"the study {name!r} in {storage_url} was made by an older or newer autocompress, which "
                             f"stored its settings {form}, not in schema {config.get('schema')}; rerun the search "
                             f"with another {where}")
        else:
            old, new = _flat({**ADDED, **stored}), _flat({**ADDED, **config})
            diff = [k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
            if diff:
                key = diff[0]
                raise StudyError(
                    f"the study {name!r} in {storage_url} was made with {key}={old.get(key)!r}, not "
                    f"{new.get(key)!r}; rerun with the same options to resume it, or choose another {where}"
                )
        self.fail_interrupted()

    def fail_interrupted(self) -> None:
        """Mark failed the running trials no process is running any more: all of them in a
        study of one process, those with a stale heartbeat in a shared one."""
        storage = self._study._storage
        if self.shared:
            stale = storage._get_stale_trial_ids(self._study._study_id)
        else:
            stale = [t._trial_id for t in self._study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))]
        for trial_id in stale:
            try:
                storage.set_trial_user_attr(trial_id, "error", f"{INTERRUPTED} before it finished")
                if storage.set_trial_state_values(trial_id, TrialState.FAIL):
                    log.info("trial %d was left running by a stopped process; marked failed",
                             storage.get_trial_number_from_id(trial_id))
            except optuna.exceptions.UpdateFinishedTrialError:  # another process got there first
                pass

    @classmethod
    def open(cls, storage_url: str, name: str = STUDY_NAME) -> Study:
        """An existing study, read as it is (no config check, running trials left alone);
        StudyError if there is none."""
        study = cls.__new__(cls)
        study.name, study.shared = name, False
        try:
            study._study = optuna.load_study(study_name=name, storage=_rdb_storage(storage_url))
        except KeyError:
            raise StudyError(f"{storage_url} holds no autocompress study named {name!r}") from None
        return study

    @property
    def trials(self) -> int | None:
        """The number of search trials the study is to finish (set by ``search``)."""
        return self._study.user_attrs.get("trials")

    @trials.setter
    def trials(self, count: int) -> None:
        self._study.set_user_attr("trials", int(count))

    @property
    def deadline(self) -> float | None:
        """When the search's processes stop starting trials (``time.time()`` seconds; set by
        ``search`` from its ``time_limit``), None for no limit."""
        return self._study.user_attrs.get("deadline")

    @deadline.setter
    def deadline(self, when: float | None) -> None:
        self._study.set_user_attr("deadline", None if when is None else float(when))

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._study.user_attrs.get("config", {}))

    @property
    def latency_models(self) -> dict[str, dict[str, Any]] | None:
        """The latency models the search's first process calibrated, by cost name (each
        ``LatencyModel.to_dict()``), so every process predicts latency alike; None until
        stored."""
        stored = self._study.user_attrs.get("latency_models")
        return None if stored is None else dict(stored)

    def store_latency_models(self, models: Mapping[str, dict[str, Any]]) -> None:
        self._study.set_user_attr("latency_models", {name: dict(model) for name, model in models.items()})

    @classmethod
    def stored_latency_models(cls, storage_url: str, name: str = STUDY_NAME) -> dict[str, dict[str, Any]] | None:
        """``latency_models`` of the study ``name`` if it exists, without creating it (or,
        for SQLite, its database file); None otherwise."""
        if storage_url.startswith("sqlite:///") and not Path(storage_url.removeprefix("sqlite:///")).is_file():
            return None
        try:
            return cls.open(storage_url, name).latency_models
        except StudyError:
            return None

    def set_base(self, metrics: Mapping[str, float]) -> None:
        """Record the base model's metrics beside the trials, with its proxy score under
        ``proxy_accuracy`` (the name it has always had: the value of the search's metric on
        the validation split as the engine maximises it, ``Metric.score``, which is the
        accuracy for the default metric)."""
        self._study.set_user_attr("base", {k: float(v) for k, v in metrics.items()})

    @property
    def base(self) -> dict[str, float]:
        return dict(self._study.user_attrs.get("base", {}))

    def history(self) -> list[TrialRecord]:
        records = []
        for t in self._study.get_trials(deepcopy=False):
            if t.state not in _STATES:
                continue
            records.append(TrialRecord(
                number=t.number, state=_STATES[t.state], proposal=dict(t.user_attrs.get("proposal", {})),
                candidate=dict(t.params), score=t.value if t.state == TrialState.COMPLETE else None,
                feasible=bool(t.user_attrs.get("feasible", False)), metrics=dict(t.user_attrs.get("metrics", {})),
                error=str(t.user_attrs.get("error", "")), purpose=str(t.user_attrs.get("purpose", SEARCH)),
                channel_order={g: list(o) for g, o in t.user_attrs.get("channel_order", {}).items()},
                retry_of=t.user_attrs.get("retry_of"),
                intermediate={int(step): float(v) for step, v in t.intermediate_values.items()},
            ))
        return records

    def start(self, space: Space, proposal: Mapping[str, float], candidate: Mapping[str, float],
              purpose: str = SEARCH, channel_order: Mapping[str, list[int]] | None = None,
              retry_of: int | None = None) -> optuna.Trial:
        """Record a running trial for ``candidate``; returns its handle."""
        attrs: dict[str, Any] = {"proposal": dict(proposal), "purpose": purpose, "process": PROCESS}
        if retry_of is not None:
            attrs["retry_of"] = int(retry_of)
        if channel_order:
            attrs["channel_order"] = {g: [int(i) for i in o] for g, o in channel_order.items()}
        knobs = {k.name: k for k in space.knobs}
        distributions = {name: optuna.distributions.FloatDistribution(min(knobs[name].low, float(v)),
                                                                      max(knobs[name].high, float(v)))
                         for name, v in candidate.items()}  # a value a hair outside its knob is kept, not refused
        # Created running, in one insert: Optuna's enqueue-then-ask hands a waiting trial to
        # whichever process asks first, and on SQLite two processes can both take the same one
        # (its read-then-write is not atomic there), so shared studies got trials twice and
        # with another process's settings.
        template = optuna.trial.create_trial(state=TrialState.RUNNING, params=dict(candidate),
                                             distributions=distributions, user_attrs=attrs)
        trial_id = self._study._storage.create_new_trial(self._study._study_id, template_trial=template)
        return optuna.Trial(self._study, trial_id)

    @contextlib.contextmanager
    def running(self, trial: optuna.Trial) -> Iterator[None]:
        """While a trial runs in a shared study, beat its heartbeat (a thread), so other
        processes see it alive; nothing otherwise."""
        if not self.shared:
            yield
            return
        storage, done = self._study._storage, threading.Event()

        def beat():
            while not done.is_set():
                storage.record_heartbeat(trial._trial_id)
                done.wait(HEARTBEAT_SECONDS)

        thread = threading.Thread(target=beat, name=f"heartbeat-{trial.number}", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def finish(self, trial: optuna.Trial, score: float, metrics: Mapping[str, float], feasible: bool) -> None:
        trial.set_user_attr("metrics", dict(metrics))
        trial.set_user_attr("feasible", bool(feasible))
        self._study.tell(trial, score)

    def fail(self, trial: optuna.Trial, error: str) -> None:
        trial.set_user_attr("error", error[:2000])
        self._study.tell(trial, state=TrialState.FAIL)

    def report(self, trial: optuna.Trial, score: float, step: int) -> None:
        """Record a running trial's rung ``score`` after ``step`` fine-tune steps (once per
        step; a repeat is ignored)."""
        if step not in trial.storage.get_trial(trial._trial_id).intermediate_values:
            trial.report(float(score), int(step))

    def should_prune(self, trial: optuna.Trial) -> bool:
        """Whether the study's pruner stops ``trial`` at its last reported rung."""
        return trial.should_prune()

    def prune(self, trial: optuna.Trial) -> None:
        """Record ``trial`` as pruned (stopped at its last rung; Optuna keeps that rung's
        score as its value, the history gives it none)."""
        self._study.tell(trial, state=TrialState.PRUNED)


def _flat(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """``config`` with nested dicts spelled out as dotted keys (``strategy_params.seed``)."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def write_location(folder: Path, storage: str | None, name: str = STUDY_NAME) -> None:
    """Note in a search's folder where its study lives when that is not ``folder/study.db``
    (``study.yaml``: storage URL and name), for ``report`` and ``export``."""
    path = Path(folder) / "study.yaml"
    if storage is None:
        path.unlink(missing_ok=True)
        return
    path.write_text(yaml.safe_dump({"storage": storage, "study": name}), encoding="utf-8")


def study_location(folder: Path) -> tuple[str, str]:
    """The storage URL and study name of the search in ``folder``; StudyError if it has none."""
    folder = Path(folder)
    note = folder / "study.yaml"
    if note.is_file():
        data = yaml.safe_load(note.read_text(encoding="utf-8")) or {}
        return str(data["storage"]), str(data.get("study", STUDY_NAME))
    db = folder / "study.db"
    if not db.is_file():
        raise StudyError(f"{folder} holds no study (no study.db); run autocompress search --out {folder} first")
    return f"sqlite:///{db.resolve()}", STUDY_NAME
