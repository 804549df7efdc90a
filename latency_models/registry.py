"""Latency targets by name: the analytic presets, a user's YAML file, or ``cpu`` (measured)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import yaml

from ..core.errors import BudgetError
from .analytic import GPURoofline, SystolicArray, from_fields, presets
from .base import SCHEMA, LatencyModel
from .learned import LearnedLatency

KINDS = {GPURoofline.kind: GPURoofline, SystolicArray.kind: SystolicArray, LearnedLatency.kind: LearnedLatency}
MEASURED = ("cpu", "cuda")
log = logging.getLogger(__name__)


def target_names() -> list[str]:
    return [*MEASURED, *presets()]


def learned_path(target: str) -> Path:
    """Where ``autocompress profile --target T`` saves the learned model of this machine."""
    from ..core.paths import cache_dir

    return cache_dir() / "latency" / f"learned-{target}.json"


def get_latency_model(target: str) -> LatencyModel:
    """The latency model of ``target``: ``cpu``/``cuda`` (this machine: the learned model
    ``autocompress profile`` saved for it, else per-op measurement with a disk cache), a
    preset name (``h100``, ``jetson-orin-nano``, ``eyeriss``...) or a path to a YAML
    file with the same fields as a preset."""
    table = presets()
    if target in MEASURED:
        from .measured import MeasuredLatency, device_key

        path = learned_path(target)
        if path.is_file():
            try:
                model = load_latency_model(path)
            except BudgetError as exc:  # fitted by an older autocompress: measure instead, and say so
                log.warning("%s; timing ops instead", exc)
            else:
                if getattr(model, "device", None) == device_key(target):
                    return model
        return MeasuredLatency(target, device=target)
    if target in table:
        return from_fields(target, table[target])
    path = Path(target)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise BudgetError(f"target file {target!r} does not exist")
        try:
            fields = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise BudgetError(f"target file {target!r} is not valid YAML: {exc}") from None
        return from_fields(path.stem, fields)
    raise BudgetError(f"unknown latency target {target!r}; use one of {', '.join(table)} or a device .yaml file")


def load_latency_model(path: str | Path) -> LatencyModel:
    """A model written by ``LatencyModel.save`` (JSON with a schema version)."""
    data = json.loads(Path(path).read_text())
    if data.get("schema") != SCHEMA:
        raise BudgetError(f"{path}: latency model schema {data.get('schema')!r} is not {SCHEMA}")
    return model_from_dict(data, str(path))


def model_from_dict(data: dict, source: str = "latency model") -> LatencyModel:
    if data.get("kind") == "measured":
        from .measured import MeasuredLatency

        return MeasuredLatency(data["name"], **data["params"])
    if data.get("kind") == "calibrated":
        from .calibrated import CalibratedLatency

        params = dict(data["params"])
        return CalibratedLatency(data["name"], model_from_dict(params.pop("inner"), source), **params)
    if data.get("kind") not in KINDS:
        raise BudgetError(f"{source}: unknown latency model kind {data.get('kind')!r}")
    params = dict(data["params"])
    if data["kind"] == LearnedLatency.kind:
        params.setdefault("features", 1)  # saved before features were versioned
    return KINDS[data["kind"]](data["name"], **params)
