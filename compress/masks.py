"""Sparsity masks chosen by magnitude: unstructured, N:M and block patterns."""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from ..patterns import parse_pattern, zeroed_weights
from ..space import Space
from .base import Operator


class WeightMask(nn.Module):
    """Parametrization ``w -> w * mask``; ``mask`` (a buffer, 1 = stored) and ``pattern``
    tell evaluators what is stored.  Gradients flow to the kept weights only."""

    def __init__(self, mask: torch.Tensor, pattern: str):
        super().__init__()
        self.register_buffer("mask", mask)
        self.pattern = pattern

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


def magnitude_mask(weight: torch.Tensor, sparsity: float, pattern: str = "unstructured") -> torch.Tensor:
    """A 0/1 mask of ``weight``'s shape keeping the largest magnitudes in ``pattern``.

    The weight is viewed as (out channels, everything else); exactly
    ``patterns.zeroed_weights`` entries are zeroed.
    """
    kind, (a, b) = parse_pattern(pattern)
    matrix = weight.detach().abs().flatten(1)
    rows, cols = matrix.shape
    mask = torch.ones_like(matrix)
    if kind == "nm":
        padded = torch.nn.functional.pad(matrix, (0, -cols % b), value=-1.0).view(rows, -1, b)
        keep = torch.zeros_like(padded).scatter_(2, padded.topk(a, dim=2).indices, 1.0)
        mask = keep.view(rows, -1)[:, :cols]
    elif kind == "block":
        drop = zeroed_weights(rows, cols, sparsity, pattern) // (a * b)
        if drop:
            full = matrix[: rows // a * a, : cols // b * b]
            scores = full.reshape(rows // a, a, cols // b, b).pow(2).sum(dim=(1, 3)).flatten()
            blocks = torch.ones_like(scores)
            blocks[torch.argsort(scores, stable=True)[:drop]] = 0.0
            grid = blocks.view(rows // a, cols // b).repeat_interleave(a, 0).repeat_interleave(b, 1)
            mask[: rows // a * a, : cols // b * b] = grid
    else:
        drop = zeroed_weights(rows, cols, sparsity)
        mask.view(-1)[torch.argsort(matrix.flatten(), stable=True)[:drop]] = 0.0
    return mask.view_as(weight).to(weight.dtype)


class MagnitudeSparsity(Operator):
    """Mask the ``sparsity`` fraction of each layer's smallest-magnitude weights, in the
    layer's ``pattern`` (unstructured, N:M such as 2:4, or RxC blocks such as 4x4).

    Attached as a parametrization, so fine-tuning keeps pruned weights at zero; baking
    writes the zeros into plain weights.  Dense FLOPs are unchanged.
    """

    setting_key = "sparsity"
    neutral = 0.0

    def needed(self, settings, space: Space) -> bool:
        return any(s.get("sparsity", 0.0) > 0 and not s.get("rank") for s in settings.values())

    def apply(self, model: nn.Module, space: Space, settings: Mapping[str, Mapping], example_input) -> None:
        for name, s in settings.items():
            sparsity = float(s.get("sparsity", 0.0))
            if sparsity <= 0 or s.get("rank"):
                continue
            module = model.get_submodule(name)
            pattern = str(s.get("pattern", "unstructured"))
            mask = magnitude_mask(module.weight, sparsity, pattern)
            parametrize.register_parametrization(module, "weight", WeightMask(mask, pattern))
