"""Low-rank factorisation: a layer becomes a chain of smaller ones from its own weights."""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn

from ..core.errors import RecipeError
from ..core.kinds import Kind, is_whole
from ..core.ops import Op
from ..core.patterns import (
    DECOMPOSITIONS,
    break_even_rank,
    factor_positions,
    lowrank_shapes,
    max_rank,
    rank_for,
)
from ..core.space import ChannelGroup, Knob, LayerInfo, Space
from ..evaluators.recovery import Constraint
from .base import Operator
from .conv1d import as_linear, is_conv1d, linearise

RANK_LOW = 0.1
"""The smallest density (fraction of the break-even rank) a rank knob may ask for."""


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

    def needed(self, settings, space: Space) -> bool:
        return any(s.get("rank") for s in settings.values())

    def apply(self, model: nn.Module, space: Space, settings: Mapping[str, Mapping], example_input) -> None:
        linearise(model)
        for name, s in settings.items():
            if s.get("rank"):
                layer = model.get_submodule(name)
                _replace(model, name, factorise(layer, int(s["rank"]), str(s["decomposition"])))

    def constraints(self, model: nn.Module, space: Space, settings: Mapping[str, Mapping]) -> list[Constraint]:
        """Each factorised layer's weight projected onto its rank (``low_rank_approximation``:
        the product of the factors ``factorise`` would build)."""
        return [Constraint(f"{name}.weight", model.get_submodule(name).weight,
                           _projection(int(s["rank"]), str(s["decomposition"])), (RankKind.name,))
                for name, s in settings.items() if s.get("rank")]


def _projection(rank: int, decomposition: str):
    def project(weight: torch.Tensor) -> torch.Tensor:
        return low_rank_approximation(weight, rank, decomposition)
    return project


def low_rank_approximation(weight: torch.Tensor, rank: int, decomposition: str) -> torch.Tensor:
    """The weight the factors of ``factorise`` at ``rank`` compute, in ``weight``'s shape:
    the truncated SVD of a Linear's (or 1x1 convolution's) matrix, the HOSVD truncation
    of a kernel along its output and input modes (``tucker2``), the truncated SVD of the
    kernel reshaped to (in*kh, out*kw) (``spatial``)."""
    with torch.no_grad():
        if weight.dim() == 2 or decomposition == "svd":
            first, second = _svd_factors(weight.flatten(1), rank)
            return (second @ first).view_as(weight)
        if decomposition == "tucker2":
            u_out, u_in, core = _tucker2_factors(weight, rank)
            return torch.einsum("rshw,or,is->oihw", core, u_out, u_in).to(weight.dtype)
        out_ch, in_ch, kh, kw = weight.shape
        right, left = _svd_factors(weight.permute(1, 2, 0, 3).reshape(in_ch * kh, out_ch * kw), rank)
        return (left @ right).reshape(in_ch, kh, out_ch, kw).permute(2, 0, 1, 3).contiguous()


def factorise(layer: nn.Module, rank: int, decomposition: str) -> nn.Sequential:
    """The factor chain of ``layer`` at ``rank`` (a Hugging Face ``Conv1D`` as the Linear it is)."""
    if is_conv1d(layer):
        layer = as_linear(layer)
    weight = layer.weight.detach()
    bias = layer.bias.detach() if layer.bias is not None else None
    with torch.no_grad():
        if isinstance(layer, nn.Linear):
            first, second = _svd_factors(weight, rank)
            a = nn.Linear(layer.in_features, rank, bias=False)
            b = nn.Linear(rank, layer.out_features, bias=bias is not None)
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


def _tucker2_factors(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The HOSVD of a kernel truncated along its output and input modes, in float64:
    ``u_out`` (out, r), ``u_in`` (in, r) and the core (r, r, kh, kw)."""
    w = weight.double()
    u_out = torch.linalg.svd(w.flatten(1), full_matrices=False)[0][:, :rank]
    u_in = torch.linalg.svd(w.transpose(0, 1).flatten(1), full_matrices=False)[0][:, :rank]
    return u_out, u_in, torch.einsum("oihw,or,is->rshw", w, u_out, u_in)


def _tucker2(layer: nn.Conv2d, weight: torch.Tensor, rank: int, bias: bool) -> nn.Sequential:
    out_ch, in_ch, kh, kw = weight.shape
    u_out, u_in, core = _tucker2_factors(weight, rank)
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


class RankKind(Kind):
    """Low-rank factorisation: one knob per Conv2d or Linear layer (Hugging Face ``Conv1D``
    too; not ``nn.MultiheadAttention``'s projections, which it multiplies as whole
    matrices inside its kernel, so a factor chain cannot stand in for them) some rank of which
    saves FLOPs (not grouped, not dilated), its density the fraction of the break-even
    rank to keep (``patterns.rank_for``), its option the decomposition: "svd" for Linear
    and 1x1 layers, ``build_space``'s ``conv_decomposition`` ("tucker2" or "spatial")
    for kxk convolutions.  Fields: ``rank`` and ``decomposition``; a factorised layer is
    not also masked (its ``sparsity`` is 0).  Its op becomes the ops of its factors."""

    name = "rank"
    fields = ("rank", "decomposition")
    metrics = ()
    operator = LowRank()

    def knobs(self, layers: list[LayerInfo], groups: list[ChannelGroup], conv_decomposition: str = "tucker2",
              **options) -> list[Knob]:
        knobs = []
        for layer in layers:
            decomposition = "" if layer.kind == "attention" else _decomposition(layer, conv_decomposition)
            if decomposition:
                knobs.append(Knob(self.name, layer.name, RANK_LOW, option=decomposition))
        return knobs

    def resolve(self, space: Space, candidate, settings) -> None:
        knobs = [k for k in space.knobs if k.kind == self.name]
        if not knobs:
            return
        kept = space.group_channels(settings)
        layers = {layer.name: layer for layer in space.layers}
        for knob in knobs:
            layer = layers[knob.target]
            out, inp = space.pruned_shape(layer, kept)
            kh, kw = layer.kernel
            even = break_even_rank(knob.option, out, inp, kh, kw, layer.rows)
            r = rank_for(candidate.get(knob.name, 1.0), even)
            if r:  # a factorised layer is not also masked
                entry = settings[layer.name]
                entry.update(sparsity=0.0, rank=r, decomposition=knob.option)
                entry.pop("pattern", None)

    def validate_field(self, layer: str, field: str, value) -> None:
        if field == "rank" and not is_whole(value):
            raise RecipeError(f"layer {layer!r} rank must be a whole number >= 1, got {value!r}")
        if field == "decomposition" and value not in DECOMPOSITIONS:
            raise RecipeError(
                f"layer {layer!r} decomposition must be one of {', '.join(DECOMPOSITIONS)}, got {value!r}")

    def validate_layer(self, layer: str, settings) -> None:
        if ("rank" in settings) != ("decomposition" in settings):
            raise RecipeError(f"layer {layer!r} needs both rank and decomposition, or neither")
        if "rank" in settings and settings.get("sparsity", 0):
            raise RecipeError(f"layer {layer!r} has both a rank and a sparsity; a factorised layer is not masked")

    def check(self, space: Space, layer: LayerInfo, settings, shape: tuple[int, int]) -> None:
        rank, decomposition = settings.get("rank"), settings.get("decomposition")
        if not rank:
            return
        allowed = "svd" if layer.kernel == (1, 1) else "tucker2 or spatial"
        if layer.groups != 1 or decomposition not in allowed.split(" or "):
            raise RecipeError(
                f"layer {layer.name} cannot take decomposition {decomposition!r}"
                + ("" if layer.groups != 1 else f"; use {allowed}")
            )
        limit = max_rank(decomposition, *shape, *layer.kernel)
        if rank > limit:
            raise RecipeError(f"layer {layer.name} asks for rank {rank}; at its size it allows at most {limit}")

    def ops(self, layer: LayerInfo, settings, ops: list[Op]) -> list[Op]:
        if layer.kind == "attention" or not settings.get("rank"):
            return ops
        decomposition, (kh, kw) = str(settings["decomposition"]), layer.kernel
        out, inp = ops[0].n * ops[0].groups, ops[0].in_channels
        factors = lowrank_shapes(decomposition, out, inp, kh, kw, int(settings["rank"]))
        positions = factor_positions(decomposition, layer.rows)
        inputs = [layer.rows[0]] + positions[:-1]
        geometry = factor_geometry(layer.kind, decomposition, (kh, kw), layer.geometry)
        return [Op(f"{layer.name}.{i}", "factor", p, o, c * kernel, 1, src, c, kernel=kern, geometry=geo)
                for i, ((o, c, kernel), p, src, (kern, geo)) in enumerate(zip(factors, positions, inputs, geometry))]


def _decomposition(layer: LayerInfo, conv_decomposition: str) -> str:
    """How a rank knob factorises this layer, or '' if no rank saves FLOPs."""
    dilation = tuple(layer.geometry[6:8]) if layer.geometry else (1, 1)
    if layer.groups != 1 or dilation != (1, 1):
        return ""
    decomposition = "svd" if layer.kernel == (1, 1) else conv_decomposition
    kh, kw = layer.kernel
    even = break_even_rank(decomposition, layer.out_channels, layer.in_channels, kh, kw, layer.rows)
    return decomposition if even > 1 else ""


def _out_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def factor_geometry(kind: str, decomposition: str, kernel: tuple[int, int], geometry: tuple[int, ...]):
    """``(kernel, geometry)`` of each factor, as ``factorise`` builds them."""
    if kind == "linear" or not geometry:
        return [((1, 1), ())] * 3
    h, w, sh, sw, ph, pw, dh, dw = geometry
    kh, kw = kernel
    ho, wo = _out_size(h, kh, sh, ph, dh), _out_size(w, kw, sw, pw, dw)
    if decomposition == "svd":  # 1x1 convolutions: the first keeps the stride
        return [((1, 1), geometry), ((1, 1), (ho, wo, 1, 1, 0, 0, 1, 1))]
    if decomposition == "tucker2":
        return [((1, 1), (h, w, 1, 1, 0, 0, 1, 1)), (kernel, (h, w, sh, sw, ph, pw, 1, 1)),
                ((1, 1), (ho, wo, 1, 1, 0, 0, 1, 1))]
    return [((kh, 1), (h, w, sh, 1, ph, 0, 1, 1)), ((1, kw), (ho, w, 1, sw, 0, pw, 1, 1))]
