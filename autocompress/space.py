"""The search space: named knobs per layer and per coupled channel group, plus the
analytic cost model that lets a budget be checked without touching torch.

Knob values are *densities* in (0, 1]: a channel knob is the kept fraction of a group's
channels, a sparsity knob is ``1 - sparsity`` of a layer's weights.  1 is the neutral
setting (nothing removed).  A Candidate is a plain ``{knob name: value}`` dict.
A resolved candidate ("layer settings") is ``{layer name: {"out_channels": int,
"sparsity": float}}``: what a Recipe stores and what ``compress`` applies.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Mapping

from .errors import RecipeError

Candidate = dict[str, float]
LayerSettings = dict[str, dict[str, float]]

KINDS = ("channels", "sparsity", "rank", "bits")
"""Knob kinds the Space type holds; this release searches ``channels`` and ``sparsity``."""

# Which knob kinds can lower each budget metric.
KINDS_FOR_METRIC = {
    "flops": ("channels",),
    "latency": ("channels",),
    "params": ("channels", "sparsity"),
    "size": ("channels", "sparsity"),
}


def kept_channels(size: int, density: float) -> int:
    """Channels kept out of ``size`` at keep ratio ``density`` (at least one)."""
    return max(1, min(size, math.floor(size * density + 0.5)))


def pruned_weights(numel: int, sparsity: float) -> int:
    """Weights zeroed out of ``numel`` by magnitude pruning at ``sparsity``."""
    return min(numel - 1, max(0, math.floor(numel * sparsity + 1e-9)))


@dataclass(frozen=True)
class Knob:
    """One searchable setting: ``kind`` applied to ``target`` (a group or a layer name).

    ``low`` and ``high`` bound the density; 1.0 is neutral.
    """

    kind: str
    target: str
    low: float
    high: float = 1.0

    @property
    def name(self) -> str:
        return f"{self.target}/{self.kind}"


@dataclass(frozen=True)
class LayerInfo:
    """A prunable Conv2d or Linear layer as the cost model sees it.

    ``flops_per_pair`` is the layer's FLOPs (2 per multiply-accumulate, for the example
    input) divided by ``out_channels * in_channels // groups``; ``kernel`` is kh*kw.
    ``out_group`` names the channel group that prunes its outputs; ``in_groups`` lists
    ``(group, features per channel)`` for every group feeding its inputs (several where a
    concatenation feeds it; features per channel is the spatial size where a Linear
    follows a flatten, else 1).  Inputs not fed by any group are fixed.
    """

    name: str
    kind: str
    in_channels: int
    out_channels: int
    groups: int
    kernel: int
    flops_per_pair: int
    bias: bool
    out_group: str | None = None
    in_groups: tuple[tuple[str, int], ...] = ()

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels == self.out_channels


@dataclass(frozen=True)
class ChannelGroup:
    """Channels coupled by residual adds, concatenation or normalisation: pruned together.

    ``members`` are the layers whose outputs the group prunes; ``params_per_channel``
    counts the other parameter entries (BatchNorm affine...) removed with each channel.
    """

    name: str
    size: int
    members: tuple[str, ...]
    params_per_channel: int = 0


@dataclass(frozen=True)
class Space:
    """Everything the search may change in one model, and what each change costs."""

    layers: tuple[LayerInfo, ...]
    groups: tuple[ChannelGroup, ...]
    knobs: tuple[Knob, ...]
    other_params: int = 0
    excluded: Mapping[str, str] = field(default_factory=dict)
    bits: int = 32

    # ----- knobs -------------------------------------------------------------
    @property
    def knob_names(self) -> list[str]:
        return [k.name for k in self.knobs]

    def knob(self, name: str) -> Knob:
        for k in self.knobs:
            if k.name == name:
                return k
        raise KeyError(name)

    def restrict(self, kinds: tuple[str, ...]) -> "Space":
        """A copy with only the knobs of the given kinds."""
        return replace(self, knobs=tuple(k for k in self.knobs if k.kind in kinds))

    def neutral(self) -> Candidate:
        return {k.name: 1.0 for k in self.knobs}

    def most_compressed(self) -> Candidate:
        return {k.name: k.low for k in self.knobs}

    def layer(self, name: str) -> LayerInfo:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    # ----- candidate -> layer settings ----------------------------------------
    def resolve(self, candidate: Mapping[str, float]) -> LayerSettings:
        """Layer settings for a candidate; knobs it leaves out stay neutral."""
        kept = {g.name: kept_channels(g.size, candidate.get(f"{g.name}/channels", 1.0)) for g in self.groups}
        settings: LayerSettings = {}
        for layer in self.layers:
            out = kept[layer.out_group] if layer.out_group else layer.out_channels
            density = candidate.get(f"{layer.name}/sparsity", 1.0)
            settings[layer.name] = {"out_channels": out, "sparsity": round(1.0 - density, 6)}
        return settings

    def group_channels(self, settings: Mapping[str, Mapping[str, float]]) -> dict[str, int]:
        """Kept channels per group, read from layer settings.

        Raises RecipeError if coupled layers ask for different counts or a count is out of range.
        """
        kept = {}
        for g in self.groups:
            counts = {m: settings.get(m, {}).get("out_channels", g.size) for m in g.members}
            first = counts[g.members[0]]
            for member, count in counts.items():
                if count != first:
                    raise RecipeError(
                        f"layers {g.members[0]} and {member} share channels but ask for {first} and {count} "
                        "out_channels; coupled layers need the same count"
                    )
            if not (isinstance(first, int) and 1 <= first <= g.size):
                raise RecipeError(f"layer {g.name} asks for {first!r} out_channels; it has {g.size}")
            kept[g.name] = first
        for layer in self.layers:
            if layer.out_group is None:
                count = settings.get(layer.name, {}).get("out_channels", layer.out_channels)
                if count != layer.out_channels:
                    raise RecipeError(
                        f"layer {layer.name} asks for {count!r} out_channels, but its outputs cannot be pruned "
                        f"(it has {layer.out_channels})"
                    )
        return kept

    # ----- analytic costs -------------------------------------------------------
    def cost(self, settings: Mapping[str, Mapping[str, float]]) -> dict[str, float]:
        """FLOPs, params (non-zero weights plus other parameters) and size in bytes.

        Exact for the model ``compress`` builds from the same settings: tests check it
        against ``torch.utils.flop_counter`` and the real parameter tensors.
        """
        kept = self.group_channels(settings)
        size = {g.name: g.size for g in self.groups}
        flops = params = 0
        size_bits = 0.0
        for layer in self.layers:
            out = kept[layer.out_group] if layer.out_group else layer.out_channels
            inp = layer.in_channels - sum(
                (size[g] - kept[g]) * per_channel for g, per_channel in layer.in_groups
            )
            per_group = 1 if layer.depthwise else inp // layer.groups
            numel = out * per_group * layer.kernel
            sparsity = float(settings.get(layer.name, {}).get("sparsity", 0.0))
            nnz = numel - pruned_weights(numel, sparsity)
            bias = out if layer.bias else 0
            flops += layer.flops_per_pair * out * per_group
            params += nnz + bias
            dense_bits = numel * self.bits
            sparse_bits = nnz * self.bits + numel  # values plus a one-bit-per-weight mask
            size_bits += min(dense_bits, sparse_bits) + bias * self.bits
        other = self.other_params + sum(g.params_per_channel * kept[g.name] for g in self.groups)
        params += other
        size_bits += other * self.bits
        return {"flops": float(flops), "params": float(params), "size": math.ceil(size_bits / 8)}

    def candidate_cost(self, candidate: Mapping[str, float]) -> dict[str, float]:
        return self.cost(self.resolve(candidate))
