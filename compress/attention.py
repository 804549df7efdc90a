"""Head pruning: an attention layer keeps its strongest heads and its model width."""
from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.errors import RecipeError
from ..core.space import Space
from .base import Operator
from .conv1d import linearise
from .hf_attention import Projections, projections, prune_heads, unit_scores


class HeadPrunedAttention(nn.Module):
    """``nn.MultiheadAttention`` with fewer heads than its width allows.

    ``nn.MultiheadAttention`` requires ``embed_dim == num_heads * head_dim``, so it cannot
    drop a head without shrinking the model's width.  This module keeps the width
    (``embed_dim``, the input and output features) and ``head_dim``, and runs
    ``num_heads`` heads: ``in_proj_weight`` is (3 * num_heads * head_dim, embed_dim) and
    ``out_proj`` maps num_heads * head_dim features back to embed_dim.  Parameter names
    and ``forward``'s arguments and results are ``nn.MultiheadAttention``'s (masks: bool
    True = not allowed, or float added; a per-head 3-D ``attn_mask`` is given for the
    ``original_heads`` the layer had, of which ``kept_heads`` remain).
    """

    def __init__(self, embed_dim: int, head_dim: int, kept_heads: tuple[int, ...], original_heads: int,
                 bias: bool = True, dropout: float = 0.0, batch_first: bool = False):
        super().__init__()
        self.embed_dim, self.head_dim, self.num_heads = embed_dim, head_dim, len(kept_heads)
        self.kept_heads, self.original_heads = tuple(kept_heads), original_heads
        self.dropout, self.batch_first = dropout, batch_first
        width = self.num_heads * head_dim
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * width)) if bias else None
        self.out_proj = nn.Linear(width, embed_dim, bias=bias)

    @classmethod
    def from_multihead(cls, attention: nn.MultiheadAttention, kept_heads: list[int]) -> HeadPrunedAttention:
        """``attention`` with only ``kept_heads`` (indices into its heads), weights copied."""
        d, embed = attention.head_dim, attention.embed_dim
        kept = sorted(kept_heads)
        rows = torch.tensor([part * embed + h * d + i for part in range(3) for h in kept for i in range(d)])
        cols = rows[: len(kept) * d]
        pruned = cls(embed, d, tuple(kept), attention.num_heads, attention.in_proj_bias is not None,
                     attention.dropout, attention.batch_first)
        with torch.no_grad():
            pruned.in_proj_weight.copy_(attention.in_proj_weight[rows])
            if attention.in_proj_bias is not None:
                pruned.in_proj_bias.copy_(attention.in_proj_bias[rows])
            pruned.out_proj.weight.copy_(attention.out_proj.weight[:, cols])
            if attention.out_proj.bias is not None:
                pruned.out_proj.bias.copy_(attention.out_proj.bias)
        return pruned.to(attention.in_proj_weight.device).train(attention.training)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        width = self.num_heads * self.head_dim
        w_q, w_k, w_v = self.in_proj_weight.split(width)
        b_q, b_k, b_v = self.in_proj_bias.split(width) if self.in_proj_bias is not None else (None, None, None)
        if query is key and key is value:  # self-attention: one packed product, as nn.MultiheadAttention runs it
            q, k, v = F.linear(query, self.in_proj_weight, self.in_proj_bias).split(width, dim=-1)
        else:
            q, k, v = F.linear(query, w_q, b_q), F.linear(key, w_k, b_k), F.linear(value, w_v, b_v)
        q, k, v = (self._split_heads(t) for t in (q, k, v))  # (batch..., heads, positions, head_dim)
        mask = self._mask(attn_mask, key_padding_mask, q.dtype)
        dropout = self.dropout if self.training else 0.0
        if need_weights:
            scores = q @ k.transpose(-2, -1) * self.head_dim ** -0.5
            if mask is not None:
                scores = scores + mask
            elif is_causal:
                scores = scores.masked_fill(torch.ones_like(scores, dtype=torch.bool).triu(1), float("-inf"))
            weights = F.dropout(scores.softmax(dim=-1), dropout, self.training)
            out = weights @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, mask, dropout, is_causal and mask is None)
            weights = None
        out = self.out_proj(self._merge_heads(out))
        if weights is not None and average_attn_weights:
            weights = weights.mean(dim=-3)
        return out, weights

    def _split_heads(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unflatten(-1, (self.num_heads, self.head_dim))
        return x.transpose(-3, -2) if self.batch_first else x.movedim(0, -2)

    def _merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        return (x.transpose(-3, -2) if self.batch_first else x.movedim(-2, 0)).flatten(-2)

    def _mask(self, attn_mask, key_padding_mask, dtype) -> torch.Tensor | None:
        """One additive mask broadcasting to (batch..., heads, queries, keys), or None."""
        mask = None
        if attn_mask is not None:
            mask = _additive(attn_mask, dtype)
            if mask.dim() == 3:  # (batch * original heads, queries, keys): keep the kept heads' rows
                mask = mask.unflatten(0, (-1, self.original_heads))[:, list(self.kept_heads)]
        if key_padding_mask is not None:
            padding = _additive(key_padding_mask, dtype).unsqueeze(-2).unsqueeze(-3)  # (batch, 1, 1, keys)
            mask = padding if mask is None else mask + padding
        return mask


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


def head_scores(attention: nn.MultiheadAttention) -> torch.Tensor:
    """L2 norm of each head's weights: its rows of q, k and v and its columns of out_proj."""
    d, heads = attention.head_dim, attention.num_heads
    with torch.no_grad():
        rows = attention.in_proj_weight.view(3, heads, d, -1).pow(2).sum(dim=(0, 2, 3))
        cols = attention.out_proj.weight.view(-1, heads, d).pow(2).sum(dim=(0, 2))
        return (rows + cols).sqrt()


class HeadPruning(Operator):
    """Keep the ``heads`` strongest heads (``head_scores``) of each attention layer whose
    settings ask for fewer than it has.  An ``nn.MultiheadAttention`` is replaced by a
    ``HeadPrunedAttention`` of the same width; a Hugging Face attention module
    (``hf_attention.projections``) keeps its class, its projections lose the dropped heads'
    rows and its output projection their columns (whole key/value groups in a grouped-query
    attention).  Layers keeping all heads are untouched.  ``ChannelPruning`` runs it for the
    channel kind's groups of heads."""

    def needed(self, settings, space: Space) -> bool:
        kept = space.group_channels(settings)
        return any(g.head_dim and kept[g.name] < g.size for g in space.groups)

    def apply(self, model: nn.Module, space: Space, settings: Mapping[str, Mapping], example_input) -> None:
        kept = space.group_channels(settings)
        for group in space.groups:
            if not (group.head_dim and kept[group.name] < group.size):
                continue
            attention = model.get_submodule(group.name)
            if isinstance(attention, nn.MultiheadAttention):
                order = torch.argsort(head_scores(attention), descending=True, stable=True)
                pruned = HeadPrunedAttention.from_multihead(attention, order[: kept[group.name]].tolist())
                model.set_submodule(group.name, pruned)
                continue
            linearise(model)
            found = projections(attention)
            if not isinstance(found, Projections):
                raise RecipeError(f"layer {group.name} is no longer an attention module whose heads can be pruned")
            output = next(layer.name for layer in space.layers if any(g == group.name for g, _ in layer.in_groups))
            mqa = found.kv_heads == 1 and found.heads > 1
            scores = unit_scores(attention, found, model.get_submodule(output), mqa)
            order = torch.argsort(scores, descending=True, stable=True)
            prune_heads(model, group.name, found, output, order[: kept[group.name]].tolist())
