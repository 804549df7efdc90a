"""What a compressed model executes, layer by layer, as latency models see it (no torch).

``space_ops(space, settings)`` lists one ``Op`` per matrix product the compressed model
runs: a plain layer is one op; a low-rank layer is its 2 or 3 factors.  An op is an
implicit GEMM per group: ``m`` output positions (per sample), ``n`` output channels,
``k`` reduction length (input channels per group x kernel elements), ``groups`` of them
(depthwise convolutions have ``groups == n``).  An ``attention`` op is the fused product of
attention, softmax(Q K^T) V, per head: ``m`` queries, ``n`` keys, ``k`` the head
dimension, ``groups`` the heads; it runs two products (``products``).  ``in_positions`` x
``in_channels`` is the input's size per sample (for the bytes read), ``bits`` the weight
bit-width, ``sparsity`` and ``pattern`` the weight sparsity; ``gathers`` marks an op whose
input is more than the op before it wrote (a concatenation, a skipped-over input).
Convolutions also carry ``kernel`` and ``geometry`` (``h_in, w_in, stride_h, stride_w,
pad_h, pad_w, dilation_h, dilation_w``) so a measured latency model can run them as they are.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from .kinds import kinds

if TYPE_CHECKING:
    from .space import LayerInfo, Space


@dataclass(frozen=True)
class Op:
    layer: str
    kind: str  # conv, linear, factor, attention
    m: int
    n: int
    k: int
    groups: int = 1
    in_positions: int = 0
    in_channels: int = 0
    bits: int = 32
    sparsity: float = 0.0
    pattern: str = "unstructured"
    kernel: tuple[int, int] = (1, 1)
    geometry: tuple[int, ...] = ()
    gathers: bool = False  # reads more than the op before writes (``gathering_layers``); not part of the signature

    @property
    def flops(self) -> int:
        """FLOPs per sample (2 per multiply-accumulate), all groups (both products of attention)."""
        return 2 * self.m * self.n * self.k * self.groups * (2 if self.kind == "attention" else 1)

    @property
    def out_elements(self) -> int:
        """Elements it writes per sample (attention writes its values, not its scores)."""
        return self.m * self.groups * (self.k if self.kind == "attention" else self.n)

    def signature(self) -> str:
        """A stable key for caches of measured ops."""
        d = asdict(self)
        d.pop("layer")
        d.pop("gathers")  # where the input comes from, not what the op computes
        d["kernel"], d["geometry"] = "x".join(map(str, d["kernel"])), "x".join(map(str, d["geometry"]))
        return ",".join(f"{key}={d[key]}" for key in sorted(d))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def evolve(self, **changes: Any) -> Op:
        """A copy with ``changes`` (field values): ``dataclasses.replace`` without its
        checks, as the cost model builds ops on every ``Space.cost`` call."""
        op = object.__new__(Op)
        op.__dict__.update(self.__dict__, **changes)
        return op


def space_ops(space: Space, settings: Mapping[str, Mapping[str, Any]],
              per_layer: list[tuple[LayerInfo, list[Op]]] | None = None) -> list[Op]:
    """The ops of the model ``compress`` builds from ``settings`` (per sample), each
    layer's first op marked ``gathers`` where the layer gathers (``gathering_layers``).
    ``per_layer`` is ``layer_ops(space, settings)`` where the caller has it already."""
    ops = []
    for layer, ops_ in per_layer if per_layer is not None else layer_ops(space, settings):
        if layer.name in space.gathering:
            ops_ = [ops_[0].evolve(gathers=True), *ops_[1:]]
        ops += ops_
    return ops


def gathering_layers(space: Space) -> set[str]:
    """The layers whose input, in the base model, is larger than what the op before them
    writes: they read a concatenation of earlier outputs (DenseNet) or an input skipped
    over (a ResNet shortcut).  Decided on the base model, so pruning never changes it
    (``Space.gathering`` keeps it, computed once per space)."""
    base = layer_ops(space, space.resolve(space.neutral()))
    return {layer.name for (_, before), (layer, ops) in zip(base, base[1:])
            if ops[0].in_positions * ops[0].in_channels > before[-1].out_elements}


def layer_ops(space: Space, settings: Mapping[str, Mapping[str, Any]],
              shapes: Mapping[str, tuple[int, int]] | None = None,
              kept: Mapping[str, int] | None = None) -> list[tuple[LayerInfo, list[Op]]]:
    """``(layer, its ops)`` for every layer, in model order: the layer at its shape after
    channel pruning (an attention layer with its kept heads), then what every registered
    kind makes of it (``Kind.ops``), in registration order.  ``shapes`` and ``kept`` are
    ``space.shapes(settings)`` and ``space.group_channels(settings)`` where the caller has
    them already; raises RecipeError as those do."""
    shapes = space.shapes(settings) if shapes is None else shapes
    kept = space.group_channels(settings) if kept is None else kept
    heads = {g.name: (g.head_dim, g.heads_per_channel) for g in space.groups if g.head_dim}
    registered = kinds()
    out_ops = []
    for layer in space.layers:
        if layer.kind == "attention":
            head_dim, per_channel = heads[layer.name]
            ops = _attention_ops(layer, kept[layer.name] * per_channel, head_dim)
        else:
            ops = [_layer_op(layer, *shapes[layer.name])]
        s = settings.get(layer.name, {})
        for kind in registered:
            ops = kind.ops(layer, s, ops)
        out_ops.append((layer, ops))
    return out_ops


def _layer_op(layer: LayerInfo, out: int, inp: int) -> Op:
    """A Conv2d or Linear layer with ``out`` outputs and ``inp`` inputs, as one op."""
    kh, kw = layer.kernel
    in_rows, _, out_rows = layer.rows
    groups = out if layer.depthwise else layer.groups
    per_group_in = 1 if layer.depthwise else inp // layer.groups
    return Op(layer.name, layer.kind, out_rows, out // groups if groups > 1 else out, per_group_in * kh * kw, groups,
              in_rows, inp, kernel=(kh, kw), geometry=layer.geometry)


def products(op: Op) -> list[Op]:
    """The plain matrix products ``op`` runs: itself, or attention's two per head (scores
    Q K^T: queries x keys, reduced over the head dimension; then their softmax times V)."""
    if op.kind != "attention":
        return [op]
    scores = Op(f"{op.layer}.scores", "linear", op.m, op.n, op.k, op.groups, op.m, op.in_channels)
    values = Op(f"{op.layer}.values", "linear", op.m, op.k, op.n, op.groups, op.m, op.n * op.groups)
    return [scores, values]


def _attention_ops(layer, heads: int, head_dim: int) -> list[Op]:
    """An attention layer's ops with ``heads`` (query heads) kept: the projections (queries
    from its ``rows[2]`` positions, keys and values from its ``rows[0]``, one packed GEMM
    when they are the same), the fused product of attention, the output projection; only
    the product where its projections are layers of their own (``projections`` false)."""
    key_rows, _, query_rows = layer.rows
    embed, width = layer.in_channels, heads * head_dim
    if not layer.projections:
        return [Op(f"{layer.name}.attention", "attention", query_rows, key_rows, head_dim, heads, query_rows, width)]
    if key_rows == query_rows:
        ops = [Op(f"{layer.name}.in_proj", "linear", query_rows, 3 * width, embed, 1, query_rows, embed)]
    else:
        ops = [Op(f"{layer.name}.q_proj", "linear", query_rows, width, embed, 1, query_rows, embed),
               Op(f"{layer.name}.kv_proj", "linear", key_rows, 2 * width, embed, 1, key_rows, embed)]
    product = Op(f"{layer.name}.attention", "attention", query_rows, key_rows, head_dim, heads, query_rows, width)
    return ops + [product, Op(f"{layer.name}.out_proj", "linear", query_rows, layer.out_channels, width, 1,
                              query_rows, width)]
