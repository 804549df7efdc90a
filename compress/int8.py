"""A real int8 CPU model (PyTorch's fx post-training quantisation) for 8-bit recipes."""
from __future__ import annotations

import itertools
import warnings
from collections.abc import Iterable

import torch
import torch.nn as nn

from ..evaluators import batches as _batches


def to_int8(model: nn.Module, example_input: _batches.Inputs, layers: Iterable[str], calibration: Iterable,
            batches: int = 20) -> torch.jit.ScriptModule:
    """Quantise ``layers`` of a baked float model to int8 (x86 backend: per-channel weights,
    activations observed on ``batches`` calibration batches) and return it as TorchScript,
    which loads with ``torch.jit.load`` alone.  ``torch.ao.quantization``'s fx workflow is
    deprecated upstream but still the way to run int8 convolutions on a CPU in eager PyTorch;
    ``torch.export`` cannot serialise its packed weights, hence TorchScript.  The model,
    ``example_input`` and the calibration batches (``batches.split``) are on the CPU.
    """
    args, kwargs = _batches.export_args(example_input)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.ao.quantization import QConfigMapping, get_default_qconfig
        from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

        qconfig = get_default_qconfig("x86")
        mapping = QConfigMapping()
        for name in layers:
            mapping = mapping.set_module_name(name, qconfig)
        prepared = prepare_fx(model.eval(), mapping, args or tuple(kwargs.values()))
        with torch.no_grad():
            for batch in itertools.islice(calibration, batches):
                _batches.call(prepared, _batches.split(batch)[0])
        quantized = convert_fx(prepared)
        if kwargs:
            return torch.jit.trace(quantized, example_kwarg_inputs=kwargs)
        return torch.jit.trace(quantized, args)
