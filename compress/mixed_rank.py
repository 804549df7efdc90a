"""A relaxed low-rank model for differentiable rank search (HALOC): every searched layer
computes its original output and its factorisations at a few candidate ranks, mixed by
a softmax over architecture weights."""
from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .lowrank import _replace, factorise


def mixing_weights(alpha: torch.Tensor, tau: float, gumbel: bool = False,
                   generator: torch.Generator | None = None) -> torch.Tensor:
    """``softmax((alpha + g) / tau)``: a relaxed choice's mixing weights, ``g`` Gumbel noise
    drawn from ``generator`` when ``gumbel``, else 0."""
    logits = alpha
    if gumbel:
        uniform = torch.rand(logits.shape, generator=generator).clamp_(1e-9, 1 - 1e-9)
        logits = logits - torch.log(-torch.log(uniform))
    return F.softmax(logits / tau, dim=0)

class MixedRank(nn.Module):
    """``sum_k softmax((alpha + g) / tau)_k * out_k`` over the factor chains of ``layer`` at
    ``ranks`` (from its own weights, see ``factorise``) and, last, the layer itself
    ("full").  ``g`` is Gumbel noise drawn from ``generator`` when ``gumbel`` is set,
    else 0.  The original layer is frozen: its output is also the reference the chains
    are pulled toward; ``pull`` holds the last forward's squared distance of the mix to
    it, relative to the reference's mean square (a scalar tensor, differentiable).
    """

    def __init__(self, layer: nn.Module, ranks: Sequence[int], decomposition: str, tau: float = 1.0,
                 gumbel: bool = False, generator: torch.Generator | None = None):
        super().__init__()
        if not ranks:
            raise ValueError("a mixed-rank layer needs at least one candidate rank")
        self.ranks = [int(r) for r in ranks]
        self.decomposition = decomposition
        self.chains = nn.ModuleList(factorise(layer, r, decomposition) for r in self.ranks)
        self.original = copy.deepcopy(layer).requires_grad_(False)
        self.alpha = nn.Parameter(torch.zeros(len(self.ranks) + 1))
        self.tau, self.gumbel, self.generator = tau, gumbel, generator
        self.pull = torch.zeros(())

    def probabilities(self, noise: bool = False) -> torch.Tensor:
        """Mixing weights over ``ranks + [full]``; with ``noise`` (and ``gumbel``) sampled."""
        return mixing_weights(self.alpha, self.tau, noise and self.gumbel, self.generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.probabilities(noise=self.training)
        reference = self.original(x)
        mix = weights[-1] * reference
        for weight, chain in zip(weights[:-1], self.chains):
            mix = mix + weight * chain(x)
        self.pull = (mix - reference).pow(2).mean() / reference.pow(2).mean().clamp_min(1e-12)
        return mix

    def choice(self) -> int:
        """The argmax rank (0: keep the original layer)."""
        best = int(torch.argmax(self.alpha))
        return self.ranks[best] if best < len(self.ranks) else 0


class RankSupernet(nn.Module):
    """A copy of ``model`` whose layers in ``candidates`` (``{layer name: (decomposition,
    ranks)}``) are MixedRank layers; everything outside the factor chains is frozen and
    BatchNorm keeps the pretrained statistics (``train()`` only turns on Gumbel noise).
    ``generator`` drives the Gumbel noise.
    """

    def __init__(self, model: nn.Module, candidates: Mapping[str, tuple[str, Sequence[int]]], tau: float = 1.0,
                 gumbel: bool = False, generator: torch.Generator | None = None):
        super().__init__()
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.mixed: dict[str, MixedRank] = {}
        for name, (decomposition, ranks) in candidates.items():
            layer = MixedRank(self.model.get_submodule(name), ranks, decomposition, tau, gumbel, generator)
            _replace(self.model, name, layer)
            self.mixed[name] = layer

    def train(self, mode: bool = True) -> RankSupernet:
        self.training = mode
        self.model.eval()
        for layer in self.mixed.values():
            layer.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def set_tau(self, tau: float) -> None:
        """Set every layer's softmax temperature (lower: closer to its argmax)."""
        for layer in self.mixed.values():
            layer.tau = tau

    def arch_parameters(self) -> list[nn.Parameter]:
        return [layer.alpha for layer in self.mixed.values()]

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for layer in self.mixed.values() for p in layer.chains.parameters()]

    def probabilities(self) -> dict[str, torch.Tensor]:
        """Noise-free mixing weights per layer (differentiable in the architecture weights)."""
        return {name: layer.probabilities() for name, layer in self.mixed.items()}

    def pull(self) -> torch.Tensor:
        """The mean over layers of the last forward's relative distance to the originals."""
        return torch.stack([layer.pull for layer in self.mixed.values()]).mean()

    def choices(self) -> dict[str, int]:
        """The argmax rank per layer (0: keep the original)."""
        return {name: layer.choice() for name, layer in self.mixed.items()}
