"""Sparsity masks chosen by magnitude: unstructured, N:M and block patterns."""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from ..core.errors import RecipeError
from ..core.kinds import Kind, is_number
from ..core.ops import Op
from ..core.patterns import parse_pattern, pattern_sparsity, zeroed_weights
from ..core.space import ChannelGroup, Knob, LayerInfo, Space
from ..evaluators.recovery import Constraint
from .base import Operator
from .conv1d import linearise

SPARSITY_LOW_DENSITY = 0.005
"""The smallest density (kept fraction of a weight) a sparsity knob may ask for: 0.5%, so a
layer can be pruned 200x and a model 50x and more (the ADMM papers' LeNets)."""


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

    def needed(self, settings, space: Space) -> bool:
        return any(s.get("sparsity", 0.0) > 0 and not s.get("rank") for s in settings.values())

    def apply(self, model: nn.Module, space: Space, settings: Mapping[str, Mapping], example_input) -> None:
        linearise(model)  # Hugging Face Conv1D layers as nn.Linear: masks are chosen per output row
        for name, sparsity, pattern in _masked(settings):
            module = model.get_submodule(name)
            if space.layer(name).kind == "attention":
                _mask_projections(module, space.layer(name), sparsity, pattern)
                continue
            mask = magnitude_mask(module.weight, sparsity, pattern)
            parametrize.register_parametrization(module, "weight", WeightMask(mask, pattern))

    def constraints(self, model: nn.Module, space: Space, settings: Mapping[str, Mapping]) -> list[Constraint]:
        """Each masked weight projected onto its magnitude mask (``magnitude_mask``; an
        ``nn.MultiheadAttention``'s projections as ``apply`` masks them)."""
        found = []
        for name, sparsity, pattern in _masked(settings):
            module = model.get_submodule(name)
            weights = [(name, "weight", module, False)]
            if space.layer(name).kind == "attention":
                key_rows, _, query_rows = space.layer(name).rows
                weights = [(name, "in_proj_weight", module, key_rows != query_rows),
                           (f"{name}.out_proj", "weight", module.out_proj, False)]
            for prefix, attribute, owner, split in weights:
                project = _split_projection(sparsity, pattern) if split else _projection(sparsity, pattern)
                found.append(Constraint(f"{prefix}.{attribute}", getattr(owner, attribute), project,
                                        (SparsityKind.name,), sparsity, pattern))
        return found


def _masked(settings: Mapping[str, Mapping]):
    """``(layer, sparsity, pattern)`` of every layer the settings mask (not factorised ones)."""
    for name, s in settings.items():
        sparsity = float(s.get("sparsity", 0.0))
        if sparsity > 0 and not s.get("rank"):
            yield name, sparsity, str(s.get("pattern", "unstructured"))


def _projection(sparsity: float, pattern: str):
    def project(weight: torch.Tensor) -> torch.Tensor:
        return weight * magnitude_mask(weight, sparsity, pattern)
    return project


def _split_projection(sparsity: float, pattern: str):
    """For an ``in_proj_weight`` of cross-attention: query rows and key/value rows apart."""
    def project(weight: torch.Tensor) -> torch.Tensor:
        width = weight.shape[0] // 3
        return torch.cat([weight[:width] * magnitude_mask(weight[:width], sparsity, pattern),
                          weight[width:] * magnitude_mask(weight[width:], sparsity, pattern)])
    return project


def _mask_projections(attention: nn.Module, layer: LayerInfo, sparsity: float, pattern: str) -> None:
    """Mask the projections of an ``nn.MultiheadAttention`` (or ``HeadPrunedAttention``) as
    ``Space.cost`` counts them: ``in_proj_weight`` as one matrix for self-attention, its query
    rows and its key/value rows apart otherwise, and ``out_proj.weight``."""
    weight = attention.in_proj_weight
    key_rows, _, query_rows = layer.rows
    if key_rows == query_rows:
        mask = magnitude_mask(weight, sparsity, pattern)
    else:
        width = weight.shape[0] // 3
        mask = torch.cat([magnitude_mask(weight[:width], sparsity, pattern),
                          magnitude_mask(weight[width:], sparsity, pattern)])
    parametrize.register_parametrization(attention, "in_proj_weight", WeightMask(mask, pattern))
    out = attention.out_proj
    parametrize.register_parametrization(out, "weight", WeightMask(magnitude_mask(out.weight, sparsity, pattern),
                                                                   pattern))


class SparsityKind(Kind):
    """Weight sparsity: one knob per Conv2d or Linear layer (Hugging Face ``Conv1D`` too)
    and per ``nn.MultiheadAttention`` (for both its projections), its density the kept fraction
    of the weight, in the space's pattern (``build_space``'s ``sparsity_pattern``: the
    knob's option; N:M knobs only where a row holds at least M weights, and their density
    is fixed at N/M).  Fields: ``sparsity`` (every layer's, 0.0 where dense) and
    ``pattern`` (left out for unstructured).  The op keeps its dense FLOPs and stores
    ``patterns.zeroed_weights`` fewer weights."""

    name = "sparsity"
    fields = ("sparsity", "pattern")
    metrics = ("params", "size")
    operator = MagnitudeSparsity()

    def knobs(self, layers: list[LayerInfo], groups: list[ChannelGroup], sparsity_pattern: str = "unstructured",
              **options) -> list[Knob]:
        kind, (_, m) = parse_pattern(sparsity_pattern)
        knobs = []
        for layer in layers:
            if layer.kind == "attention" and not layer.projections:
                continue
            cols = layer.in_channels // layer.groups * layer.kernel[0] * layer.kernel[1]
            if kind == "unstructured":
                knobs.append(Knob(self.name, layer.name, SPARSITY_LOW_DENSITY))
            elif kind == "nm" and cols >= m:
                knobs.append(Knob(self.name, layer.name, 1.0 - pattern_sparsity(sparsity_pattern, 0.0),
                                  option=sparsity_pattern))
            elif kind == "block":
                knobs.append(Knob(self.name, layer.name, SPARSITY_LOW_DENSITY, option=sparsity_pattern))
        return knobs

    def resolve(self, space: Space, candidate, settings) -> None:
        for entry in settings.values():
            entry["sparsity"] = 0.0
        for knob in space.knobs:
            density = candidate.get(knob.name, 1.0) if knob.kind == self.name else 1.0
            if density < 1.0:
                pattern = knob.option or "unstructured"
                entry = settings[knob.target]
                entry["sparsity"] = round(pattern_sparsity(pattern, 1.0 - density), 6)
                if pattern != "unstructured":
                    entry["pattern"] = pattern

    def validate_field(self, layer: str, field: str, value) -> None:
        if field == "sparsity" and not (is_number(value) and 0 <= value < 1):
            raise RecipeError(f"layer {layer!r} sparsity must be a number in [0, 1), got {value!r}")
        if field == "pattern":
            try:
                parse_pattern(value if isinstance(value, str) else repr(value))
            except ValueError as exc:
                raise RecipeError(f"layer {layer!r}: {exc}") from None

    def ops(self, layer: LayerInfo, settings, ops: list[Op]) -> list[Op]:
        if "sparsity" not in settings and "pattern" not in settings:
            return ops
        sparsity, pattern = float(settings.get("sparsity", 0.0)), str(settings.get("pattern", "unstructured"))
        return [op if (op.sparsity, op.pattern) == (sparsity, pattern) or op.kind == "attention"
                else op.evolve(sparsity=sparsity, pattern=pattern) for op in ops]
