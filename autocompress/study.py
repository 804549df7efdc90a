"""Trial storage: an Optuna study in SQLite (or any SQLAlchemy URL), resumable.

Each trial stores the projected candidate as Optuna params, the strategy's raw proposal,
the measured metrics and feasibility as user attributes, and the proxy accuracy as its
value.  Trials left running by a killed process are marked failed when the study is
reopened, so a resumed search never waits on them.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import optuna
from optuna.trial import TrialState

from .errors import StudyError
from .space import Space
from .trial import COMPLETE, FAILED, RUNNING, SEARCH, TrialRecord

STUDY_NAME = "autocompress"
_STATES = {TrialState.COMPLETE: COMPLETE, TrialState.FAIL: FAILED, TrialState.RUNNING: RUNNING}

optuna.logging.set_verbosity(optuna.logging.WARNING)
log = logging.getLogger(__name__)


class Study:
    """The persistent history of one search, keyed by its configuration."""

    def __init__(self, storage_url: str, config: Mapping[str, Any]):
        storage = optuna.storages.RDBStorage(storage_url, engine_kwargs={"connect_args": {"timeout": 60}}
                                             if storage_url.startswith("sqlite") else {})
        self._study = optuna.create_study(study_name=STUDY_NAME, storage=storage, direction="maximize",
                                          load_if_exists=True)
        stored = self._study.user_attrs.get("config")
        if stored is None:
            self._study.set_user_attr("config", dict(config))
        elif stored != dict(config):
            diff = [k for k in sorted(set(stored) | set(config)) if stored.get(k) != config.get(k)]
            key = diff[0]
            raise StudyError(
                f"the study in {storage_url} was made with {key}={stored.get(key)!r}, not {config.get(key)!r}; "
                "rerun with the same options to resume it, or choose another --out"
            )
        for trial in self._study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            storage.set_trial_user_attr(trial._trial_id, "error", "interrupted before it finished")
            storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
            log.info("trial %d was left running by an earlier run; marked failed", trial.number)

    @classmethod
    def open(cls, storage_url: str) -> "Study":
        """An existing study, read as it is (no config check, running trials left alone);
        StudyError if there is none."""
        study = cls.__new__(cls)
        try:
            study._study = optuna.load_study(study_name=STUDY_NAME, storage=storage_url)
        except KeyError:
            raise StudyError(f"{storage_url} holds no autocompress study") from None
        return study

    @property
    def config(self) -> dict[str, Any]:
        return dict(self._study.user_attrs.get("config", {}))

    def set_base(self, metrics: Mapping[str, float]) -> None:
        """Record the base model's metrics (with its proxy accuracy) beside the trials."""
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
            ))
        return records

    def start(self, space: Space, proposal: Mapping[str, float], candidate: Mapping[str, float],
              purpose: str = SEARCH, channel_order: Mapping[str, list[int]] | None = None) -> optuna.Trial:
        """Record a running trial for ``candidate``; returns its handle."""
        attrs: dict[str, Any] = {"proposal": dict(proposal), "purpose": purpose}
        if channel_order:
            attrs["channel_order"] = {g: [int(i) for i in o] for g, o in channel_order.items()}
        self._study.enqueue_trial(dict(candidate), user_attrs=attrs, skip_if_exists=False)
        distributions = {k.name: optuna.distributions.FloatDistribution(k.low, k.high) for k in space.knobs}
        return self._study.ask(distributions)

    def finish(self, trial: optuna.Trial, score: float, metrics: Mapping[str, float], feasible: bool) -> None:
        trial.set_user_attr("metrics", dict(metrics))
        trial.set_user_attr("feasible", bool(feasible))
        self._study.tell(trial, score)

    def fail(self, trial: optuna.Trial, error: str) -> None:
        trial.set_user_attr("error", error[:2000])
        self._study.tell(trial, state=TrialState.FAIL)
