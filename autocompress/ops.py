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

from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

from .patterns import lowrank_shapes
from .space import Space


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


def space_ops(space: Space, settings: Mapping[str, Mapping[str, Any]]) -> list[Op]:
    """The ops of the model ``compress`` builds from ``settings`` (per sample), each
    layer's first op marked ``gathers`` where the layer gathers (``gathering_layers``)."""
    ops = []
    for name, layer_ops in _layer_ops(space, settings):
        if name in space.gathering:
            layer_ops[0] = replace(layer_ops[0], gathers=True)
        ops += layer_ops
    return ops


def gathering_layers(space: Space) -> set[str]:
    """The layers whose input, in the base model, is larger than what the op before them
    writes: they read a concatenation of earlier outputs (DenseNet) or an input skipped
    over (a ResNet shortcut).  Decided on the base model, so pruning never changes it
    (``Space.gathering`` keeps it, computed once per space)."""
    base = _layer_ops(space, space.resolve(space.neutral()))
    return {name for (_, before), (name, ops) in zip(base, base[1:])
            if ops[0].in_positions * ops[0].in_channels > before[-1].out_elements}


def _layer_ops(space: Space, settings: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, list[Op]]]:
    """``(layer name, its ops)`` for every layer, in model order."""
    shapes = space.shapes(settings)
    kept = space.group_channels(settings)
    head_dims = {g.name: g.head_dim for g in space.groups if g.head_dim}
    out_ops = []
    for layer in space.layers:
        out, inp = shapes[layer.name]
        s = settings.get(layer.name, {})
        ops: list[Op] = []
        out_ops.append((layer.name, ops))
        if layer.kind == "attention":
            ops += _attention_ops(layer, kept[layer.name], head_dims[layer.name])
            continue
        bits = int(s.get("bits", 32))
        kh, kw = layer.kernel
        in_rows, mid_rows, out_rows = layer.rows
        if s.get("rank"):
            decomposition = str(s["decomposition"])
            factors = lowrank_shapes(decomposition, out, inp, kh, kw, int(s["rank"]))
            positions = {"svd": [out_rows, out_rows], "tucker2": [in_rows, out_rows, out_rows],
                         "spatial": [mid_rows, out_rows]}[decomposition]
            inputs = [in_rows] + positions[:-1]
            shapes_ = _factor_geometry(layer.kind, decomposition, (kh, kw), layer.geometry)
            for i, ((o, c, kernel), p, src, (kern, geo)) in enumerate(zip(factors, positions, inputs, shapes_)):
                ops.append(Op(f"{layer.name}.{i}", "factor", p, o, c * kernel, 1, src, c, bits, kernel=kern,
                              geometry=geo))
            continue
        groups = out if layer.depthwise else layer.groups
        per_group_in = 1 if layer.depthwise else inp // layer.groups
        ops.append(Op(layer.name, layer.kind, out_rows, out // groups if groups > 1 else out,
                      per_group_in * kh * kw, groups, in_rows, inp, bits, float(s.get("sparsity", 0.0)),
                      str(s.get("pattern", "unstructured")), (kh, kw), layer.geometry))
    return out_ops


def products(op: Op) -> list[Op]:
    """The plain matrix products ``op`` runs: itself, or attention's two per head (scores
    Q K^T: queries x keys, reduced over the head dimension; then their softmax times V)."""
    if op.kind != "attention":
        return [op]
    scores = Op(f"{op.layer}.scores", "linear", op.m, op.n, op.k, op.groups, op.m, op.in_channels)
    values = Op(f"{op.layer}.values", "linear", op.m, op.k, op.n, op.groups, op.m, op.n * op.groups)
    return [scores, values]


def _attention_ops(layer, heads: int, head_dim: int) -> list[Op]:
    """An attention layer's ops with ``heads`` kept: the projections (queries from its
    ``rows[2]`` positions, keys and values from its ``rows[0]``, one packed GEMM when
    they are the same), the fused product of attention, the output projection."""
    key_rows, _, query_rows = layer.rows
    embed, width = layer.in_channels, heads * head_dim
    if key_rows == query_rows:
        ops = [Op(f"{layer.name}.in_proj", "linear", query_rows, 3 * width, embed, 1, query_rows, embed)]
    else:
        ops = [Op(f"{layer.name}.q_proj", "linear", query_rows, width, embed, 1, query_rows, embed),
               Op(f"{layer.name}.kv_proj", "linear", key_rows, 2 * width, embed, 1, key_rows, embed)]
    product = Op(f"{layer.name}.attention", "attention", query_rows, key_rows, head_dim, heads, query_rows, width)
    return ops + [product, Op(f"{layer.name}.out_proj", "linear", query_rows, layer.out_channels, width, 1,
                              query_rows, width)]


def _out_size(size: int, kernel: int, stride: int, pad: int, dilation: int) -> int:
    return (size + 2 * pad - dilation * (kernel - 1) - 1) // stride + 1


def _factor_geometry(kind: str, decomposition: str, kernel: tuple[int, int], geometry: tuple[int, ...]):
    """``(kernel, geometry)`` of each factor, as ``compress.lowrank.factorise`` builds them."""
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
