"""The search space: named knobs per layer and per coupled channel group, plus the
analytic cost model that lets a budget be checked without touching torch.

Knob values are *densities* in (0, 1], 1 being neutral (nothing changed).  Each knob kind
is a registered compression kind (``core.kinds.Kind``) that says what its knobs mean,
resolves them into layer settings, checks them and changes the layer's ops; the built-in
kinds (registered by ``autocompress.compress``) are:
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
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

from .errors import RecipeError
from .kinds import kinds
from .ops import layer_ops, space_ops
from .patterns import weight_bits, zeroed_weights

Candidate = dict[str, float]
LayerSettings = dict[str, dict[str, Any]]


def channel_step(size: int, multiple: int) -> int:
    """The step kept channel counts of a ``size``-channel group move in: ``multiple``,
    halved until the group holds at least two steps (1 for tiny groups)."""
    step = max(1, int(multiple))
    while step > 1 and size < 2 * step:
        step //= 2
    return step


def kept_channels(size: int, density: float, multiple: int = 1, blocks: int = 1) -> int:
    """Channels kept out of ``size`` at keep ratio ``density``: a multiple of the group's
    ``channel_step`` (or all of them), at least one step.  A group of ``blocks`` equal
    blocks (``ChannelGroup.blocks``) keeps as many in each: ``blocks`` times the count kept
    of one block, whose step makes the total a multiple of ``multiple`` where it can."""
    if blocks > 1:
        return blocks * kept_channels(size // blocks, density, multiple // math.gcd(multiple, blocks))
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
    = its width) named like its group of heads (``ChannelGroup.head_dim``), which carries its
    per-head costs; it takes a ``heads`` setting.  With ``projections`` (nn.MultiheadAttention)
    it holds its projections too, whose weights take a ``sparsity`` and ``bits`` (its group
    counts them dense); without (Hugging Face attention) it runs only attention's two
    products and its projections are Linear layers of their own: the query/key/value ones
    name the group as ``out_group`` with ``out_per_channel`` outputs per head, the output
    projection lists it in ``in_groups``.
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
    out_per_channel: int = 1
    projections: bool = True

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
    per channel.  ``heads_per_channel`` is how many query heads one channel holds: in a
    grouped-query attention a channel is a key/value head with its query heads (its
    ``heads`` setting counts query heads, a multiple of it).  ``blocks`` > 1 where grouped
    convolutions read or write the channels: they are that many equal blocks (the
    convolutions' groups), pruned alike, the same positions going from every block, so a
    kept count is a multiple of ``blocks`` and the convolutions keep their groups.
    """

    name: str
    size: int
    members: tuple[str, ...]
    params_per_channel: int = 0
    flops_per_channel: int = 0
    head_dim: int = 0
    heads_per_channel: int = 1
    blocks: int = 1


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

    def restrict(self, kinds: tuple[str, ...]) -> Space:
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
        """Layer settings for a candidate; knobs it leaves out stay neutral.  Every
        registered kind writes its fields in turn (``Kind.resolve``).  A group's
        ``channel_order`` (indices, most wanted first) goes on its root layer (the layer
        the group is named after) and decides which channels survive."""
        settings: LayerSettings = {layer.name: {} for layer in self.layers}
        for kind in kinds():
            kind.resolve(self, candidate, settings)
        for layer in self.layers:
            if channel_order and layer.name in channel_order and layer.name == layer.out_group:
                settings[layer.name]["channel_order"] = [int(i) for i in channel_order[layer.name]]
        return settings

    def pruned_shape(self, layer: LayerInfo, kept: Mapping[str, int]) -> tuple[int, int]:
        """``(out_channels, in_channels)`` of ``layer`` when its groups keep ``kept`` channels
        (as ``group_channels`` gives them)."""
        out = kept[layer.out_group] * layer.out_per_channel if layer.out_group else layer.out_channels
        if layer.depthwise:  # one input channel per output channel: they are pruned together
            return out, out
        size = self._group_sizes
        return out, layer.in_channels - sum((size[g] - kept[g]) * per_channel for g, per_channel in layer.in_groups)

    @cached_property
    def _group_sizes(self) -> dict[str, int]:
        return {g.name: g.size for g in self.groups}

    def group_channels(self, settings: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
        """Kept channels per group, read from layer settings.

        Raises RecipeError if coupled layers ask for different counts or a count is out of range.
        """
        kept = {}
        for g in self.groups:
            if g.head_dim:
                per, total = g.heads_per_channel, g.size * g.heads_per_channel
                heads = settings.get(g.name, {}).get("heads", total)
                if not (isinstance(heads, int) and not isinstance(heads, bool) and 1 <= heads <= total):
                    raise RecipeError(f"attention layer {g.name} asks for {heads!r} heads; it has {total}")
                if heads % per:
                    raise RecipeError(f"attention layer {g.name} asks for {heads} heads; it keeps whole key/value "
                                      f"groups of {per} query heads, so a multiple of {per}")
                kept[g.name] = heads // per
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
            if first % g.blocks:
                raise RecipeError(f"layer {g.name} asks for {first} out_channels; grouped convolutions keep as many "
                                  f"in each of their {g.blocks} groups, so a multiple of {g.blocks}")
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

        Raises RecipeError for settings this model cannot take (see ``group_channels``,
        and every registered kind's ``Kind.check``: e.g. a rank above what the pruned layer
        allows, or a decomposition of the wrong kind).
        """
        kept = self.group_channels(settings)
        checks = kinds()
        shapes = {}
        for layer in self.layers:
            shape = shapes[layer.name] = self.pruned_shape(layer, kept)
            entry = settings.get(layer.name, {})
            for kind in checks:
                kind.check(self, layer, entry, shape)
        return shapes

    # ----- analytic costs -------------------------------------------------------
    def cost(self, settings: Mapping[str, Mapping[str, Any]]) -> dict[str, float]:
        """FLOPs, params (non-zero weights plus other parameters) and size in bytes,
        summed over the ops each layer runs (``ops.layer_ops``: what the kinds make of it).

        Exact for the model ``compress`` builds from the same settings: tests check it
        against ``torch.utils.flop_counter`` and the real parameter tensors.
        """
        kept = self.group_channels(settings)
        shapes = self.shapes(settings)
        flops = params = 0
        size_bits = 0
        per_layer = layer_ops(self, settings, shapes, kept)
        for layer, ops in per_layer:
            if layer.kind == "attention":  # costed per head, with its group, its stored weights excepted
                for op in ops:
                    if op.kind != "attention" and (op.sparsity or op.bits != 32):
                        rows, cols = op.n * op.groups, op.k
                        nnz = rows * cols - zeroed_weights(rows, cols, op.sparsity, op.pattern)
                        params -= rows * cols - nnz
                        size_bits += weight_bits(rows, cols, nnz, op.bits, op.pattern) - 32 * rows * cols
                continue
            for op in ops:
                rows, cols = op.n * op.groups, op.k
                nnz = rows * cols - zeroed_weights(rows, cols, op.sparsity, op.pattern)
                flops += op.flops
                params += nnz
                size_bits += weight_bits(rows, cols, nnz, op.bits, op.pattern)
            bias = shapes[layer.name][0] if layer.bias else 0
            params += bias
            size_bits += bias * 32
        other = self.other_params + sum(g.params_per_channel * kept[g.name] for g in self.groups)
        params += other
        size_bits += other * 32
        flops += self.other_flops + sum(g.flops_per_channel * kept[g.name] for g in self.groups)
        costs = {"flops": float(flops), "params": float(params), "size": float(math.ceil(size_bits / 8))}
        if self.latency_models:
            ops = space_ops(self, settings, per_layer)
            for name, model in self.latency_models.items():
                costs[name] = float(model.total(ops, self.latency_batch))
        return costs

    def candidate_cost(self, candidate: Mapping[str, float]) -> dict[str, float]:
        return self.cost(self.resolve(candidate))

