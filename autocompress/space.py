"""The search space: named knobs per layer and per coupled channel group, plus the
analytic cost model that lets a budget be checked without touching torch.

Knob values are *densities* in (0, 1], 1 being neutral (nothing changed):
- ``channels`` (per group): the kept fraction of the group's channels (of an attention
  layer's heads, for a group of heads);
- ``sparsity`` (per layer): ``1 - sparsity`` of the weight, in the space's pattern
  (unstructured, N:M, or RxC blocks);
- ``rank`` (per layer): the fraction of the break-even rank (below which a low-rank
  factorisation saves FLOPs) to keep, in the space's decomposition for that layer;
- ``bits`` (per layer): bit-width / 32, resolved down to 2 (ternary), 4, 8, 16 or 32.
A Candidate is a plain ``{knob name: value}`` dict.  A resolved candidate ("layer
settings") is ``{layer name: {"out_channels": int, "sparsity": float, ...}}``: what a
Recipe stores and what ``compress`` applies; an attention layer's entry also holds its
kept ``heads``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, Mapping

from .errors import RecipeError
from .patterns import (bits_for, break_even_rank, lowrank_flops, lowrank_shapes, max_rank, pattern_sparsity,
                       rank_for, weight_bits, zeroed_weights)

Candidate = dict[str, float]
LayerSettings = dict[str, dict[str, Any]]

KINDS = ("channels", "sparsity", "rank", "bits")

KINDS_FOR_METRIC = {
    "flops": ("channels",),
    "latency": ("channels",),
    "params": ("channels", "sparsity"),
    "size": ("channels", "sparsity", "bits"),
}
"""The knob kinds searched by default for each budget metric (``--knobs`` overrides)."""


def channel_step(size: int, multiple: int) -> int:
    """The step kept channel counts of a ``size``-channel group move in: ``multiple``,
    halved until the group holds at least two steps (1 for tiny groups)."""
    step = max(1, int(multiple))
    while step > 1 and size < 2 * step:
        step //= 2
    return step


def kept_channels(size: int, density: float, multiple: int = 1) -> int:
    """Channels kept out of ``size`` at keep ratio ``density``: a multiple of the group's
    ``channel_step`` (or all of them), at least one step."""
    step, target = channel_step(size, multiple), size * density
    nearest = step * math.floor(target / step + 0.5)
    if density >= 1.0 or size - target <= abs(target - nearest):
        return size
    return max(step, min(size, nearest))


@dataclass(frozen=True)
class Knob:
    """One searchable setting: ``kind`` applied to ``target`` (a group or a layer name).

    ``low`` and ``high`` bound the density; 1.0 is neutral.  ``option`` is the pattern
    (sparsity) or decomposition (rank) the knob applies.
    """

    kind: str
    target: str
    low: float
    high: float = 1.0
    option: str = ""

    @property
    def name(self) -> str:
        return f"{self.target}/{self.kind}"


@dataclass(frozen=True)
class LayerInfo:
    """A Conv2d or Linear layer (or an attention layer) as the cost model sees it.

    ``flops_per_pair`` is the layer's FLOPs (2 per multiply-accumulate, for the example
    input) divided by ``out_channels * in_channels // groups``.  ``kernel`` is (kh, kw)
    ((1, 1) for Linear); ``rows`` are the output positions at the input's resolution,
    after a vertical kx1 convolution, and at the output's resolution (all equal for Linear).
    ``out_group`` names the channel group that prunes its outputs; ``in_groups`` lists
    ``(group, features per channel)`` for every group feeding its inputs (several where a
    concatenation feeds it; features per channel is the spatial size where a Linear
    follows a flatten, else 1).  Inputs not fed by any group are fixed.  ``geometry`` is a
    convolution's ``(h_in, w_in, stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w)``
    per sample (empty for Linear), for latency models that run the layer.

    ``kind`` "attention" is a multi-head attention layer (``in_channels`` = ``out_channels``
    = its width): its costs, all proportional to its kept heads, are its group of heads'
    (``ChannelGroup.head_dim``), which is named after it; it takes only a ``heads`` setting.
    """

    name: str
    kind: str
    in_channels: int
    out_channels: int
    groups: int
    kernel: tuple[int, int]
    flops_per_pair: int
    bias: bool
    out_group: str | None = None
    in_groups: tuple[tuple[str, int], ...] = ()
    rows: tuple[int, int, int] = (1, 1, 1)
    geometry: tuple[int, ...] = ()

    @property
    def depthwise(self) -> bool:
        return self.groups > 1 and self.groups == self.in_channels == self.out_channels


@dataclass(frozen=True)
class ChannelGroup:
    """Channels coupled by residual adds, concatenation or normalisation: pruned together.

    ``members`` are the layers whose outputs the group prunes; ``params_per_channel``
    counts the other parameter entries (BatchNorm affine...) removed with each channel,
    ``flops_per_channel`` the FLOPs outside the layers' own.  A group with a ``head_dim``
    is the heads of the attention layer it is named after: its channels are heads (of
    ``head_dim`` features each), kept one by one, with all their weights and FLOPs counted
    per channel.
    """

    name: str
    size: int
    members: tuple[str, ...]
    params_per_channel: int = 0
    flops_per_channel: int = 0
    head_dim: int = 0


@dataclass(frozen=True)
class Space:
    """Everything the search may change in one model, and what each change costs.

    ``other_params`` / ``other_flops`` are the parameters and FLOPs outside the layers and
    groups (e.g. attention's matrix products), which no knob changes.  ``channel_multiple``
    makes kept channel counts hardware-friendly (see ``kept_channels``): CPU and GPU
    kernels work on blocks of 8 or 16 channels, and a count just above a block costs as
    much as the next block (BENCHMARKS.md, real CPU speedup).  ``latency_models`` maps
    cost names (``latency@h100``) to latency models (``latency_models.LatencyModel``):
    ``cost`` predicts each at ``latency_batch`` from the ops the settings run.
    """

    layers: tuple[LayerInfo, ...]
    groups: tuple[ChannelGroup, ...]
    knobs: tuple[Knob, ...]
    other_params: int = 0
    other_flops: int = 0
    excluded: Mapping[str, str] = field(default_factory=dict)
    channel_multiple: int = 1
    latency_models: Mapping[str, Any] = field(default_factory=dict)
    latency_batch: int = 1

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

    @cached_property
    def gathering(self) -> frozenset[str]:
        """``ops.gathering_layers`` of this space, computed once (``space_ops`` asks on every call)."""
        from .ops import gathering_layers

        return frozenset(gathering_layers(self))

    def most_compressed(self) -> Candidate:
        return {k.name: k.low for k in self.knobs}

    def layer(self, name: str) -> LayerInfo:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    # ----- candidate -> layer settings ----------------------------------------
    def resolve(self, candidate: Mapping[str, float],
                channel_order: Mapping[str, list[int]] | None = None) -> LayerSettings:
        """Layer settings for a candidate; knobs it leaves out stay neutral.  A group's
        ``channel_order`` (indices, most wanted first) goes on its root layer (the layer
        the group is named after) and decides which channels survive."""
        kept = {g.name: kept_channels(g.size, candidate.get(f"{g.name}/channels", 1.0),
                                      1 if g.head_dim else self.channel_multiple)
                for g in self.groups}
        size = {g.name: g.size for g in self.groups}
        knobs = {k.name: k for k in self.knobs}
        settings: LayerSettings = {}
        for layer in self.layers:
            out = kept[layer.out_group] if layer.out_group else layer.out_channels
            entry: dict[str, Any] = {"out_channels": out, "sparsity": 0.0}
            if layer.kind == "attention":
                entry["heads"] = kept[layer.name]
            sparsity = knobs.get(f"{layer.name}/sparsity")
            density = candidate.get(f"{layer.name}/sparsity", 1.0)
            if sparsity is not None and density < 1.0:
                pattern = sparsity.option or "unstructured"
                entry["sparsity"] = round(pattern_sparsity(pattern, 1.0 - density), 6)
                if pattern != "unstructured":
                    entry["pattern"] = pattern
            rank = knobs.get(f"{layer.name}/rank")
            if rank is not None:
                inp = _inputs(layer, kept, size)
                kh, kw = layer.kernel
                even = break_even_rank(rank.option, out, inp, kh, kw, layer.rows)
                r = rank_for(candidate.get(rank.name, 1.0), even)
                if r:  # a factorised layer is not also masked
                    entry.update(sparsity=0.0, rank=r, decomposition=rank.option)
                    entry.pop("pattern", None)
            bits = bits_for(candidate.get(f"{layer.name}/bits", 1.0))
            if bits < 32:
                entry["bits"] = bits
            if channel_order and layer.name in channel_order and layer.name == layer.out_group:
                entry["channel_order"] = [int(i) for i in channel_order[layer.name]]
            settings[layer.name] = entry
        return settings

    def group_channels(self, settings: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
        """Kept channels per group, read from layer settings.

        Raises RecipeError if coupled layers ask for different counts or a count is out of range.
        """
        kept = {}
        for g in self.groups:
            if g.head_dim:
                heads = settings.get(g.name, {}).get("heads", g.size)
                if not (isinstance(heads, int) and not isinstance(heads, bool) and 1 <= heads <= g.size):
                    raise RecipeError(f"attention layer {g.name} asks for {heads!r} heads; it has {g.size}")
                kept[g.name] = heads
                continue
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

    def shapes(self, settings: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[int, int]]:
        """``(out_channels, in_channels)`` of every layer after channel pruning.

        Raises RecipeError for settings this model cannot take (see ``group_channels``; a
        rank above what the pruned layer allows, or a decomposition of the wrong kind).
        """
        kept = self.group_channels(settings)
        size = {g.name: g.size for g in self.groups}
        shapes = {}
        for layer in self.layers:
            out, inp = kept[layer.out_group] if layer.out_group else layer.out_channels, _inputs(layer, kept, size)
            if layer.depthwise:  # one input channel per output channel: they are pruned together
                inp = out
            if layer.kind == "attention":
                _check_attention(layer, settings.get(layer.name, {}))
            elif settings.get(layer.name, {}).get("heads") is not None:
                raise RecipeError(f"layer {layer.name} has a heads setting but is not an attention layer")
            rank, decomposition = settings.get(layer.name, {}).get("rank"), settings.get(layer.name, {}).get("decomposition")
            if rank:
                allowed = "svd" if layer.kernel == (1, 1) else "tucker2 or spatial"
                if layer.groups != 1 or decomposition not in allowed.split(" or "):
                    raise RecipeError(
                        f"layer {layer.name} cannot take decomposition {decomposition!r}"
                        + ("" if layer.groups != 1 else f"; use {allowed}")
                    )
                limit = max_rank(decomposition, out, inp, *layer.kernel)
                if rank > limit:
                    raise RecipeError(f"layer {layer.name} asks for rank {rank}; at its size it allows at most {limit}")
            order = settings.get(layer.name, {}).get("channel_order")
            if order is not None:
                if layer.out_group != layer.name:
                    raise RecipeError(f"layer {layer.name} has a channel_order but does not name a channel group")
                if len(set(order)) != len(order) or not all(0 <= i < size[layer.name] for i in order) \
                        or len(order) < out:
                    raise RecipeError(f"layer {layer.name} channel_order must hold at least {out} distinct "
                                      f"indices in [0, {size[layer.name]})")
            shapes[layer.name] = (out, inp)
        return shapes

    # ----- analytic costs -------------------------------------------------------
    def cost(self, settings: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
        """FLOPs, params (non-zero weights plus other parameters) and size in bytes.

        Exact for the model ``compress`` builds from the same settings: tests check it
        against ``torch.utils.flop_counter`` and the real parameter tensors.
        """
        kept = self.group_channels(settings)
        shapes = self.shapes(settings)
        flops = params = 0
        size_bits = 0
        for layer in self.layers:
            if layer.kind == "attention":  # costed per head, with its group
                continue
            out, inp = shapes[layer.name]
            s = settings.get(layer.name, {})
            bits = int(s.get("bits", 32))
            bias = out if layer.bias else 0
            kh, kw = layer.kernel
            if s.get("rank"):
                rank, decomposition = int(s["rank"]), s["decomposition"]
                flops += lowrank_flops(decomposition, out, inp, kh, kw, rank, layer.rows)
                for rows, cols, kernel in lowrank_shapes(decomposition, out, inp, kh, kw, rank):
                    params += rows * cols * kernel
                    size_bits += rows * cols * kernel * bits
            else:
                per_group = 1 if layer.depthwise else inp // layer.groups
                rows, cols = out, per_group * kh * kw
                pattern = s.get("pattern", "unstructured")
                nnz = rows * cols - zeroed_weights(rows, cols, float(s.get("sparsity", 0.0)), pattern)
                flops += layer.flops_per_pair * out * per_group
                params += nnz
                size_bits += weight_bits(rows, cols, nnz, bits, pattern)
            params += bias
            size_bits += bias * 32
        other = self.other_params + sum(g.params_per_channel * kept[g.name] for g in self.groups)
        params += other
        size_bits += other * 32
        flops += self.other_flops + sum(g.flops_per_channel * kept[g.name] for g in self.groups)
        costs = {"flops": float(flops), "params": float(params), "size": float(math.ceil(size_bits / 8))}
        if self.latency_models:
            from .ops import space_ops

            ops = space_ops(self, settings)
            for name, model in self.latency_models.items():
                costs[name] = float(model.total(ops, self.latency_batch))
        return costs

    def candidate_cost(self, candidate: Mapping[str, float]) -> dict[str, float]:
        return self.cost(self.resolve(candidate))


def _check_attention(layer: LayerInfo, settings: Mapping[str, Any]) -> None:
    for key, value in settings.items():
        if key not in ("heads", "out_channels", "sparsity") or (key == "out_channels" and value != layer.out_channels) \
                or (key == "sparsity" and value != 0):
            raise RecipeError(f"attention layer {layer.name} cannot take {key}={value!r}; only its heads are pruned")


def _inputs(layer: LayerInfo, kept: Mapping[str, int], size: Mapping[str, int]) -> int:
    return layer.in_channels - sum((size[g] - kept[g]) * per_channel for g, per_channel in layer.in_groups)
