"""Bit-width: fake quantisation of weights, per output channel, symmetric."""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from ..space import Space
from .base import Operator

TERNARY_THRESHOLD = 0.7
"""Ternary threshold as a fraction of the mean |w| of an output channel (TWN's rule)."""


class FakeQuantize(nn.Module):
    """Parametrization rounding a weight to ``bits`` per output channel (straight-through
    gradients).  2 bits is ternary {-a, 0, +a}: zero below 0.7 x mean|w| of the channel,
    ``a`` = mean of the kept |w|.  4 to 16 bits: symmetric uniform, scale = max|w| / (2^(b-1) - 1)."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (quantize(weight.detach(), self.bits) - weight).detach()


def quantize(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """``weight`` rounded to ``bits`` per output channel (the first dimension)."""
    w = weight.flatten(1)
    if bits == 2:
        threshold = TERNARY_THRESHOLD * w.abs().mean(dim=1, keepdim=True)
        keep = w.abs() > threshold
        scale = (w.abs() * keep).sum(dim=1, keepdim=True) / keep.sum(dim=1, keepdim=True).clamp(min=1)
        q = torch.sign(w) * keep * scale
    else:
        levels = 2 ** (bits - 1) - 1
        scale = w.abs().amax(dim=1, keepdim=True).clamp(min=torch.finfo(w.dtype).tiny) / levels
        q = torch.clamp(torch.round(w / scale), -levels, levels) * scale
    return q.view_as(weight)


class BitWidth(Operator):
    """Fake-quantise the weights of each layer with ``bits`` < 32 (every factor of a
    factorised layer), so accuracy during search is what the bit-width allows; ``size``
    counts the real bits.  Baking writes the rounded values into float weights."""

    setting_key = "bits"
    neutral = 32

    def apply(self, model: nn.Module, space: Space, settings: Mapping[str, Mapping], example_input) -> None:
        for name, s in settings.items():
            bits = int(s.get("bits", 32))
            if bits >= 32:
                continue
            module = model.get_submodule(name)
            targets = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
            for target in targets:
                parametrize.register_parametrization(target, "weight", FakeQuantize(bits))
