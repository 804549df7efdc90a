"""Shipping a compressed model: BatchNorm folded, channels-last, written as a
``torch.export`` program or an ONNX model."""
from __future__ import annotations

import copy
import inspect
import logging
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch
import torch.nn as nn

from ..core.errors import AutocompressError
from ..evaluators import batches
from .fold import fold_batchnorm


def shipped(model: nn.Module, fold: bool = True, channels_last: bool = True) -> nn.Module:
    """An eval-mode copy of ``model`` as ``export_model`` ships it: BatchNorm folded into
    the convolution before it where possible (``fold``) and, for models with 2-d
    convolutions, channels-last weights (``channels_last``).  Whole-model latency
    measurements time this eager copy.  The copy is on the CPU, whatever device ``model``
    is on."""
    fold = fold and any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    model = (fold_batchnorm(model) if fold else copy.deepcopy(model).eval()).cpu()
    if channels_last and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model = model.to(memory_format=torch.channels_last)
    return model


def _plain(output):
    """``output`` as plain tensors, tuples, lists and dicts: a ``ModelOutput`` (or any other
    mapping) becomes a dict, so does another object holding tensors (of its attributes)."""
    if isinstance(output, Mapping):
        return {k: _plain(v) for k, v in output.items()}
    if isinstance(output, (tuple, list)):
        return type(output)(map(_plain, output)) if type(output) in (tuple, list) else tuple(map(_plain, output))
    if _is_plain(output) or not hasattr(output, "__dict__"):
        return output
    return {k: _plain(v) for k, v in vars(output).items()}


def _is_plain(output) -> bool:
    if isinstance(output, Mapping):
        return type(output) is dict and all(map(_is_plain, output.values()))
    if isinstance(output, (tuple, list)):
        return type(output) in (tuple, list) and all(map(_is_plain, output))
    return output is None or isinstance(output, (torch.Tensor, int, float, bool, str))


def _with_plain_outputs(model: nn.Module, args: tuple, kwargs: dict) -> nn.Module:
    """``model``, or where its output is not plain (a ``ModelOutput``, another object) a
    module calling it and returning its output as a dict, so the exported program loads with torch alone
    (its output spec then names no class of the model's library).  The wrapper's forward
    takes the same inputs by name (``torch.export`` binds dynamic shapes to the names)."""
    with torch.no_grad():
        if _is_plain(model(*args, **kwargs)):
            return model

    def forward(self, *args, **kwargs):
        return _plain(self.model(*args, **kwargs))

    kind = inspect.Parameter.KEYWORD_ONLY if kwargs else inspect.Parameter.POSITIONAL_OR_KEYWORD
    names = list(kwargs) if kwargs else [f"input{i}" for i in range(len(args))]
    forward.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [inspect.Parameter(name, kind) for name in names])
    wrapper = type(f"Plain{type(model).__name__}", (nn.Module,), {"forward": forward})()
    wrapper.model = model
    return wrapper


def _example(example_input: batches.Inputs) -> tuple[tuple, dict, tuple | dict]:
    """``(args, kwargs, dynamic_shapes)`` for exporting a model called on a batch of two
    copies of ``example_input`` (on the CPU), every input's first dimension the batch."""
    batch = torch.export.Dim("batch", min=1, max=65536)
    args, kwargs = batches.export_args(batches.to_device(batches.expand(example_input, 2), "cpu"))

    def dims(value):
        return {0: batch} if isinstance(value, torch.Tensor) and value.dim() else None

    shapes = {k: dims(v) for k, v in kwargs.items()} if kwargs else tuple(dims(v) for v in args)
    return args, kwargs, shapes


def export_model(model: nn.Module, example_input: batches.Inputs, path: str | Path, fold: bool = True,
                 channels_last: bool = True) -> None:
    """Write a self-contained ``torch.export`` program with a dynamic batch dimension,
    with BatchNorm folded into the convolution before it where possible (``fold``) and,
    for models with 2-d convolutions, weights in channels-last layout (``channels_last``:
    oneDNN then runs NHWC kernels, which suit narrow pruned layers; BENCHMARKS.md).
    ``example_input`` is a tensor, a tuple or a dict of keyword inputs (``batches``).  The
    program is a CPU program (model and inputs moved there first): it loads and runs on
    a machine without a GPU, with torch alone (a ``ModelOutput`` is returned as a dict)."""
    args, kwargs, shapes = _example(example_input)
    program = torch.export.export(_with_plain_outputs(shipped(model, fold, channels_last), args, kwargs), args,
                                  kwargs, dynamic_shapes=shapes)
    torch.export.save(program, str(path))


def require_onnx() -> None:
    """AutocompressError naming the install command unless the ONNX exporter's packages
    (``onnx``, ``onnxscript``) are installed."""
    import importlib.util

    if importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxscript") is None:
        raise AutocompressError("--onnx needs the onnx and onnxscript packages; "
                                "pip install 'autocompress[onnx]' (or pip install onnx onnxscript)")


def export_onnx(model: nn.Module, example_input: batches.Inputs, path: str | Path, fold: bool = True) -> None:
    """Write an ONNX model (opset of torch's dynamo exporter) with a dynamic batch
    dimension and BatchNorm folded (``fold``).  A tensor input is named ``input``; dict
    inputs keep their keys.  Needs the ``onnx`` and ``onnxscript`` packages (``pip install
    'autocompress[onnx]'``); AutocompressError without them."""
    require_onnx()
    args, kwargs, shapes = _example(example_input)
    names = list(kwargs) if kwargs else ["input"] if len(args) == 1 else [f"input{i}" for i in range(len(args))]
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms" and the like
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.onnx.export(_with_plain_outputs(shipped(model, fold, channels_last=False), args, kwargs),
                                        args, kwargs=kwargs or None,
                                        dynamo=True, dynamic_shapes=shapes, input_names=names,
                                        output_names=["output"], verbose=False)
    finally:
        onnx_log.setLevel(level)
    program.save(str(path))
