"""Bit-width: fake quantisation of weights, per output channel, symmetric."""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from ..core.errors import RecipeError
from ..core.kinds import Kind
from ..core.ops import Op
from ..core.patterns import BITS, bits_for
from ..core.space import ChannelGroup, Knob, LayerInfo, Space
from ..evaluators.recovery import Constraint
from .base import Operator
from .conv1d import linearise

BITS_LOW = 2 / 32
"""The smallest density (bit-width / 32) a bits knob may ask for: ternary."""

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

    def needed(self, settings, space: Space) -> bool:
        return any(int(s.get("bits", 32)) < 32 for s in settings.values())

    def apply(self, model: nn.Module, space: Space, settings: Mapping[str, Mapping], example_input) -> None:
        linearise(model)  # Hugging Face Conv1D layers as nn.Linear: scales are per output row
        for name, s in settings.items():
            bits = int(s.get("bits", 32))
            if bits >= 32:
                continue
            module = model.get_submodule(name)
            targets = [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
            for target in targets:
                parametrize.register_parametrization(target, "weight", FakeQuantize(bits))
            if isinstance(getattr(module, "in_proj_weight", None), torch.Tensor):  # nn.MultiheadAttention's
                parametrize.register_parametrization(module, "in_proj_weight", FakeQuantize(bits))

    def constraints(self, model: nn.Module, space: Space, settings: Mapping[str, Mapping]) -> list[Constraint]:
        """Each quantised weight projected onto its rounding (``quantize``).  A layer that is
        also factorised has none: its factors, which are quantised, exist only after
        ``apply`` (the regime trains it towards its rank alone)."""
        found = []
        for name, s in settings.items():
            bits = int(s.get("bits", 32))
            if bits >= 32 or s.get("rank"):
                continue
            module = model.get_submodule(name)
            for qualified, target in module.named_modules(prefix=name):
                if isinstance(target, (nn.Conv2d, nn.Linear)):
                    found.append(Constraint(f"{qualified}.weight", target.weight, _projection(bits), (BitsKind.name,)))
            if isinstance(getattr(module, "in_proj_weight", None), torch.Tensor):
                found.append(Constraint(f"{name}.in_proj_weight", module.in_proj_weight, _projection(bits),
                                        (BitsKind.name,)))
        return found


def _projection(bits: int):
    def project(weight: torch.Tensor) -> torch.Tensor:
        return quantize(weight, bits)
    return project


class BitsKind(Kind):
    """Weight bit-width: one knob per Conv2d or Linear layer (Hugging Face ``Conv1D`` too)
    and per ``nn.MultiheadAttention`` (for both its projections), its density bit-width / 32,
    resolved down to an allowed width (``patterns.bits_for``: 2 (ternary), 4, 8, 16, 32).
    Field: ``bits`` (left out at 32).  Every op of the layer (each factor of a factorised
    one) stores its weights at that width."""

    name = "bits"
    fields = ("bits",)
    metrics = ("size",)
    operator = BitWidth()

    def knobs(self, layers: list[LayerInfo], groups: list[ChannelGroup], **options) -> list[Knob]:
        return [Knob(self.name, layer.name, BITS_LOW) for layer in layers
                if layer.kind != "attention" or layer.projections]

    def resolve(self, space: Space, candidate, settings) -> None:
        for layer in space.layers:
            bits = bits_for(candidate.get(f"{layer.name}/{self.name}", 1.0))
            if bits < 32:
                settings[layer.name]["bits"] = bits

    def validate_field(self, layer: str, field: str, value) -> None:
        if isinstance(value, bool) or value not in BITS:
            raise RecipeError(f"layer {layer!r} bits must be one of {', '.join(map(str, BITS))}, got {value!r}")

    def ops(self, layer: LayerInfo, settings, ops: list[Op]) -> list[Op]:
        bits = int(settings.get("bits", 32))
        if bits == 32:
            return ops
        return [op if op.kind == "attention" else op.evolve(bits=bits) for op in ops]
