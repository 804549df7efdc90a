"""What a search works on: a trained model, an example input and its data.

``--model pkg.module:attr`` names an nn.Module or a factory returning one, ``--model
hf:DIR`` a Hugging Face model saved with ``save_pretrained`` (loaded from that folder
alone, never from the hub); ``--weights`` is a state dict loaded with
``weights_only=True``; ``--data pkg.module:attr`` names a callable (or a tuple) giving
``(train, val)`` or ``(train, val, test)`` iterables of batches: ``(x, y)`` pairs, or
dicts of keyword inputs with ``labels`` as Hugging Face collators give them
(``evaluators.batches``).  Without ``--model`` the built-in demo is used.  ``--metric
pkg.module:fn`` is imported here too (``load_metric``).
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
from ..evaluators import batches
from ..evaluators.metrics import CallableMetric, Metric, get_metric, is_builtin
from .thirdparty import import_module, import_transformers

HF_PREFIX = "hf:"


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
    """The model ``--model`` names: ``hf:DIR`` (``load_hf_model``) or ``pkg.module:attr``
    (an nn.Module, or a function returning one).  ModelError for anything else."""
    if spec.startswith(HF_PREFIX):
        return load_hf_model(spec.removeprefix(HF_PREFIX))
    obj = import_object(spec, "--model")
    if not isinstance(obj, nn.Module) and callable(obj):
        try:
            obj = obj()
        except Exception as exc:
            raise ModelError(f"--model {spec!r} failed when called: {type(exc).__name__}: {exc}") from None
    if not isinstance(obj, nn.Module):
        raise ModelError(f"--model {spec!r} gave a {type(obj).__name__}, not a torch.nn.Module")
    return obj


_AUTO_CLASSES = (  # a saved architecture's name ending -> the transformers Auto class that loads it
    ("ForSequenceClassification", "AutoModelForSequenceClassification"),
    ("ForTokenClassification", "AutoModelForTokenClassification"),
    ("ForQuestionAnswering", "AutoModelForQuestionAnswering"),
    ("ForImageClassification", "AutoModelForImageClassification"),
    ("ForMultipleChoice", "AutoModelForMultipleChoice"),
    ("ForMaskedLM", "AutoModelForMaskedLM"),
    ("ForCausalLM", "AutoModelForCausalLM"),
    ("LMHeadModel", "AutoModelForCausalLM"),
    ("ForConditionalGeneration", "AutoModelForSeq2SeqLM"),
)


def load_hf_model(folder: str) -> nn.Module:
    """A Hugging Face model saved in ``folder`` (``save_pretrained``), loaded with the
    ``transformers`` Auto class its config's ``architectures`` names
    (``AutoModelForSequenceClassification`` for ``BertForSequenceClassification``...;
    ``AutoModel`` otherwise) and ``from_pretrained(folder, local_files_only=True)``:
    nothing is downloaded.  ModelError for a folder without a model, or without
    transformers installed."""
    option = f"--model {HF_PREFIX}{folder}"
    path = Path(folder).expanduser()
    if not (path / "config.json").is_file():
        raise ModelError(f"{option}: {str(path)!r} is not a saved Hugging Face model (no config.json there); "
                         "give a folder written by model.save_pretrained(DIR)")
    try:
        transformers = import_transformers()
    except ImportError:
        raise ModelError(f"{option} needs transformers, which is not installed; pip install transformers") from None
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()  # "Loading weights" bars on every command
    try:
        config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
        architecture = next(iter(getattr(config, "architectures", None) or []), "")
        auto = next((cls for end, cls in _AUTO_CLASSES if architecture.endswith(end)), "AutoModel")
        model = getattr(transformers, auto).from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError... for a folder it cannot load
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"{option} cannot be loaded: {type(exc).__name__}: {first}") from None
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    return model.eval()


def load_metric(spec: str | Metric | None) -> Metric:
    """The metric ``--metric`` names: a built-in (``evaluators.metrics.METRICS``), or
    ``pkg.module:fn`` imported here (a function ``fn(output, target) -> float``).  None:
    accuracy.  ModelError for a spec that cannot be imported or is not callable;
    AutocompressError for an unknown name."""
    if spec is None or isinstance(spec, Metric) or is_builtin(spec) or ":" not in spec:
        return get_metric(spec)
    fn = import_object(spec, "--metric")
    if not callable(fn):
        raise ModelError(f"--metric {spec!r} is a {type(fn).__name__}, not a function (output, target) -> float")
    return CallableMetric(fn, spec)


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
        raise ModelError(f"--data {spec!r} must give (train, val) or (train, val, test) iterables of batches "
                         "((x, y) pairs, or dicts with 'labels')")
    train, val = obj[0], obj[1]
    test, split = (obj[2], "test") if len(obj) == 3 else (val, "validation")
    return train, val, test, split


def _first_input(train: Iterable, spec: str) -> batches.Inputs:
    """The example input (batch 1) of the first training batch, on the CPU."""
    try:
        batch = next(iter(train))
    except Exception as exc:
        raise ModelError(f"--data {spec!r}: the training data yields no batch ({type(exc).__name__}: {exc})") from None
    try:
        inputs, _ = batches.split(batch)
    except ModelError as exc:
        raise ModelError(f"--data {spec!r}: {exc}") from None
    found = batches.tensors(inputs) if isinstance(inputs, (torch.Tensor, tuple, dict)) else []
    if not found or (isinstance(inputs, tuple) and len(found) != len(inputs)):
        raise ModelError(f"--data {spec!r}: a batch's inputs must be a tensor, a tuple of tensors or a dict of "
                         f"tensors, not {type(inputs).__name__}")
    return batches.to_device(batches.first(inputs), "cpu")


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
