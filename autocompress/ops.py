"""What a compressed model executes, layer by layer, as latency models see it (no torch).

``space_ops(space, settings)`` lists one ``Op`` per matrix product the compressed model
runs: a plain layer is one op; a low-rank layer is its 2 or 3 factors.  An op is an
implicit GEMM per group: ``m`` output positions (per sample), ``n`` output channels,
``k`` reduction length (input channels per group x kernel elements), ``groups`` of them
(depthwise convolutions have ``groups == n``).  ``in_positions`` x ``in_channels`` is the
input's size per sample (for the bytes read), ``bits`` the weight bit-width, ``sparsity`` and
``pattern`` the weight sparsity.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

from .patterns import lowrank_shapes
from .space import Space


@dataclass(frozen=True)
class Op:
    layer: str
    kind: str  # conv, linear, factor
    m: int
    n: int
    k: int
    groups: int = 1
    in_positions: int = 0
    in_channels: int = 0
    bits: int = 32
    sparsity: float = 0.0
    pattern: str = "unstructured"

    @property
    def flops(self) -> int:
        """FLOPs per sample (2 per multiply-accumulate), all groups."""
        return 2 * self.m * self.n * self.k * self.groups

    def signature(self) -> str:
        """A stable key for caches of measured ops."""
        d = asdict(self)
        d.pop("layer")
        return ",".join(f"{key}={d[key]}" for key in sorted(d))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def space_ops(space: Space, settings: Mapping[str, Mapping[str, Any]]) -> list[Op]:
    """The ops of the model ``compress`` builds from ``settings`` (per sample)."""
    shapes = space.shapes(settings)
    ops = []
    for layer in space.layers:
        out, inp = shapes[layer.name]
        s = settings.get(layer.name, {})
        bits = int(s.get("bits", 32))
        kh, kw = layer.kernel
        in_rows, mid_rows, out_rows = layer.rows
        if s.get("rank"):
            decomposition = str(s["decomposition"])
            factors = lowrank_shapes(decomposition, out, inp, kh, kw, int(s["rank"]))
            positions = {"svd": [out_rows, out_rows], "tucker2": [in_rows, out_rows, out_rows],
                         "spatial": [mid_rows, out_rows]}[decomposition]
            inputs = [in_rows] + positions[:-1]
            for i, ((o, c, kernel), p, src) in enumerate(zip(factors, positions, inputs)):
                ops.append(Op(f"{layer.name}.{i}", "factor", p, o, c * kernel, 1, src, c, bits))
            continue
        groups = out if layer.depthwise else layer.groups
        per_group_in = 1 if layer.depthwise else inp // layer.groups
        ops.append(Op(layer.name, layer.kind, out_rows, out // groups if groups > 1 else out,
                      per_group_in * kh * kw, groups, in_rows, inp, bits, float(s.get("sparsity", 0.0)),
                      str(s.get("pattern", "unstructured"))))
    return ops
