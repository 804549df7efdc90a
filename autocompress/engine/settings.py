"""Search settings: everything that defines a search besides the model and data, and the
form they are stored in with the study (``SearchSettings.to_dict``: JSON, schema 1).

Where a search runs (``--device``, ``--precision``) is not a setting: it is a run option
(``evaluators.device.Runtime``) passed beside the settings, never stored, so a study
resumes on another machine's device.  How long it runs (``trials``, ``time_limit``) is a
setting but not part of what is stored: a resume may ask for more trials or another time."""
from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core import budget as _budget
from ..core.budget import Budget
from ..core.errors import AutocompressError, StudyError
from ..core.kinds import kinds_for_metric
from ..core.recipe import DEFAULT_METHOD
from ..core.space import Space
from ..core.workload import Workload
from ..evaluators.metrics import Metric, is_builtin
from ..evaluators.recovery import Recovery, get_recovery
from ..latency_models.base import LatencyModel
from ..latency_models.registry import model_from_dict
from ..search import STRATEGIES, Strategy, get_strategy

OBJECTIVES = ("accuracy", "pareto", "cost")
SCHEMA = 1  # of the stored settings; a study stored otherwise is refused (StudyError)
UNLIMITED = 2**62  # the trials of a search with a time limit and no trial count (it stops at the time)
ADDED = {"metric": "accuracy", "final_recovery": "distill", "recovery_options": {}, "pruner": "none",
         "rungs": [0.25, 0.5]}
"""Settings added to schema 1 later, with the value a study stored without them was made with."""


@dataclass
class SearchSettings:
    """Everything that defines a search besides the model and data.

    ``trials`` is the number of search trials to finish (None: the strategy's
    ``default_trials``, or no limit when there is a ``time_limit``).  ``time_limit`` is
    the wall time in seconds after which no new trial starts (None: no limit), counted
    from when this run starts its trials (a resumed study counts from its own start; the
    base measurements before and the final fine-tune after are not counted); the trial in
    flight finishes and counts, and the recipe is made from the trials so far, as when
    ``trials`` are reached, whichever comes first.  AutocompressError (one line) for a
    limit of 0 or less.  ``strategy`` is a registered name (``"bo"``, built with ``seed``
    and the keyword arguments ``strategy_options``) or a Strategy object (used as it is,
    ``strategy_options`` empty; its own ``seed`` applies to the strategy).
    ``finetune_steps`` is the per-trial distillation fine-tune of the proxy (0: BatchNorm
    recalibration only; sensitivity scans always use 0); ``final_finetune_steps`` is the
    fine-tune of the chosen recipe.  ``metric`` scores trials: a built-in name
    (``accuracy``, ``top5``, ``perplexity``, ``neg_loss``), ``pkg.module:fn`` or a Metric
    object (stored as its ``spec``); the engine maximises its score (the value, negated
    where lower is better).  ``objective`` is ``"accuracy"`` (the best proxy score within
    the budget), ``"pareto"`` (also save the accuracy/cost front) or ``"cost"`` (the least
    cost on the budget's first metric, within the budget, whose proxy score is at most
    ``max_accuracy_drop`` below the base model's; strategies declare the objectives they
    serve, ``Strategy.objectives``); under the last two, search proposals already within the
    budget are evaluated as proposed, not scaled up to it.  ``max_accuracy_drop`` is in the
    metric's units (points of accuracy, or of perplexity...): the cost objective's
    tolerance, and condensa's accuracy floor under any objective;
    ``channel_multiple`` rounds kept channel counts (``space.kept_channels``);
    ``latency_batch`` is the batch size latency budgets are predicted and measured at;
    ``latency_models`` maps latency targets (the ``mydev`` of ``latency=2ms@mydev``) to
    LatencyModel objects used instead of the named target's.
    ``knobs`` names the knob kinds to search (empty: the strategy's ``knob_kinds``, else
    those that can lower the budget's metrics, ``core.kinds.kinds_for_metric``);
    ``sparsity_pattern`` and ``conv_decomposition`` shape the sparsity and rank knobs (see
    ``spaces.build_space``).  ``final_recovery`` names the recovery regime of the chosen
    recipe (``evaluators.recovery``; ``distill`` is the distillation fine-tune every trial's
    proxy uses), built with ``recovery_options``; it trains within ``final_finetune_steps``.
    ``pruner`` (``engine.pruning.PRUNERS``: ``none``, ``median``, ``sha``, ``hyperband``)
    stops unpromising trials early: a search trial's fine-tune then reports its proxy score
    on part of the validation split after each fraction ``rungs`` of ``finetune_steps``
    (``engine.pruning``).
    """

    budget: Budget
    trials: int | None = None
    time_limit: float | None = None
    strategy: str | Strategy = "bo"
    seed: int = 0
    calibration_batches: int = 20
    finetune_steps: int = 20
    final_finetune_steps: int = 300
    lr: float = 1e-3
    temperature: float = 4.0
    knobs: tuple[str, ...] = ()
    sparsity_pattern: str = "unstructured"
    conv_decomposition: str = "tucker2"
    channel_multiple: int = 8
    latency_batch: int = 1
    max_accuracy_drop: float = 1.0
    objective: str = "accuracy"
    metric: str | Metric = "accuracy"
    final_recovery: str = "distill"
    recovery_options: dict[str, Any] = field(default_factory=dict)
    pruner: str = "none"
    rungs: tuple[float, ...] = (0.25, 0.5)
    strategy_options: dict[str, Any] = field(default_factory=dict)
    latency_models: dict[str, LatencyModel] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_time_limit(self.time_limit)

    def recovery(self, final: bool, scan: bool = False) -> dict[str, Any]:
        """The recovery of a trial's proxy (distillation: ``finetune_steps``, none for a
        scan) or of the chosen recipe (``final``: ``final_recovery`` with its options
        over ``final_finetune_steps``), as a recipe records it."""
        recovery = {
            "calibration_batches": self.calibration_batches,
            "finetune_steps": 0 if scan else self.final_finetune_steps if final else self.finetune_steps,
            "lr": self.lr, "temperature": self.temperature, "seed": self.seed,
        }
        if final and (self.final_recovery != DEFAULT_METHOD or self.recovery_options):
            recovery.update(method=self.final_recovery, params=self.make_recovery().get_params())
        return recovery

    def make_recovery(self) -> Recovery:
        """The final recovery regime (AutocompressError for an unknown one or option)."""
        return get_recovery(self.final_recovery, **self.recovery_options)

    @property
    def strategy_name(self) -> str:
        """The strategy's registered name, or for an unregistered Strategy class its
        ``module.QualName``."""
        if isinstance(self.strategy, str):
            return self.strategy
        cls = type(self.strategy)
        return cls.name if STRATEGIES.get(cls.name) is cls else f"{cls.__module__}.{cls.__qualname__}"

    @property
    def metric_spec(self) -> str:
        """The metric as a study and a recipe record it: a built-in's name or ``pkg.module:fn``."""
        return self.metric if isinstance(self.metric, str) else self.metric.spec

    def make_metric(self) -> Metric:
        """A fresh Metric for ``metric`` (``pkg.module:fn`` imported); AutocompressError
        for an unknown name, ModelError for a function that cannot be imported."""
        from ..models.workload import load_metric

        return load_metric(self.metric)

    def make_strategy(self) -> Strategy:
        """The strategy object: the one given, or the registered one built with ``seed`` and
        ``strategy_options`` (AutocompressError for an unknown name or option)."""
        if isinstance(self.strategy, Strategy):
            if self.strategy_options:
                raise AutocompressError("strategy options are for a strategy given by name; pass them to the "
                                        f"constructor of {type(self.strategy).__name__} instead")
            return self.strategy
        return get_strategy(self.strategy, **{"seed": self.seed, **self.strategy_options})

    def knob_kinds(self) -> tuple[str, ...]:
        """The knob kinds the search turns: ``knobs``, else the strategy's kinds (haloc:
        rank), else those that lower the budget's metrics."""
        if self.knobs:
            return tuple(self.knobs)
        cls = type(self.strategy) if isinstance(self.strategy, Strategy) else STRATEGIES.get(self.strategy)
        kinds = tuple(cls.knob_kinds) if cls is not None else ()
        if not kinds:
            for metric in self.budget.metrics:
                kinds += tuple(k for k in kinds_for_metric(metric) if k not in kinds)
        return kinds

    def to_dict(self) -> dict[str, Any]:
        """Every setting but ``trials`` and ``time_limit`` (a resume may change them), defaults resolved, as
        JSON-able data with a ``schema`` version: the strategy as its name and constructor
        parameters (``strategy_params``), latency models as their ``to_dict()``.  Raises
        AutocompressError for a strategy parameter or latency model that is not JSON."""
        data = {
            "schema": SCHEMA, "budget": str(self.budget), "strategy": self.strategy_name,
            "strategy_params": self.make_strategy().get_params(), "seed": self.seed,
            "calibration_batches": self.calibration_batches, "finetune_steps": self.finetune_steps,
            "final_finetune_steps": self.final_finetune_steps, "lr": self.lr, "temperature": self.temperature,
            "knobs": list(self.knob_kinds()), "sparsity_pattern": self.sparsity_pattern,
            "conv_decomposition": self.conv_decomposition, "channel_multiple": self.channel_multiple,
            "latency_batch": self.latency_batch, "max_accuracy_drop": self.max_accuracy_drop,
            "objective": self.objective, "metric": self.metric_spec, "final_recovery": self.final_recovery,
            "recovery_options": self.make_recovery().get_params(),
            "pruner": self.pruner, "rungs": [float(r) for r in self.rungs],
            "latency_models": {target: model.to_dict() for target, model in sorted(self.latency_models.items())},
        }
        try:
            return json.loads(json.dumps(data))  # as the study will hold it (tuples become lists)
        except (TypeError, ValueError) as exc:
            raise AutocompressError(f"the search settings cannot be stored as JSON ({exc}); give strategy "
                                    "parameters and latency models plain numbers, strings, lists and dicts") from None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SearchSettings:
        """The settings ``to_dict`` stored (``trials`` and ``time_limit`` left at None).  Raises StudyError for
        settings of another schema (a study made by an older autocompress) or a strategy
        settings.  ``strategy`` is the stored name and ``strategy_options`` the stored
        parameters; a strategy class that is not registered (one only the search's own
        process had) keeps its ``module.QualName`` and cannot be built here."""
        if data.get("schema") != SCHEMA:
            raise StudyError("the study was made by an older autocompress (its settings are stored in another "
                             "form); rerun the search")
        return cls(
            budget=_budget.parse(data["budget"]), strategy=data["strategy"], seed=int(data["seed"]),
            calibration_batches=int(data["calibration_batches"]), finetune_steps=int(data["finetune_steps"]),
            final_finetune_steps=int(data["final_finetune_steps"]), lr=float(data["lr"]),
            temperature=float(data["temperature"]), knobs=tuple(data["knobs"]),
            sparsity_pattern=data["sparsity_pattern"], conv_decomposition=data["conv_decomposition"],
            channel_multiple=int(data["channel_multiple"]), latency_batch=int(data["latency_batch"]),
            max_accuracy_drop=float(data["max_accuracy_drop"]), objective=data["objective"],
            metric=str(data.get("metric", ADDED["metric"])),
            final_recovery=str(data.get("final_recovery", ADDED["final_recovery"])),
            recovery_options=dict(data.get("recovery_options", ADDED["recovery_options"])),
            pruner=str(data.get("pruner", ADDED["pruner"])), rungs=tuple(data.get("rungs", ADDED["rungs"])),
            strategy_options=dict(data["strategy_params"]),
            latency_models={target: model_from_dict(model, f"the study's latency model for {target!r}")
                            for target, model in data["latency_models"].items()},
        )


def check_time_limit(seconds: float | None, flag: str = "time_limit") -> None:
    """AutocompressError (one line) for a time limit (``flag`` names it) that is not a
    number of seconds above 0; None (no limit) passes."""
    if seconds is None:
        return
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < float("inf"):
        raise AutocompressError(f"{flag} {seconds!r} must be a number of seconds above 0 (or no limit)")


def check_objective(objective: str, strategy: Strategy | type[Strategy], name: str, pruner: str = "none") -> None:
    """AutocompressError (one line) for an unknown objective, one the strategy called
    ``name`` does not serve (``Strategy.objectives``), naming the strategies that do, or
    the cost objective with a pruner (pruners rank trials by accuracy alone, so they would
    stop the cheap trials just above the accuracy floor that the cost objective wants)."""
    if objective == "cost" and pruner != "none":
        raise AutocompressError(f"--pruner {pruner} ranks trials by accuracy alone and would stop the cheap trials "
                                "near the accuracy floor that --objective cost looks for; use --pruner none with it")
    if objective not in OBJECTIVES:
        raise AutocompressError(f"unknown objective {objective!r}; use one of {', '.join(OBJECTIVES)}")
    if objective not in strategy.objectives:
        serving = [key for key, cls in STRATEGIES.items() if objective in cls.objectives]
        raise AutocompressError(f"strategy {name!r} does not serve --objective {objective} (it serves "
                                f"{', '.join(strategy.objectives)}); use one of {', '.join(serving)}")


def recorded_metric(recorded: str, given: str | Metric | None, where: str, same: bool = True) -> str | Metric:
    """The metric to score with where a study or recipe (``where``) recorded ``recorded``:
    ``given`` (``--metric``) when there is one, else the recorded built-in.  Code named in
    a file is never imported by itself: a recorded ``pkg.module:fn`` must be given again.
    AutocompressError for that, and (``same``) for a given metric other than the
    recorded one."""
    if given is None:
        if is_builtin(recorded):
            return recorded
        raise AutocompressError(f"{where} was scored with --metric {recorded}; pass --metric {recorded} to score with "
                                "it again (code named in a file is never imported by itself)")
    spec = given if isinstance(given, str) else given.spec
    if same and spec != recorded:
        raise AutocompressError(f"{where} was scored with --metric {recorded}, not {spec}; pass --metric {recorded} "
                                "or leave it out")
    return given


def study_config(workload: Workload, settings: SearchSettings, space: Space) -> dict[str, Any]:
    """What identifies a search: the model's fingerprint, the knobs its space turns and
    every setting (``SearchSettings.to_dict``); a study resumes only with the same."""
    return {"model": workload.fingerprint, "knob_names": list(space.knob_names), **settings.to_dict()}
