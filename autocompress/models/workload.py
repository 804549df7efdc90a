"""What a search works on: a trained model, an example input and its data.

``--model pkg.module:attr`` names an nn.Module or a factory returning one; ``--weights``
is a state dict loaded with ``weights_only=True``; ``--data pkg.module:attr`` names a
callable (or a tuple) giving ``(train, val)`` or ``(train, val, test)`` iterables of
``(x, y)`` batches.  Without ``--model`` the built-in demo is used.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..core.errors import ModelError
from ..core.workload import Workload
from .thirdparty import import_module


def import_object(spec: str, option: str) -> Any:
    """Import ``pkg.module:attr`` (the current folder is importable); raise ModelError."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ModelError(f"{option} {spec!r} is not of the form package.module:attribute")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = import_module(module_name)
    except Exception as exc:
        raise ModelError(f"{option} {spec!r} cannot be imported: {type(exc).__name__}: {exc}") from None
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ModelError(f"{option} {spec!r}: module {module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def load_model(spec: str) -> nn.Module:
    obj = import_object(spec, "--model")
    if not isinstance(obj, nn.Module) and callable(obj):
        try:
            obj = obj()
        except Exception as exc:
            raise ModelError(f"--model {spec!r} failed when called: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, nn.Module):
        raise ModelError(f"--model {spec!r} gave a {type(obj).__name__}, not a torch.nn.Module")
    return obj


def load_weights(model: nn.Module, path: str) -> None:
    try:
        state = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise ModelError(f"--weights {path!r} does not exist") from None
    except Exception as exc:
        raise ModelError(f"--weights {path!r} is not a loadable state dict: {type(exc).__name__}: {exc}") from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ModelError(f"--weights {path!r} holds a {type(state).__name__}, not a state dict")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[1].strip() if len(str(exc).splitlines()) > 1 else str(exc)
        raise ModelError(f"--weights {path!r} do not match the model: {first}") from None


def load_data(spec: str) -> tuple[Iterable, Iterable, Iterable, str]:
    obj = import_object(spec, "--data")
    if callable(obj):
        try:
            obj = obj()
        except Exception as exc:
            raise ModelError(f"--data {spec!r} failed when called: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, (tuple, list)) or len(obj) not in (2, 3):
        raise ModelError(f"--data {spec!r} must give (train, val) or (train, val, test) iterables of (x, y) batches")
    train, val = obj[0], obj[1]
    test, split = (obj[2], "test") if len(obj) == 3 else (val, "validation")
    return train, val, test, split


def _first_input(train: Iterable, spec: str) -> torch.Tensor:
    try:
        batch = next(iter(train))
    except Exception as exc:
        raise ModelError(f"--data {spec!r}: the training data yields no batch ({type(exc).__name__}: {exc})") from None
    if not (isinstance(batch, (tuple, list)) and len(batch) == 2 and all(isinstance(t, torch.Tensor) for t in batch)):
        raise ModelError(f"--data {spec!r}: batches must be (x, y) pairs of tensors")
    return batch[0][:1]


def load_workload(model: str | None = None, weights: str | Path | None = None, data: str | None = None,
                  data_for: str = "giving (train, val) batches to score accuracy") -> Workload:
    """Build the workload from CLI-style specs; the demo when ``model`` is None.
    ``data_for`` says in the error for a model without data what the data is needed for."""
    from .demo import digits_splits, load_demo

    if model is None:
        net, _ = load_demo()
        name = "demo"
    else:
        net, name = load_model(model), model
    if weights is not None:
        load_weights(net, str(weights))
    if data is None:
        if model is not None:
            raise ModelError(f"--model {model!r} needs --data pkg.module:attr {data_for}")
        train, val, test = digits_splits()
        split = "test"
    else:
        train, val, test, split = load_data(data)
    example = _first_input(train, data or "demo")
    return Workload(name, net.eval(), example, train, val, test, split)
