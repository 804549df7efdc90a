"""Low-rank factorisation: a layer becomes a chain of smaller ones from its own weights."""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn

from ..space import Space
from .base import Operator


class LowRank(Operator):
    """Replace each layer that has a ``rank`` by its factorisation (``decomposition``):

    - ``svd``: Linear -> Linear(in, r) + Linear(r, out); a 1x1 Conv2d likewise as two
      1x1 convolutions (truncated SVD, singular values split evenly between the factors);
    - ``tucker2``: kxk Conv2d -> 1x1 (in -> r), kxk core (r -> r), 1x1 (r -> out), from
      the HOSVD of the kernel along its output and input modes;
    - ``spatial``: kxk Conv2d -> kx1 (in -> r) then 1xk (r -> out), from the SVD of the
      kernel reshaped to (in*kh, out*kw).
    The layer's bias moves to the last factor.  Runs after channel pruning, on the
    pruned weights; the replacement is an ``nn.Sequential`` at the layer's name.
    """

    setting_key = "rank"
    neutral = 0

    def needed(self, settings, space: Space) -> bool:
        return any(s.get("rank") for s in settings.values())

    def apply(self, model: nn.Module, space: Space, settings: Mapping[str, Mapping], example_input) -> None:
        for name, s in settings.items():
            if s.get("rank"):
                layer = model.get_submodule(name)
                _replace(model, name, factorise(layer, int(s["rank"]), str(s["decomposition"])))


def factorise(layer: nn.Module, rank: int, decomposition: str) -> nn.Sequential:
    """The factor chain of ``layer`` at ``rank``."""
    weight = layer.weight.detach()
    bias = layer.bias.detach() if layer.bias is not None else None
    with torch.no_grad():
        if isinstance(layer, nn.Linear):
            first, second = _svd_factors(weight, rank)
            a, b = nn.Linear(layer.in_features, rank, bias=False), nn.Linear(rank, layer.out_features, bias=bias is not None)
            a.weight.copy_(first)
            b.weight.copy_(second)
            chain = nn.Sequential(a, b)
        elif decomposition == "svd":
            first, second = _svd_factors(weight.flatten(1), rank)
            a = nn.Conv2d(layer.in_channels, rank, 1, layer.stride, layer.padding, bias=False)
            b = nn.Conv2d(rank, layer.out_channels, 1, bias=bias is not None)
            a.weight.copy_(first[:, :, None, None])
            b.weight.copy_(second[:, :, None, None])
            chain = nn.Sequential(a, b)
        elif decomposition == "tucker2":
            chain = _tucker2(layer, weight, rank, bias is not None)
        elif decomposition == "spatial":
            chain = _spatial(layer, weight, rank, bias is not None)
        else:
            raise ValueError(f"unknown decomposition {decomposition!r}")
        if bias is not None:
            chain[-1].bias.copy_(bias)
    return chain


def _svd_factors(matrix: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    u, s, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
    root = s[:rank].sqrt()
    return (root[:, None] * vh[:rank]).to(matrix.dtype), (u[:, :rank] * root).to(matrix.dtype)


def _tucker2(layer: nn.Conv2d, weight: torch.Tensor, rank: int, bias: bool) -> nn.Sequential:
    out_ch, in_ch, kh, kw = weight.shape
    w = weight.double()
    u_out = torch.linalg.svd(w.flatten(1), full_matrices=False)[0][:, :rank]               # (out, r)
    u_in = torch.linalg.svd(w.transpose(0, 1).flatten(1), full_matrices=False)[0][:, :rank]  # (in, r)
    core = torch.einsum("oihw,or,is->rshw", w, u_out, u_in)                                  # (r, r, kh, kw)
    first = nn.Conv2d(in_ch, rank, 1, bias=False)
    middle = nn.Conv2d(rank, rank, (kh, kw), layer.stride, layer.padding, bias=False)
    last = nn.Conv2d(rank, out_ch, 1, bias=bias)
    first.weight.copy_(u_in.T[:, :, None, None].to(weight.dtype))
    middle.weight.copy_(core.to(weight.dtype))
    last.weight.copy_(u_out[:, :, None, None].to(weight.dtype))
    return nn.Sequential(first, middle, last)


def _spatial(layer: nn.Conv2d, weight: torch.Tensor, rank: int, bias: bool) -> nn.Sequential:
    out_ch, in_ch, kh, kw = weight.shape
    matrix = weight.permute(1, 2, 0, 3).reshape(in_ch * kh, out_ch * kw)
    right, left = _svd_factors(matrix, rank)  # (r, out*kw) and (in*kh, r)
    (sh, sw), (ph, pw) = layer.stride, layer.padding
    first = nn.Conv2d(in_ch, rank, (kh, 1), (sh, 1), (ph, 0), bias=False)
    second = nn.Conv2d(rank, out_ch, (1, kw), (1, sw), (0, pw), bias=bias)
    first.weight.copy_(left.reshape(in_ch, kh, rank).permute(2, 0, 1).unsqueeze(-1))
    second.weight.copy_(right.reshape(rank, out_ch, kw).permute(1, 0, 2).unsqueeze(2))
    return nn.Sequential(first, second)


def _replace(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)
