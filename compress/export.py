"""Shipping a compressed model: BatchNorm folded, channels-last, written as a
``torch.export`` program or an ONNX model."""
from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import torch
import torch.nn as nn

from ..core.errors import AutocompressError
from .fold import fold_batchnorm


def shipped(model: nn.Module, fold: bool = True, channels_last: bool = True) -> nn.Module:
    """An eval-mode copy of ``model`` as ``export_model`` ships it: BatchNorm folded into
    the convolution before it where possible (``fold``) and, for models with 2-d
    convolutions, channels-last weights (``channels_last``).  Whole-model latency
    measurements time this eager copy."""
    model = fold_batchnorm(model) if fold else copy.deepcopy(model).eval()
    if channels_last and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        model = model.to(memory_format=torch.channels_last)
    return model


def export_model(model: nn.Module, example_input: torch.Tensor, path: str | Path, fold: bool = True,
                 channels_last: bool = True) -> None:
    """Write a self-contained ``torch.export`` program with a dynamic batch dimension,
    with BatchNorm folded into the convolution before it where possible (``fold``) and,
    for models with 2-d convolutions, weights in channels-last layout (``channels_last``:
    oneDNN then runs NHWC kernels, which suit narrow pruned layers; BENCHMARKS.md)."""
    batch = torch.export.Dim("batch", min=1, max=65536)
    example = example_input.expand(2, *example_input.shape[1:]).contiguous()
    program = torch.export.export(shipped(model, fold, channels_last), (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))


def require_onnx() -> None:
    """AutocompressError naming the install command unless the ONNX exporter's packages
    (``onnx``, ``onnxscript``) are installed."""
    import importlib.util

    if importlib.util.find_spec("onnx") is None or importlib.util.find_spec("onnxscript") is None:
        raise AutocompressError("--onnx needs the onnx and onnxscript packages; "
                                "pip install 'autocompress[onnx]' (or pip install onnx onnxscript)")


def export_onnx(model: nn.Module, example_input: torch.Tensor, path: str | Path, fold: bool = True) -> None:
    """Write an ONNX model (opset of torch's dynamo exporter) with a dynamic batch
    dimension and BatchNorm folded (``fold``).  Needs the ``onnx`` and ``onnxscript``
    packages (``pip install 'autocompress[onnx]'``); AutocompressError without them."""
    require_onnx()
    example = example_input.expand(2, *example_input.shape[1:]).contiguous()
    batch = torch.export.Dim("batch", min=1, max=65536)
    onnx_log = logging.getLogger("torch.onnx")
    level = onnx_log.level
    onnx_log.setLevel(logging.ERROR)  # "torchvision is not installed. Skipping torchvision::nms" and the like
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.onnx.export(shipped(model, fold, channels_last=False), (example,), dynamo=True,
                                        dynamic_shapes=({0: batch},), input_names=["input"], output_names=["output"],
                                        verbose=False)
    finally:
        onnx_log.setLevel(level)
    program.save(str(path))
