"""Structured channel pruning: removes whole channels, with everything coupled to them."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch_pruning as tp

from ..core.errors import RecipeError
from ..core.kinds import Kind, is_whole
from ..core.space import ChannelGroup, Knob, LayerInfo, Space, kept_channels
from .attention import HeadPruning
from .base import Operator
from .channel_graph import channel_graph
from .conv1d import linearise

CHANNEL_LOW = 0.1
"""The smallest density (kept fraction of a group's channels) a channel knob may ask for."""


class ChannelPruning(Operator):
    """Keep the ``out_channels`` strongest channels of each coupled group (L2 magnitude
    summed over the group, or the first ones of the root layer's ``channel_order``
    where the settings give one), physically removing the rest from every layer in the group:
    convolutions, BatchNorm entries and the consumers' input channels.  Uses
    Torch-Pruning's dependency graph, so residual adds and concatenations stay consistent.
    Groups of heads (attention layers asking for fewer ``heads``) are then pruned by
    ``HeadPruning``.
    """

    structural = True

    def needed(self, settings, space: Space) -> bool:
        kept = space.group_channels(settings)
        return any(kept[g.name] < g.size for g in space.groups)

    def apply(self, model: nn.Module, space: Space, settings: Mapping[str, Mapping[str, float]],
              example_input: torch.Tensor) -> None:
        kept = space.group_channels(settings)
        todo = [g for g in space.groups if kept[g.name] < g.size and not g.head_dim]
        if todo:
            self._prune(model, space, settings, kept, todo, example_input)
        if any(g.head_dim and kept[g.name] < g.size for g in space.groups):
            HeadPruning().apply(model, space, settings, example_input)

    def _prune(self, model: nn.Module, space: Space, settings: Mapping[str, Mapping[str, float]],
               kept: Mapping[str, int], todo: list[ChannelGroup], example_input: torch.Tensor) -> None:
        linearise(model)  # Hugging Face Conv1D layers as the nn.Linear layers Torch-Pruning knows
        graph = channel_graph(model, example_input)  # HF caches off while it traces
        importance = tp.importance.MagnitudeImportance(p=2)
        for group in todo:
            root = model.get_submodule(group.name)
            order = settings.get(group.name, {}).get("channel_order")
            if order is not None:
                drop = dropped_channels(group.size, kept[group.name], group.blocks, order=order)
            else:
                with torch.no_grad():
                    scores = importance(graph.group(root))
                drop = dropped_channels(group.size, kept[group.name], group.blocks, scores=scores)
            graph.group(root, drop).prune()


def dropped_channels(size: int, count: int, blocks: int = 1, scores: torch.Tensor | None = None,
                     order: Sequence[int] | None = None) -> list[int]:
    """The channels (sorted) to remove from a ``size``-channel group to keep ``count``: those
    not among the first ``count`` of ``order`` (indices, most wanted first), else the
    weakest by ``scores`` (one per channel).  A group of ``blocks`` equal blocks
    (``ChannelGroup.blocks``) loses the same positions from every block, keeping
    ``count // blocks`` of each: the positions most blocks keep by ``order`` (then the one
    ranked first), or the strongest by ``scores`` summed over the blocks."""
    if blocks == 1:
        if order is not None:
            keep = set(order[:count])
            return [i for i in range(size) if i not in keep]
        return sorted(torch.argsort(scores, stable=True)[: size - count].tolist())
    block = size // blocks
    if order is not None:
        rank = dict.fromkeys(range(size), size) | {int(i): r for r, i in enumerate(order)}
        votes = [sum(rank[b * block + p] < count for b in range(blocks)) for p in range(block)]
        best = [min(rank[b * block + p] for b in range(blocks)) for p in range(block)]
        positions = sorted(range(block), key=lambda p: (-votes[p], best[p], p))
    else:
        strength = scores.reshape(blocks, block).sum(0)
        positions = torch.argsort(-strength, stable=True).tolist()
    kept = set(positions[: max(1, count // blocks)])
    return [b * block + p for b in range(blocks) for p in range(block) if p not in kept]


class ChannelKind(Kind):
    """Channel pruning: one knob per coupled channel group (``ChannelGroup``), its density
    the kept fraction of the group's channels (``kept_channels``: multiples of the space's
    ``channel_multiple``, and of a group's ``blocks`` where grouped convolutions read it).
    An attention layer's heads are a group too (with a ``head_dim``), kept one by one.
    Fields: every layer's ``out_channels``, an attention layer's ``heads`` and a group
    root's ``channel_order`` (indices, most wanted first).
    The shapes it gives are the space's own (``Space.group_channels``, ``Space.shapes``),
    so it changes no op itself."""

    name = "channels"
    fields = ("out_channels", "channel_order", "heads")
    metrics = ("flops", "latency", "params", "size")
    operator = ChannelPruning()

    def knobs(self, layers: list[LayerInfo], groups: list[ChannelGroup], **options) -> list[Knob]:
        return [Knob(self.name, g.name, CHANNEL_LOW) for g in groups]

    def resolve(self, space: Space, candidate, settings) -> None:
        kept = {g.name: kept_channels(g.size, candidate.get(f"{g.name}/{self.name}", 1.0),
                                      1 if g.head_dim else space.channel_multiple, g.blocks)
                for g in space.groups}
        per_channel = {g.name: g.heads_per_channel for g in space.groups}
        for layer in space.layers:
            entry = settings[layer.name]
            entry["out_channels"] = kept[layer.out_group] * layer.out_per_channel if layer.out_group \
                else layer.out_channels
            if layer.kind == "attention":
                entry["heads"] = kept[layer.name] * per_channel[layer.name]

    def validate_field(self, layer: str, field: str, value) -> None:
        if field in ("out_channels", "heads") and not is_whole(value):
            raise RecipeError(f"layer {layer!r} {field} must be a whole number >= 1, got {value!r}")
        if field == "channel_order" and not (
                isinstance(value, list) and value and len(set(map(repr, value))) == len(value)
                and all(is_whole(i, 0) for i in value)):
            raise RecipeError(
                f"layer {layer!r} channel_order must be a list of distinct channel indices, got {value!r}")

    def check(self, space: Space, layer: LayerInfo, settings, shape: tuple[int, int]) -> None:
        if layer.kind == "attention":
            weights = ("sparsity", "pattern", "bits") if layer.projections else ()
            for key, value in settings.items():
                if key not in ("heads", "out_channels", "sparsity", *weights) or (
                        key == "out_channels" and value != layer.out_channels) or (
                        key == "sparsity" and value != 0 and not weights):
                    raise RecipeError(f"attention layer {layer.name} cannot take {key}={value!r}; only its heads"
                                      + (", and its projections' sparsity and bits," if weights else "")
                                      + " are compressed")
        elif settings.get("heads") is not None:
            raise RecipeError(f"layer {layer.name} has a heads setting but is not an attention layer")
        order = settings.get("channel_order")
        if order is not None:
            if layer.out_group != layer.name:
                raise RecipeError(f"layer {layer.name} has a channel_order but does not name a channel group")
            size = next(g.size for g in space.groups if g.name == layer.name)
            if len(set(order)) != len(order) or not all(0 <= i < size for i in order) or len(order) < shape[0]:
                raise RecipeError(f"layer {layer.name} channel_order must hold at least {shape[0]} distinct "
                                  f"indices in [0, {size})")
