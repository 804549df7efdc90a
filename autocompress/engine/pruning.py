"""Multi-fidelity trials: the rungs at which a trial's proxy fine-tune reports, and the
pruners that stop unpromising trials there.

A search trial's distillation fine-tune (``finetune_steps`` steps) reports its proxy score
on part of the validation split (``evaluators.spread_batches``: ``RUNG_BATCHES`` batches
spread over it, all of it when smaller) after each fraction ``rungs`` of its steps
(``rung_steps``); the final score, on the whole validation split after every step, is the
trial's value as without a pruner.  A pruner compares a trial's rung scores with those of
the study's other trials and stops it early (the trial is recorded ``pruned``):

- ``median``: Optuna's MedianPruner: stopped when its rung score is below the median of
  the complete trials' scores at that rung, once ``STARTUP_TRIALS`` trials completed.
- ``sha``: Optuna's SuccessiveHalvingPruner (asynchronous successive halving): rungs at
  the first rung step times ``REDUCTION_FACTOR``^k; at each, a trial goes on only among the
  best 1/``REDUCTION_FACTOR`` of the trials that reached it.
- ``hyperband``: Optuna's HyperbandPruner: several successive-halving brackets, from
  the first rung step up to ``finetune_steps``, trials spread over them.
- ``none`` (default): no reports, no extra evaluation, the trial results as before.

The in-process search and ``autocompress worker`` processes run Optuna's pruner on the
study (``Study`` builds it from the stored settings, so every process of a shared study
prunes alike); on Ray, Ray Tune's schedulers do (``ray_tune.scheduler_for``: ASHA for
``sha`` and ``hyperband``, its median stopping rule for ``median``).  Sensitivity scans
never report and are never pruned.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna

from ..core.errors import AutocompressError

PRUNERS = ("none", "median", "sha", "hyperband")
REDUCTION_FACTOR = 2  # sha and hyperband: keep the best half at each rung (rungs 1/4, 1/2 of the steps: r, 2r, 4r)
STARTUP_TRIALS = 5  # median: complete trials before any is pruned (Optuna's default)
RUNG_BATCHES = 8  # validation batches a rung is scored on, spread over the split


def check_pruner(name: str, rungs: Sequence[float] = (0.25,)) -> None:
    """AutocompressError for a pruner not in ``PRUNERS`` or rungs outside (0, 1)."""
    if name not in PRUNERS:
        raise AutocompressError(f"unknown pruner {name!r}; use one of {', '.join(PRUNERS)}")
    if name != "none" and (not rungs or not all(0 < float(r) < 1 for r in rungs)):
        raise AutocompressError(f"rungs {list(rungs)} must be fractions of the fine-tune between 0 and 1, "
                                "e.g. (0.25, 0.5)")


def rung_steps(steps: int, rungs: Sequence[float]) -> list[int]:
    """The fine-tune steps (counted from 1) after which a trial of ``steps`` steps reports:
    each fraction of ``rungs`` of them, rounded, from 1 to ``steps - 1`` (the last step is
    the trial's own score), without repeats.  Empty for a fine-tune of 0 or 1 step."""
    return sorted({max(1, round(float(r) * steps)) for r in rungs} & set(range(1, steps)))


def optuna_pruner(name: str, steps: int, rungs: Sequence[float]) -> optuna.pruners.BasePruner:
    """Optuna's pruner called ``name`` for trials reporting at ``rung_steps(steps, rungs)``
    (NopPruner for ``none`` or when there is no rung).  AutocompressError for an unknown
    name."""
    check_pruner(name, rungs)
    at = rung_steps(steps, rungs)
    if name == "none" or not at:
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=STARTUP_TRIALS, n_warmup_steps=0)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(min_resource=at[0], reduction_factor=REDUCTION_FACTOR,
                                                      min_early_stopping_rate=0)
    return optuna.pruners.HyperbandPruner(min_resource=at[0], max_resource=steps, reduction_factor=REDUCTION_FACTOR)


def pruner_for(config: Mapping[str, Any]) -> optuna.pruners.BasePruner:
    """The pruner of a study's stored settings (``SearchSettings.to_dict``; none for a
    study stored without one)."""
    return optuna_pruner(str(config.get("pruner", "none")), int(config.get("finetune_steps", 0)),
                         tuple(config.get("rungs", ())))


__all__ = ["PRUNERS", "REDUCTION_FACTOR", "STARTUP_TRIALS", "RUNG_BATCHES", "check_pruner", "rung_steps",
           "optuna_pruner", "pruner_for"]
