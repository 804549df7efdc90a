"""Costs counted on what a model really executes and stores.

Works on plain models and on models with weight constraints attached as
parametrizations: a parametrization with a ``mask`` buffer (and a ``pattern``) marks the
stored entries of a weight, one with ``bits`` gives its storage width.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from ..core.patterns import weight_bits
from . import batches
from .flops import flop_counter

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def count_flops(model: nn.Module, example_input: batches.Inputs) -> int:
    """Dense FLOPs of one forward pass, as ``torch.utils.flop_counter`` counts them
    (2 per multiply-accumulate of convolutions and matrix products, attention's included:
    ``autocompress.flops``).  Pass the model in
    eval mode (it is not switched here, so exported programs can be counted too).

    Runs with autograd on and an input that requires grad: fused inference kernels (the
    fast path of ``nn.MultiheadAttention``) are invisible to the counter, their
    decomposition is not.
    """
    with torch.enable_grad(), flop_counter() as counter:
        batches.call(model, batches.for_grad(example_input))
    return int(counter.get_total_flops())


def _weights(model: nn.Module):
    """(rows, cols, stored entries, bits, pattern, parameter) of every Conv/Linear weight
    and every ``in_proj_weight`` (``nn.MultiheadAttention``'s) with constraints attached."""
    for module in model.modules():
        names = ["weight"] if isinstance(module, _WEIGHTED) else []
        if parametrize.is_parametrized(module, "in_proj_weight"):
            names.append("in_proj_weight")
        for name in names:
            bits, pattern = 32, "unstructured"
            if parametrize.is_parametrized(module, name):
                param = module.parametrizations[name].original
                stored = param.numel()  # quantisation may round entries to zero; they are still stored
                for p in module.parametrizations[name]:
                    if hasattr(p, "mask"):
                        stored, pattern = int(p.mask.count_nonzero()), p.pattern
                    bits = getattr(p, "bits", bits)
            else:
                param = getattr(module, name)
                stored = int(torch.count_nonzero(param))
            yield param.shape[0], param.numel() // param.shape[0], stored, bits, pattern, param


def count_params(model: nn.Module) -> int:
    """Stored parameters: kept Conv/Linear weight entries (the mask where one is attached,
    else the non-zeros) plus every other parameter entry."""
    weights = list(_weights(model))
    seen = {id(w[-1]) for w in weights}
    return sum(w[2] for w in weights) + sum(p.numel() for p in model.parameters() if id(p) not in seen)


def size_bytes(model: nn.Module) -> int:
    """Bytes to store the parameters: each Conv/Linear weight at its bit-width, sparse ones
    as kept values plus their pattern's index metadata where that is smaller than dense
    (``patterns.weight_bits``); every other parameter at 32 bits."""
    weights = list(_weights(model))
    seen = {id(w[-1]) for w in weights}
    bits = sum(weight_bits(rows, cols, nnz, b, pattern) for rows, cols, nnz, b, pattern, _ in weights)
    bits += 32 * sum(p.numel() for p in model.parameters() if id(p) not in seen)
    return math.ceil(bits / 8)


def measure_costs(model: nn.Module, example_input: batches.Inputs) -> dict[str, float]:
    """``{"flops", "params", "size"}`` for the model on ``example_input``."""
    return {
        "flops": float(count_flops(model, example_input)),
        "params": float(count_params(model)),
        "size": float(size_bytes(model)),
    }
