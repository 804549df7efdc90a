"""Channel masks: a fast stand-in for channel pruning while many selections are compared.

Forward hooks zero a group's dropped channels at the output of every layer Torch-Pruning
prunes on its output side (convolutions, linear layers, BatchNorm and other
normalisation layers), so every later layer sees exact zeros where the removed channels
were: what ``ChannelPruning`` gives before BatchNorm recalibration, without copying or
reshaping the model.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn as nn
import torch_pruning as tp

from ..core.space import Space
from .channel_graph import channel_graph
from .channels import dropped_channels

_LAST_DIM = (nn.Linear, nn.LayerNorm)


def _width(module: nn.Module) -> int | None:
    """Channels at the output of ``module`` (None for layers without a known width)."""
    for attr in ("out_channels", "out_features", "num_features", "num_channels"):
        if isinstance(getattr(module, attr, None), int):
            return getattr(module, attr)
    if isinstance(module, nn.LayerNorm):
        return int(module.normalized_shape[-1])
    return None


class ChannelMasks:
    """Channel selections of a model's channel groups, applied as output masks.

    Use as a context manager (hooks are attached on entry and removed on exit);
    ``set(group, keep)`` keeps the channels of ``group`` (a group name of ``space``)
    where the boolean sequence ``keep`` is true (in a group of grouped-convolution blocks,
    ``ChannelGroup.blocks``, the same positions in every block: those ``ChannelPruning``
    keeps for the order ``keep`` and the magnitudes give); ``clear(group)`` keeps them all again.
    ``magnitude[group]`` holds the L2 score ``ChannelPruning`` ranks the group's channels
    by.  Attention head groups are not masked.  The model is not changed otherwise.
    """

    def __init__(self, model: nn.Module, space: Space, example_input: torch.Tensor):
        self.model = model
        self.sizes = {g.name: g.size for g in space.groups if not g.head_dim}
        self.blocks = {g.name: g.blocks for g in space.groups if not g.head_dim}
        graph = channel_graph(model, example_input) if self.sizes else None
        importance = tp.importance.MagnitudeImportance(p=2)
        self.magnitude: dict[str, np.ndarray] = {}
        self._targets: dict[str, list[tuple[nn.Module, torch.Tensor, torch.Tensor]]] = {}
        self._keep: dict[str, torch.Tensor] = {}
        self._masks: dict[nn.Module, torch.Tensor] = {}
        self._handles: list = []
        for name in self.sizes:
            full = graph.group(model.get_submodule(name))
            with torch.no_grad():
                self.magnitude[name] = importance(full).double().numpy()
            targets = []
            for item in full:
                module = item.dep.target.module
                if "out_channels" not in getattr(item.dep.handler, "__name__", str(item.dep.handler)) \
                        or not isinstance(module, nn.Module) or _width(module) is None:
                    continue
                targets.append((module, torch.as_tensor(item.idxs, dtype=torch.long),
                                torch.as_tensor(item.root_idxs, dtype=torch.long)))
            self._targets[name] = targets

    def targets(self, group: str) -> list[tuple[nn.Module, torch.Tensor, torch.Tensor]]:
        """The modules whose output channels ``group`` prunes, each with the channel indices
        it masks and the group's (root) indices they follow."""
        return self._targets[group]

    def __enter__(self) -> ChannelMasks:
        modules = {module for targets in self._targets.values() for module, _, _ in targets}
        self._handles = [m.register_forward_hook(self._hook) for m in self.model.modules() if m in modules]
        return self

    def __exit__(self, *exc) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def set(self, group: str, keep: Sequence[bool] | np.ndarray) -> None:
        """Keep the channels of ``group`` where ``keep`` is true (one entry per channel).

        Raises ValueError if ``keep`` does not have the group's size or keeps nothing."""
        keep = torch.as_tensor(np.asarray(keep, dtype=bool))
        if keep.shape != (self.sizes[group],) or not keep.any():
            raise ValueError(f"a selection of group {group} needs {self.sizes[group]} entries, at least one true")
        if self.blocks[group] > 1:  # as ChannelPruning keeps it from the order this selection gives
            size, count, strength = self.sizes[group], int(keep.sum()), self.magnitude[group]
            order = sorted(range(size), key=lambda i: (not keep[i], -strength[i], i))
            keep = torch.ones(size, dtype=torch.bool)
            keep[dropped_channels(size, count, self.blocks[group], order=order)] = False
        self._keep[group] = keep
        self._rebuild(group)

    def clear(self, group: str) -> None:
        self._keep.pop(group, None)
        self._rebuild(group)

    def reset(self) -> None:
        """Keep every channel of every group again."""
        self._keep.clear()
        self._masks.clear()

    def apply(self, module: nn.Module, output: torch.Tensor) -> torch.Tensor:
        """``output`` of ``module`` with the currently dropped channels zeroed."""
        mask = self._masks.get(module)
        if mask is None:
            return output
        shape = [1] * output.dim()
        shape[-1 if isinstance(module, _LAST_DIM) or output.dim() == 1 else 1] = -1
        return output * mask.view(shape).to(output.dtype)

    def _hook(self, module: nn.Module, inputs, output):
        return self.apply(module, output) if isinstance(output, torch.Tensor) else None

    def _rebuild(self, group: str) -> None:
        """Recompute the masks of the modules ``group`` touches from every group's selection."""
        for module, _, _ in self._targets[group]:
            mask, masked = torch.ones(_width(module)), False
            for name, keep in self._keep.items():
                for other, idxs, roots in self._targets[name]:
                    if other is module:
                        mask[idxs[~keep[roots]]] = 0.0
                        masked = True
            if masked:
                self._masks[module] = mask
            else:
                self._masks.pop(module, None)
