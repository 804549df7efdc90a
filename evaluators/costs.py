"""Costs counted on what a model really executes and stores."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def count_flops(model: nn.Module, example_input: torch.Tensor) -> int:
    """Dense FLOPs of one forward pass, as ``torch.utils.flop_counter`` counts them
    (2 per multiply-accumulate of convolutions and matrix products)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(example_input)
    return int(counter.get_total_flops())


def count_params(model: nn.Module) -> int:
    """Stored parameters: non-zero Conv/Linear weights plus every other parameter entry."""
    total = 0
    weights = {id(m.weight) for m in model.modules() if isinstance(m, _WEIGHTED)}
    for p in model.parameters():
        total += int(torch.count_nonzero(p)) if id(p) in weights else p.numel()
    return total


def size_bytes(model: nn.Module, bits: int = 32) -> int:
    """Bytes to store the parameters: a sparse weight is stored as its non-zero values plus
    a one-bit-per-weight mask when that is smaller than dense."""
    total_bits = 0
    weights = {id(m.weight) for m in model.modules() if isinstance(m, _WEIGHTED)}
    for p in model.parameters():
        dense = p.numel() * bits
        if id(p) in weights:
            total_bits += min(dense, int(torch.count_nonzero(p)) * bits + p.numel())
        else:
            total_bits += dense
    return math.ceil(total_bits / 8)


def measure_costs(model: nn.Module, example_input: torch.Tensor) -> dict[str, float]:
    """``{"flops", "params", "size"}`` for the model on ``example_input``."""
    return {
        "flops": float(count_flops(model, example_input)),
        "params": float(count_params(model)),
        "size": float(size_bytes(model)),
    }
