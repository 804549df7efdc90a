"""Hugging Face attention modules, recognised by what they hold rather than their class.

An attention module is one with query, key and value projections as Linear (or ``Conv1D``)
children, named ``q_proj``/``k_proj``/``v_proj`` (Llama, ViT, Mistral, Qwen...) or
``query``/``key``/``value`` (BERT, RoBERTa), or one fused ``c_attn`` holding queries, keys
and values one after the other (GPT-2), and a head size attribute (``head_dim`` or
``attention_head_size``).  The forward passes of transformers 5 infer the number of heads
from the projections' widths (``view(..., -1, head_dim)``); the head-count attributes
other code reads are kept consistent by ``prune_heads``.  Nothing here imports
transformers.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn as nn

from .conv1d import is_conv1d

_SEPARATE = (("q_proj", "k_proj", "v_proj"), ("query", "key", "value"))
_FUSED = "c_attn"
_OUTPUT = ("o_proj", "out_proj", "c_proj", "dense")
_HEAD_DIM = ("head_dim", "attention_head_size")
_HEADS = ("num_heads", "num_attention_heads", "n_head", "n_heads")
_KV_HEADS = ("num_key_value_heads", "num_kv_heads")
_WIDTHS = ("all_head_size", "split_size")


@dataclass(frozen=True)
class Projections:
    """The query, key and value projections of an attention module (child names; all three
    the same name when fused), its head size and its query and key/value head counts."""

    q: str
    k: str
    v: str
    head_dim: int
    heads: int
    kv_heads: int

    @property
    def fused(self) -> bool:
        return self.q == self.k == self.v

    @property
    def per_group(self) -> int:
        """Query heads per key/value head."""
        return self.heads // self.kv_heads


def _is_linear(module: nn.Module | None) -> bool:
    return isinstance(module, nn.Linear) or (module is not None and is_conv1d(module))


def _out(module: nn.Module) -> int:
    return module.weight.shape[1] if is_conv1d(module) else module.out_features


def projections(module: nn.Module) -> Projections | str | None:
    """The ``Projections`` of ``module`` if it is an attention module, a reason if it looks
    like one (projections and a head size) that cannot be head-pruned, else None."""
    if isinstance(module, nn.MultiheadAttention):
        return None
    head_dim = next((getattr(module, a) for a in _HEAD_DIM if isinstance(getattr(module, a, None), int)), 0)
    children = dict(module.named_children())
    names = next((names for names in _SEPARATE if all(_is_linear(children.get(n)) for n in names)), None)
    if names is None and _is_linear(children.get(_FUSED)):
        names = (_FUSED,) * 3
    if names is None or head_dim <= 0:
        return None
    if "q_attn" in children or getattr(module, "is_cross_attention", False) and names[0] == _FUSED:
        return "its queries and keys come from separate fused projections (cross-attention), not handled yet"
    q, k, v = (children[n] for n in names)
    if names[0] == _FUSED:
        if _out(q) % (3 * head_dim):
            return f"its fused projection {_FUSED} ({_out(q)} outputs) is not three blocks of {head_dim}-wide heads"
        heads = kv_heads = _out(q) // (3 * head_dim)
    else:
        if _out(q) % head_dim or _out(k) % head_dim or _out(k) != _out(v):
            return (f"its projections ({_out(q)}, {_out(k)}, {_out(v)} outputs) are not whole heads of "
                    f"{head_dim} features")
        heads, kv_heads = _out(q) // head_dim, _out(k) // head_dim
    if kv_heads == 0 or heads % kv_heads:
        return f"its {heads} query heads do not split evenly over its {kv_heads} key/value heads"
    declared = next((getattr(module, a) for a in _HEADS if isinstance(getattr(module, a, None), int)), heads)
    if declared != heads:
        return f"it declares {declared} heads but its projections hold {heads}"
    return Projections(*names, head_dim, heads, kv_heads)


def output_projection(model: nn.Module, name: str) -> str:
    """The name of the output projection of the attention module ``name`` of ``model``: its
    child ``o_proj``/``out_proj``/``c_proj``/``dense``, or its parent's ``output.dense``
    (BERT's ``BertSelfOutput``); '' if it has none of those."""
    children = dict(model.get_submodule(name).named_children())
    for child in _OUTPUT:
        if _is_linear(children.get(child)):
            return f"{name}.{child}"
    parent = name.rpartition(".")[0]
    output = getattr(model.get_submodule(parent), "output", None) if parent else None
    if isinstance(output, nn.Module) and _is_linear(getattr(output, "dense", None)):
        return f"{parent}.output.dense"
    return ""


def _rows(layer: nn.Module, keep: torch.Tensor) -> nn.Module:
    """A copy of the Linear ``layer`` keeping output rows ``keep``."""
    new = nn.Linear(layer.in_features, len(keep), bias=layer.bias is not None,
                    device=layer.weight.device, dtype=layer.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(layer.weight[keep])
        if layer.bias is not None:
            new.bias.copy_(layer.bias[keep])
    return new.train(layer.training)


def _cols(layer: nn.Module, keep: torch.Tensor) -> nn.Module:
    """A copy of the Linear ``layer`` keeping input columns ``keep``."""
    new = nn.Linear(len(keep), layer.out_features, bias=layer.bias is not None,
                    device=layer.weight.device, dtype=layer.weight.dtype)
    with torch.no_grad():
        new.weight.copy_(layer.weight[:, keep])
        if layer.bias is not None:
            new.bias.copy_(layer.bias)
    return new.train(layer.training)


def _indices(units: Sequence[int], per: int, blocks: int = 1, width: int = 0) -> torch.Tensor:
    """Row indices of ``units`` (``per`` rows each), in each of ``blocks`` blocks ``width`` apart."""
    return torch.tensor([b * width + u * per + i for b in range(blocks) for u in units for i in range(per)],
                        dtype=torch.long)


def unit_scores(module: nn.Module, found: Projections, output: nn.Linear, mqa: bool) -> torch.Tensor:
    """L2 norm of each pruning unit's weights (rows of the query/key/value projections,
    columns of the output projection).  A unit is a key/value head with its query heads,
    or a query head where all of them share one key/value head (``mqa``)."""
    d = found.head_dim
    with torch.no_grad():
        if found.fused:
            w = getattr(module, found.q).weight
            score = w.view(3, found.heads, d, -1).pow(2).sum(dim=(0, 2, 3))
        else:
            units = found.heads if mqa else found.kv_heads
            score = getattr(module, found.q).weight.reshape(units, -1).pow(2).sum(1)
            if not mqa:
                score = score + sum(getattr(module, n).weight.reshape(units, -1).pow(2).sum(1)
                                    for n in (found.k, found.v))
        units = len(score)
        return (score + output.weight.reshape(output.out_features, units, -1).pow(2).sum(dim=(0, 2))).sqrt()


def prune_heads(model: nn.Module, name: str, found: Projections, output_name: str, keep: Sequence[int]) -> None:
    """Keep the pruning units ``keep`` (see ``unit_scores``) of the attention module ``name``
    of ``model``, in place: its projections lose the other heads' rows, the output
    projection (``output_name``, a layer of ``model``) their columns, and the head-count
    attributes follow.  Projections must be ``nn.Linear`` (``conv1d.linearise`` first)."""
    module = model.get_submodule(name)
    d, keep = found.head_dim, sorted(keep)
    mqa = found.kv_heads == 1 and found.heads > 1
    per_q = d if mqa else d * found.per_group
    output = model.get_submodule(output_name)
    old_width = found.heads * d
    if found.fused:
        rows = _indices(keep, d, 3, old_width)
        setattr(module, found.q, _rows(getattr(module, found.q), rows))
    else:
        setattr(module, found.q, _rows(getattr(module, found.q), _indices(keep, per_q)))
        if not mqa:
            kv = _indices(keep, d)
            setattr(module, found.k, _rows(getattr(module, found.k), kv))
            setattr(module, found.v, _rows(getattr(module, found.v), kv))
    model.set_submodule(output_name, _cols(output, _indices(keep, per_q)))
    heads = len(keep) if mqa or found.fused else len(keep) * found.per_group
    kv_heads = 1 if mqa else heads if found.fused else len(keep)
    for attrs, value in ((_HEADS, heads), (_KV_HEADS, kv_heads), (_WIDTHS, heads * d)):
        for attr in attrs:
            current = getattr(module, attr, None)
            if isinstance(current, int) and not isinstance(current, bool) and (attr not in _WIDTHS
                                                                                or current == old_width):
                setattr(module, attr, value)
    if mqa and isinstance(getattr(module, "num_key_value_groups", None), int):
        module.num_key_value_groups = heads
