"""Hugging Face ``Conv1D`` (GPT-2's linear layer, weight stored (in, out)) as ``nn.Linear``.

``transformers.pytorch_utils.Conv1D`` computes ``x @ weight + bias``: a Linear layer with
its weight transposed.  Spaces are built on Linear views of it (same names, same values,
shared storage), and every operator that changes a model first turns its Conv1D layers
into equivalent ``nn.Linear`` ones, so channel pruning, masks, factorisation and
quantisation see the (out, in) layout they are written for.  Recognised duck-typed (a
module class named ``Conv1D`` with ``nf`` outputs and a 2-d weight), so transformers is
never imported.
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn as nn


def is_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is a Hugging Face ``Conv1D`` (a Linear with a (in, out) weight)."""
    weight = getattr(module, "weight", None)
    return (type(module).__name__ == "Conv1D" and isinstance(getattr(module, "nf", None), int)
            and isinstance(weight, torch.Tensor) and weight.dim() == 2 and weight.shape[1] == module.nf)


def as_linear(module: nn.Module, share: bool = False) -> nn.Linear:
    """An ``nn.Linear`` computing what the Conv1D ``module`` computes: its weight transposed
    (a view of the same storage with ``share``, else a contiguous copy) and its bias."""
    weight, bias = module.weight.detach(), getattr(module, "bias", None)
    linear = nn.Linear(weight.shape[0], weight.shape[1], bias=bias is not None, device="meta")
    linear.weight = nn.Parameter(weight.t() if share else weight.t().contiguous(), module.weight.requires_grad)
    if bias is not None:
        linear.bias = nn.Parameter(bias.detach() if share else bias.detach().clone(), bias.requires_grad)
    return linear.train(module.training)


def linearise(model: nn.Module) -> nn.Module:
    """Replace every Conv1D of ``model`` by its ``as_linear`` copy, in place; returns ``model``."""
    for name, module in list(model.named_modules()):
        if name and is_conv1d(module):
            model.set_submodule(name, as_linear(module))
    return model


@contextmanager
def linear_views(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` with every Conv1D swapped for a Linear view of its weights while the block
    runs (for tracing and hooks: the names stay, nothing is copied), put back after."""
    swapped = [(name, module) for name, module in model.named_modules() if name and is_conv1d(module)]
    for name, module in swapped:
        model.set_submodule(name, as_linear(module, share=True))
    try:
        yield model
    finally:
        for name, module in swapped:
            model.set_submodule(name, module)
