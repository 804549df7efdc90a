"""Attention in a space: the heads of each attention module as a channel group, and the
layer that carries its costs.  Used by ``builder.build_space``.

- ``nn.MultiheadAttention``: one attention layer holding its projections (their weights
  take the layer's sparsity and bits), its heads a group whose per-head costs are its
  projections' rows and columns and its products of attention.
- Hugging Face attention (``compress.hf_attention.projections``: query/key/value
  projections and a head size, however the class is named): its projections stay Linear
  layers of their own, with every knob a Linear has; the query/key/value ones have their
  outputs pruned by the group of heads (``LayerInfo.out_per_channel`` features per head),
  the output projection its inputs; the attention layer carries the products of attention
  only.  In a grouped-query attention a channel is a key/value head with its query heads
  (``ChannelGroup.heads_per_channel``); where all query heads share one key/value head, a
  channel is a query head.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch.nn as nn

from ..compress.hf_attention import Projections, output_projection, projections
from ..core.space import ChannelGroup, LayerInfo

_QKV_NAMES = ("q_proj", "k_proj", "v_proj", "query", "key", "value", "c_attn", "q_attn")


@dataclass
class HFAttention:
    """What the builder needs of the Hugging Face attention modules of a model: ``layers``
    (attention layer to insert after the module that runs last among its projections),
    ``groups`` (of heads), ``out_groups`` and ``in_groups`` (projection -> (group,
    features per channel)), and ``projections``: every query/key/value projection of an
    attention module, supported or not, whose coupled channels are heads, not channels."""

    layers: dict[nn.Module, LayerInfo] = field(default_factory=dict)
    groups: list[ChannelGroup] = field(default_factory=list)
    out_groups: dict[nn.Module, tuple[str, int]] = field(default_factory=dict)
    in_groups: dict[nn.Module, tuple[str, int]] = field(default_factory=dict)
    projections: set[nn.Module] = field(default_factory=set)


def attention_layers(model: nn.Module, order: list[nn.Module], shapes: dict, calls: dict[nn.Module, int],
                     names: dict[nn.Module, str], excluded: dict[str, str],
                     warn: Callable[..., None]) -> dict[nn.Module, tuple[LayerInfo, ChannelGroup]]:
    """The (layer, group of heads) of every ``nn.MultiheadAttention`` that runs, by module;
    what is left out goes into ``excluded`` (name -> reason) and is warned about with
    ``warn(model, name, reason)``."""
    attention: dict[nn.Module, tuple[LayerInfo, ChannelGroup]] = {}
    for module in order:
        if isinstance(module, nn.MultiheadAttention):
            name = names[module]
            reason = _attention_unsupported(module, calls[module])
            if reason:
                reason = f"the heads of attention {name} are not pruned: {reason}"
            else:
                attention[module] = _attention(module, name, shapes[module])
                reason = (f"compressed with attention {name} (its heads, and the sparsity and bits of both "
                          "projections); not factorised: nn.MultiheadAttention multiplies them as whole matrices")
            projections_ = (f"{name}.in_proj_weight", f"{name}.out_proj")
            excluded.update(dict.fromkeys(projections_, reason))
            warn(model, " and ".join(projections_), reason)
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


def hf_attention(model: nn.Module, shapes: dict, calls: dict[nn.Module, int], names: dict[nn.Module, str],
                 excluded: dict[str, str], warn: Callable[..., None]) -> HFAttention:
    """The Hugging Face attention modules of ``model`` that ran (see the module docstring);
    one whose heads cannot be pruned goes into ``excluded`` with the reason, warned about."""
    found = HFAttention()
    for module in model.modules():
        structure = projections(module)
        if structure is None:
            continue
        name = names[module]
        children = dict(module.named_children())
        if isinstance(structure, str):
            qkv = [c for n, c in children.items() if n in _QKV_NAMES]
        else:
            qkv = list(dict.fromkeys(children[n] for n in (structure.q, structure.k, structure.v)))
        found.projections.update(qkv)
        reason = structure if isinstance(structure, str) else _hf_unsupported(model, name, qkv, shapes, calls, names)
        if reason:
            if any(m in shapes for m in qkv):
                excluded[name] = f"the heads of attention {name} are not pruned: {reason}"
                warn(model, name, excluded[name], "head search")
            continue
        output = model.get_submodule(output_projection(model, name))
        layer, group = _hf_attention(name, structure, shapes[qkv[0]], shapes[qkv[-1] if len(qkv) == 1 else qkv[1]])
        mqa = structure.kv_heads == 1 and structure.heads > 1
        d, per = structure.head_dim, 1 if mqa else structure.per_group
        if structure.fused:
            found.out_groups[qkv[0]] = (name, 3 * d)
        else:
            found.out_groups[qkv[0]] = (name, d * per)
            if not mqa:
                found.out_groups.update({m: (name, d) for m in qkv[1:]})
        found.in_groups[output] = (name, d * per)
        found.layers[max(qkv, key=lambda m: _position(m, shapes))] = layer
        found.groups.append(group)
    return found


def _position(module: nn.Module, shapes: dict) -> int:
    return list(shapes).index(module)


def _hf_unsupported(model: nn.Module, name: str, qkv: list[nn.Module], shapes: dict, calls: dict,
                    names: dict[nn.Module, str]) -> str:
    """Why the heads of the Hugging Face attention ``name`` cannot be pruned, or ''."""
    output = output_projection(model, name)
    if not output:
        return "it has no output projection named o_proj, out_proj, c_proj or dense, nor an output.dense after it"
    modules = [*qkv, model.get_submodule(output)]
    ran = [calls.get(m, 0) for m in modules]
    if set(ran) != {1}:
        return f"its projections run {max(ran)} times in one forward pass; its costs per head would differ per call"
    return ""


def _hf_attention(name: str, found: Projections, query_shape, key_shape) -> tuple[LayerInfo, ChannelGroup]:
    """The layer (attention's two products) and group of heads of a Hugging Face attention
    whose query and key projections ran on ``query_shape`` and ``key_shape`` (their (input,
    output) shapes).  Per channel: its query heads' products of attention."""
    (query, _), (key, _) = query_shape, key_shape
    queries, keys = query[:-1].numel(), key[:-1].numel()  # positions, batch included
    batch = query[0] if len(query) >= 3 else 1
    mqa = found.kv_heads == 1 and found.heads > 1
    per = 1 if mqa else found.per_group
    width = found.heads * found.head_dim
    flops = 4 * found.head_dim * queries * keys // batch * per
    layer = LayerInfo(name, "attention", width, width, 1, (1, 1), 0, False, rows=(keys, keys, queries),
                      projections=False)
    return layer, ChannelGroup(name, found.heads // per, (name,), 0, flops, found.head_dim, per)
