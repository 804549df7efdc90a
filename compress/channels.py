"""Structured channel pruning: removes whole channels, with everything coupled to them."""
from __future__ import annotations

import warnings

from typing import Mapping

import torch
import torch.nn as nn
import torch_pruning as tp

from ..space import Space
from .base import Operator


class ChannelPruning(Operator):
    """Keep the ``out_channels`` strongest channels of each coupled group (L2 magnitude
    summed over the group, or the first ones of the root layer's ``channel_order``
    where the settings give one), physically removing the rest from every layer in the group:
    convolutions, BatchNorm entries and the consumers' input channels.  Uses
    Torch-Pruning's dependency graph, so residual adds and concatenations stay consistent.
    """

    setting_key = "out_channels"
    neutral = -1.0  # compared per group below, not per layer

    def needed(self, settings, space: Space) -> bool:
        kept = space.group_channels(settings)
        return any(kept[g.name] < g.size for g in space.groups if not g.head_dim)

    def apply(self, model: nn.Module, space: Space, settings: Mapping[str, Mapping[str, float]],
              example_input: torch.Tensor) -> None:
        kept = space.group_channels(settings)
        todo = [g for g in space.groups if kept[g.name] < g.size and not g.head_dim]  # heads: HeadPruning
        if not todo:
            return
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="Unwrapped parameters")
            graph = tp.DependencyGraph().build_dependency(model, example_inputs=example_input)
        importance = tp.importance.MagnitudeImportance(p=2)
        for group in todo:
            root = model.get_submodule(group.name)
            prune_out = tp.prune_conv_out_channels if isinstance(root, nn.Conv2d) else tp.prune_linear_out_channels
            order = settings.get(group.name, {}).get("channel_order")
            if order is not None:
                keep = set(order[: kept[group.name]])
                drop = [i for i in range(group.size) if i not in keep]
            else:
                full = graph.get_pruning_group(root, prune_out, idxs=list(range(group.size)))
                with torch.no_grad():
                    scores = importance(full)
                drop = torch.argsort(scores, stable=True)[: group.size - kept[group.name]].tolist()
            graph.get_pruning_group(root, prune_out, idxs=sorted(drop)).prune()
