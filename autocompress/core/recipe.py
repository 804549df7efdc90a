"""Recipes: the replayable result of a search, stored as YAML (schema version 1).

Top-level keys: ``schema``, ``model`` (name, fingerprint, input shape), ``budget`` (list
of budget strings), ``layers`` (per qualified module name, the fields of the registered
compression kinds, ``core.kinds``: ``out_channels``, ``sparsity`` with its ``pattern``,
``rank`` with its ``decomposition``, ``bits``, and an attention layer's kept ``heads``;
each kind validates its own), ``metrics`` (``base`` and ``compressed``, each with at least ``flops``,
``params`` and the metric's value), ``search`` (strategy, trials, seed, best_trial...),
``recovery`` (how weights are recovered after compression, replayed by ``apply``:
BatchNorm calibration, ``finetune_steps`` of training in all with ``lr``, ``temperature``
and ``seed``, and the regime that trains them: ``method`` with its ``params``, written
only when it is not ``distill``, today's distillation fine-tune, which a recipe without
``method`` means), ``excluded`` (layers left out
of the space, with the reason) and ``metric`` (the quality metric the search scored with
and ``metrics`` holds under its name: ``accuracy``, ``top5``, ``perplexity``,
``neg_loss`` or a function's ``pkg.module:fn``; written only when it is not
``accuracy``, which a recipe without it was scored with).  A recipe never records the
device it was made on.  Loading never imports or executes anything named in it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from . import budget as _budget
from .errors import BudgetError, RecipeError
from .kinds import field_owners, is_number, kinds

SCHEMA = 1
RECOVERY_DEFAULTS = {"calibration_batches": 20, "finetune_steps": 0, "lr": 1e-3, "temperature": 4.0, "seed": 0}
DEFAULT_METHOD = "distill"
"""The recovery regime of a recipe whose ``recovery`` names no ``method``."""


@dataclass
class Recipe:
    """Per-layer compression settings plus the metrics they were measured to give."""

    model: dict[str, Any]
    budget: list[str]
    layers: dict[str, dict[str, Any]]
    metrics: dict[str, dict[str, Any]] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)
    recovery: dict[str, Any] = field(default_factory=lambda: dict(RECOVERY_DEFAULTS))
    excluded: dict[str, str] = field(default_factory=dict)
    metric: str = "accuracy"
    schema: int = SCHEMA

    def to_dict(self) -> dict[str, Any]:
        """The recipe's fields, ``schema`` first; ``metric`` only when it is not
        ``accuracy`` (what a recipe without it means), so accuracy recipes read as before."""
        data = asdict(self)
        if data["metric"] == "accuracy":
            del data["metric"]
        return {"schema": data.pop("schema"), **data}

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def save(self, path: str | Path) -> None:
        """Write atomically: a crash while saving never leaves a half-written recipe."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(self.to_yaml())
        tmp.replace(path)

    @classmethod
    def from_dict(cls, data: Any, source: str = "recipe") -> Recipe:
        """Validate ``data`` (as loaded from YAML) and build a Recipe; raise RecipeError."""
        return cls(**_validate(data, source))

    @classmethod
    def load(cls, path: str | Path) -> Recipe:
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as exc:
            raise RecipeError(f"cannot read recipe {str(path)!r}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise RecipeError(f"recipe {str(path)!r} is not a UTF-8 text file") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            line = f" at line {where.line + 1}" if where is not None else ""
            raise RecipeError(f"recipe {str(path)!r} is not valid YAML{line}") from None
        return cls.from_dict(data, source=f"recipe {str(path)!r}")


def _fail(source: str, what: str) -> RecipeError:
    return RecipeError(f"{source}: {what}")


def _validate(data: Any, source: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise _fail(source, "is not a mapping of recipe fields; was it written by autocompress?")
    schema = data.get("schema")
    if schema != SCHEMA:
        raise _fail(source, f"has schema {schema!r}; this autocompress reads schema {SCHEMA}")
    known = {"schema", "model", "budget", "layers", "metrics", "search", "recovery", "excluded", "metric"}
    unknown = sorted(set(map(str, data)) - known)
    if unknown:
        raise _fail(source, f"has unknown field {unknown[0]!r}; allowed fields are {', '.join(sorted(known))}")
    for key in ("model", "budget", "layers"):
        if key not in data:
            raise _fail(source, f"lacks the required field {key!r}")

    model = data["model"]
    if not isinstance(model, Mapping) or not isinstance(model.get("fingerprint"), str):
        raise _fail(source, "field 'model' must be a mapping with a string 'fingerprint'")

    budget = data["budget"]
    if not isinstance(budget, list) or not all(isinstance(b, str) for b in budget):
        raise _fail(source, "field 'budget' must be a list of budget strings such as 'flops=0.3'")
    if budget:
        try:
            _budget.parse(budget)
        except BudgetError as exc:
            raise _fail(source, str(exc)) from None

    layers = data["layers"]
    if not isinstance(layers, Mapping):
        raise _fail(source, "field 'layers' must map layer names to settings")
    clean_layers: dict[str, dict[str, Any]] = {}
    for name, settings in layers.items():
        if not isinstance(name, str) or not isinstance(settings, Mapping):
            raise _fail(source, f"layer {name!r} must map to settings such as {{out_channels: 16, sparsity: 0.5}}")
        owners = field_owners()
        try:
            for key, value in settings.items():
                if key not in owners:
                    raise RecipeError(
                        f"layer {name!r} has unknown operator {key!r}; known: {', '.join(sorted(owners))}")
                owners[key].validate_field(name, key, value)
            for kind in kinds():
                kind.validate_layer(name, settings)
        except RecipeError as exc:
            raise _fail(source, str(exc)) from None
        clean_layers[name] = dict(settings)

    metrics = data.get("metrics", {}) or {}
    if not isinstance(metrics, Mapping):
        raise _fail(source, "field 'metrics' must be a mapping with 'base' and 'compressed'")
    for side, values in metrics.items():
        if side not in ("base", "compressed") or not isinstance(values, Mapping):
            raise _fail(source, f"metrics entry {side!r} must be 'base' or 'compressed' holding a mapping")
        for key, value in values.items():
            if value is not None and not is_number(value):
                raise _fail(source, f"metrics.{side}.{key} must be a number, got {value!r}")

    recovery = _recovery(data.get("recovery", {}) or {}, source)

    metric = data.get("metric", "accuracy")
    if not isinstance(metric, str) or not metric.strip():
        raise _fail(source, f"field 'metric' must name a metric such as accuracy or perplexity, got {metric!r}")

    search = data.get("search", {}) or {}
    excluded = data.get("excluded", {}) or {}
    if not isinstance(search, Mapping) or not isinstance(excluded, Mapping):
        raise _fail(source, "fields 'search' and 'excluded' must be mappings")
    return {
        "schema": SCHEMA,
        "model": dict(model),
        "budget": list(budget),
        "layers": clean_layers,
        "metrics": {k: dict(v) for k, v in metrics.items()},
        "search": dict(search),
        "recovery": recovery,
        "excluded": {str(k): str(v) for k, v in excluded.items()},
        "metric": metric,
    }


def _recovery(given: Any, source: str) -> dict[str, Any]:
    """The recovery settings with defaults filled in; ``method`` (a regime's name) and its
    ``params`` (scalars by name) kept only when the method is not ``distill``.  Whether a
    regime of that name exists is checked where it is built (``evaluators.recovery``)."""
    if not isinstance(given, Mapping):
        raise _fail(source, "field 'recovery' must be a mapping")
    recovery = dict(RECOVERY_DEFAULTS)
    known = [*RECOVERY_DEFAULTS, "method", "params"]
    for key, value in given.items():
        if key not in known:
            raise _fail(source, f"recovery has unknown setting {key!r}; known: {', '.join(known)}")
        if key in ("method", "params"):
            continue
        if not is_number(value) or value < 0:
            raise _fail(source, f"recovery.{key} must be a non-negative number, got {value!r}")
        recovery[key] = value
    method = given.get("method", DEFAULT_METHOD)
    if not isinstance(method, str) or not method.strip():
        raise _fail(source, f"recovery.method must name a recovery regime such as admm, got {method!r}")
    params = given.get("params", {}) or {}
    if not isinstance(params, Mapping) or not all(
            isinstance(k, str) and (is_number(v) or isinstance(v, (str, bool))) for k, v in params.items()):
        raise _fail(source, f"recovery.params must map option names to numbers or strings, got {params!r}")
    if method != DEFAULT_METHOD or params:
        recovery["method"], recovery["params"] = method, dict(params)
    return recovery
