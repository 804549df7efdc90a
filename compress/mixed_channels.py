"""A relaxed channel-and-rank model for differentiable search (HALOC with channels): a
``RankSupernet`` whose channel groups also keep a softmax-weighted mix of candidate
channel counts, and the trained weights of the layers it chose (``trained_state``).

A group's channels are ranked by the L2 magnitude ``ChannelPruning`` ranks them by; a
candidate count keeps the first ones of that order (as ``dropped_channels`` keeps them for
grouped convolutions), so pruning the group to a chosen count with that ``order`` removes
exactly the channels the mask zeroed.  The masks multiply the outputs of every layer
Torch-Pruning prunes on its output side (``ChannelMasks``' targets), found by name so
that a layer the rank search replaced is masked too.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn as nn

from ..core.space import Space
from .channel_masks import _LAST_DIM, ChannelMasks, _width
from .channels import dropped_channels
from .conv1d import is_conv1d
from .mixed_rank import RankSupernet, mixing_weights


class MixedChannels(nn.Module):
    """``sum_k softmax((alpha + g) / tau)_k * keep_k``: the soft keep mask of one channel
    group over its candidate selections ``keeps`` (rows of 0/1, one entry per channel; the
    last row keeps every channel).  ``g`` is Gumbel noise from ``generator`` with ``gumbel``
    while training."""

    def __init__(self, keeps: torch.Tensor, tau: float = 1.0, gumbel: bool = False,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.register_buffer("keeps", keeps.float())
        self.alpha = nn.Parameter(torch.zeros(keeps.shape[0]))
        self.tau, self.gumbel, self.generator = tau, gumbel, generator

    def probabilities(self, noise: bool = False) -> torch.Tensor:
        """Mixing weights over the candidate selections; with ``noise`` (and ``gumbel``) sampled."""
        return mixing_weights(self.alpha, self.tau, noise and self.gumbel, self.generator)

    def mask(self) -> torch.Tensor:
        """The soft keep weight of every channel (1: kept by every likely candidate)."""
        return self.probabilities(noise=self.training) @ self.keeps


def channel_order(model: nn.Module, space: Space, example_input: torch.Tensor) -> dict[str, list[int]]:
    """Every prunable group's channels (not attention heads), strongest first by the L2
    magnitude ``ChannelPruning`` ranks them by (ties: the lower index first)."""
    magnitude = ChannelMasks(model, space, example_input).magnitude
    return {g: np.argsort(-m, kind="stable").tolist() for g, m in magnitude.items()}


def keep_rows(size: int, counts: Sequence[int], blocks: int, order: Sequence[int]) -> torch.Tensor:
    """0/1 rows, one per count in ``counts`` then one keeping all ``size`` channels: the
    channels ``ChannelPruning`` keeps at that count for ``order`` (most wanted first)."""
    rows = torch.ones(len(counts) + 1, size)
    for row, count in zip(rows, counts):
        row[dropped_channels(size, int(count), blocks, order=list(order))] = 0.0
    return rows


class ChannelRankSupernet(nn.Module):
    """``RankSupernet(model, ranks)`` whose channel groups in ``channels`` (``{group name:
    keep rows}``, see ``keep_rows``) are masked by ``MixedChannels`` at the output of every
    layer that prunes them on its output side.  ``space`` and ``example_input`` trace the
    groups on ``model``.  Everything outside the factor chains and the mixing weights is
    frozen; BatchNorm keeps the pretrained statistics."""

    def __init__(self, model: nn.Module, space: Space, example_input: torch.Tensor,
                 ranks: Mapping[str, tuple[str, Sequence[int]]], channels: Mapping[str, torch.Tensor],
                 tau: float = 1.0, gumbel: bool = False, generator: torch.Generator | None = None):
        super().__init__()
        self.ranks = RankSupernet(model, ranks, tau, gumbel, generator)
        self.mixed_channels: dict[str, MixedChannels] = {}
        self._channels = nn.ModuleList()
        for group, rows in channels.items():
            self.mixed_channels[group] = MixedChannels(rows, tau, gumbel, generator)
            self._channels.append(self.mixed_channels[group])
        self._targets: dict[str, list[tuple[str, torch.Tensor, torch.Tensor]]] = {}
        self._shapes: dict[str, tuple[int, bool]] = {}  # module name: (width, channels last)
        if channels:
            self._find_targets(model, space, example_input, set(channels))
        self._masks: dict[str, torch.Tensor] = {}
        modules = dict(self.ranks.model.named_modules())
        self._handles = [modules[name].register_forward_hook(self._hook_for(name)) for name in self._shapes]

    def _find_targets(self, model: nn.Module, space: Space, example_input: torch.Tensor, groups: set[str]) -> None:
        masks = ChannelMasks(model, space, example_input)
        names = {module: name for name, module in model.named_modules()}
        for group in groups:
            self._targets[group] = []
            for module, idxs, roots in masks.targets(group):
                name = names.get(module)
                if name is None:  # a Hugging Face Conv1D's Linear view: named like the layer it stands for
                    name = next(n for n, m in model.named_modules() if is_conv1d(m) and m.weight.data_ptr()
                                == module.weight.data_ptr())
                self._targets[group].append((name, idxs, roots))
                self._shapes[name] = (int(_width(module)), isinstance(module, _LAST_DIM))

    def _hook_for(self, name: str):
        def hook(module, inputs, output):
            mask = self._masks.get(name)
            if mask is None or not isinstance(output, torch.Tensor):
                return None
            shape = [1] * output.dim()
            shape[-1 if self._shapes[name][1] or output.dim() == 1 else 1] = -1
            return output * mask.view(shape).to(output.dtype)
        return hook

    def train(self, mode: bool = True) -> ChannelRankSupernet:
        self.training = mode
        self.ranks.train(mode)
        for mixed in self.mixed_channels.values():
            mixed.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        masks: dict[str, torch.Tensor] = {}
        for group, mixed in self.mixed_channels.items():
            keep = mixed.mask()
            for name, idxs, roots in self._targets[group]:
                current = masks.get(name, torch.ones(self._shapes[name][0], dtype=keep.dtype))
                masks[name] = current.index_copy(0, idxs, current[idxs] * keep[roots])
        self._masks = masks
        return self.ranks(x)

    def set_tau(self, tau: float) -> None:
        """Every mix's softmax temperature (lower: closer to its argmax)."""
        self.ranks.set_tau(tau)
        for mixed in self.mixed_channels.values():
            mixed.tau = tau

    def arch_parameters(self) -> list[nn.Parameter]:
        return self.ranks.arch_parameters() + [m.alpha for m in self.mixed_channels.values()]

    def weight_parameters(self) -> list[nn.Parameter]:
        return self.ranks.weight_parameters()

    def rank_probabilities(self) -> dict[str, torch.Tensor]:
        """Noise-free mixing weights per rank-searched layer (ranks, then the original)."""
        return self.ranks.probabilities()

    def channel_probabilities(self) -> dict[str, torch.Tensor]:
        """Noise-free mixing weights per channel group (candidate counts, then all channels)."""
        return {group: mixed.probabilities() for group, mixed in self.mixed_channels.items()}

    def pull(self) -> torch.Tensor:
        return self.ranks.pull()

    def trained_state(self, chosen: Mapping[str, int]) -> dict[str, torch.Tensor]:
        """The weights of the original model's layers ``chosen`` (``{layer name: candidate
        index}``) as their trained factor chains compute them: each layer's weight is the
        product of its chain's factors (in the layer's own layout) and its bias the chain's;
        a detached CPU copy, keyed as the original model's state dict."""
        state = {}
        with torch.no_grad():
            for name, index in chosen.items():
                mixed = self.ranks.mixed[name]
                chain = mixed.chains[index]
                weight = chain_weight(chain, mixed.decomposition)
                if is_conv1d(mixed.original):
                    weight = weight.t()
                state[f"{name}.weight"] = weight.detach().cpu().clone()
                if chain[-1].bias is not None:
                    state[f"{name}.bias"] = chain[-1].bias.detach().cpu().clone()
        return state


def chain_weight(chain: nn.Sequential, decomposition: str) -> torch.Tensor:
    """The dense weight a factor chain (as ``factorise`` builds it) computes, shaped like the
    layer it replaced ((out, in) for Linear, (out, in, kh, kw) for Conv2d)."""
    first = chain[0].weight
    if isinstance(chain[0], nn.Linear):
        return chain[1].weight @ first
    if decomposition == "svd":
        return (chain[1].weight[:, :, 0, 0] @ first[:, :, 0, 0])[:, :, None, None]
    if decomposition == "tucker2":
        return torch.einsum("or,rshw,si->oihw", chain[2].weight[:, :, 0, 0], chain[1].weight, first[:, :, 0, 0])
    if decomposition == "spatial":
        return torch.einsum("orw,rih->oihw", chain[1].weight[:, :, 0, :], first[:, :, :, 0])
    raise ValueError(f"unknown decomposition {decomposition!r}")
