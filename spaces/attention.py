"""Attention in a space: the heads of each attention module as a channel group, and the
layer that carries its costs.  Used by ``builder.build_space``."""
from __future__ import annotations

from collections.abc import Callable

import torch.nn as nn

from ..core.space import ChannelGroup, LayerInfo


def attention_layers(model: nn.Module, order: list[nn.Module], shapes: dict, calls: dict[nn.Module, int],
                     names: dict[nn.Module, str], excluded: dict[str, str],
                     warn: Callable[..., None]) -> dict[nn.Module, tuple[LayerInfo, ChannelGroup]]:
    """The (layer, group of heads) of every attention module that runs, by module; what is
    left out goes into ``excluded`` (name -> reason) and is warned about with ``warn(model,
    name, reason)``."""
    attention: dict[nn.Module, tuple[LayerInfo, ChannelGroup]] = {}
    for module in order:
        if isinstance(module, nn.MultiheadAttention):
            name = names[module]
            reason = _attention_unsupported(module, calls[module])
            if reason:
                reason = f"the heads of attention {name} are not pruned: {reason}"
            else:
                attention[module] = _attention(module, name, shapes[module])
                reason = (f"searched by the heads of attention {name} only: sparsity, rank and bits do not apply "
                          "inside nn.MultiheadAttention yet")
            projections = (f"{name}.in_proj_weight", f"{name}.out_proj")
            excluded.update(dict.fromkeys(projections, reason))
            warn(model, " and ".join(projections), reason)
    return attention


def _attention_unsupported(module: nn.MultiheadAttention, calls: int) -> str:
    """Why the heads of ``module`` cannot be pruned, or ''."""
    if not module._qkv_same_embed_dim:
        return "its keys and values have their own widths (kdim/vdim), which head pruning does not handle yet"
    if module.bias_k is not None or module.add_zero_attn:
        return "it has bias_k/bias_v or add_zero_attn, which head pruning does not handle yet"
    if calls != 1:
        return f"it runs {calls} times in one forward pass; its costs per head would differ per call"
    return ""


def _attention(module: nn.MultiheadAttention, name: str, shape) -> tuple[LayerInfo, ChannelGroup]:
    """The layer and group of heads of an attention that runs once on ``shape`` (query,
    key).  Per head: ``head_dim`` rows of each of q, k and v in ``in_proj_weight`` (and
    ``in_proj_bias``), ``head_dim`` columns of ``out_proj``, and its two products of
    attention (scores and weighted values)."""
    query, key = shape
    embed, heads, head_dim = module.embed_dim, module.num_heads, module.head_dim
    queries, keys = query.numel() // embed, key.numel() // embed  # positions, batch included
    batch = 1 if len(query) == 2 else query[0 if module.batch_first else 1]
    flops = 2 * head_dim * embed * (queries + 2 * keys) + 4 * head_dim * queries * keys // batch \
        + 2 * queries * head_dim * embed
    params = 4 * head_dim * embed + (3 * head_dim if module.in_proj_bias is not None else 0)
    bias = module.out_proj.bias is not None
    layer = LayerInfo(name, "attention", embed, embed, 1, (1, 1), 0, bias, rows=(keys, keys, queries))
    return layer, ChannelGroup(name, heads, (name,), params, flops, head_dim)


