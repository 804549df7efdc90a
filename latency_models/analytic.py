"""Analytic latency models: a GPU roofline and a systolic-array cycle model.

GPU (NVIDIA's DL performance guide): an op is an implicit GEMM per group, M = batch x
output positions, N = output channels, K = reduction length.  Work runs in Tm x Tn tiles
(tile quantisation) over SMs x CTAs per SM at a time (wave quantisation); the math time is
the waves' tile FLOPs at the precision's peak, the memory time the bytes (input, weights,
output) over DRAM bandwidth; latency = max(math, memory) + launch overhead.  Precision:
32-bit weights run fp32... unless the preset is used at ``precision`` fp16 (the default,
as deployment runtimes do); 8 bits and below run int8.  2:4 sparsity divides the math
time by the preset's ``sparse_speedup`` on fp16/int8 paths of GPUs with sparse tensor
cores; other sparsity changes nothing (unstructured sparsity buys ~no GPU speed).

Systolic array (SCALE-Sim): operands ifmap Npix x W (W = K), filters W x M (M = N).  On
an R x C array, output stationary maps (Npix, M) on the PEs and streams W; weight
stationary maps (W, M) and streams Npix; input stationary maps (W, Npix) and streams M.
folds = ceil(S_R / R) x ceil(S_C / C); cycles per fold = T + R + C - 2 (OS) or
2R + C + T - 2 (WS, IS).  With ``bit_scaling`` operands narrower than ``native_bits``
pack into a PE (the array's columns count ``native_bits // bits`` times); with
``zero_skipping`` the streamed dimension shrinks with the weight density.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml

from ..core.errors import BudgetError
from ..core.ops import Op, products
from .base import LatencyModel

PRESETS_FILE = Path(__file__).with_name("presets.yaml")
_GPU_FIELDS = ("sms", "ctas_per_sm", "tile", "peak_tflops", "bandwidth_gbs", "launch_us", "sparse_2_4",
               "sparse_speedup")
_SYSTOLIC_FIELDS = ("rows", "cols", "dataflow", "clock_mhz", "native_bits", "bit_scaling", "zero_skipping")


class GPURoofline(LatencyModel):
    kind = "gpu"

    def __init__(self, name: str, sms: int, ctas_per_sm: int, tile: list[int], peak_tflops: dict[str, float],
                 bandwidth_gbs: float, launch_us: float, sparse_2_4: bool = False, sparse_speedup: float = 1.0,
                 precision: str = "fp16", description: str = ""):
        super().__init__(name)
        self.sms, self.ctas_per_sm, self.tile = int(sms), int(ctas_per_sm), [int(t) for t in tile]
        self.peak_tflops = {k: float(v) for k, v in peak_tflops.items()}
        self.bandwidth_gbs, self.launch_us = float(bandwidth_gbs), float(launch_us)
        self.sparse_2_4, self.sparse_speedup = bool(sparse_2_4), float(sparse_speedup)
        self.precision, self.description = precision, description

    def _precision(self, bits: int) -> str:
        return "int8" if bits <= 8 else self.precision

    def predict_op(self, op: Op, batch: int = 1) -> float:
        if op.kind == "attention":  # its two products, one after the other
            return sum(self.predict_op(product, batch) for product in products(op))
        precision = self._precision(op.bits)
        act_bytes = {"int8": 1, "fp16": 2}.get(precision, 4)
        weight_bytes = max(op.bits, 8) / 8 if op.bits <= 8 else act_bytes
        m = batch * op.m
        tm, tn = self.tile
        tiles = math.ceil(m / tm) * math.ceil(op.n / tn) * op.groups
        waves = math.ceil(tiles / (self.sms * self.ctas_per_sm))
        per_tile_rate = self.peak_tflops[precision] * 1e12 / (self.sms * self.ctas_per_sm)
        math_s = waves * 2 * tm * tn * op.k / per_tile_rate
        if op.pattern == "2:4" and op.sparsity > 0 and self.sparse_2_4 and precision in ("fp16", "int8"):
            math_s /= self.sparse_speedup
        data = (batch * op.in_positions * op.in_channels * act_bytes + op.n * op.k * op.groups * weight_bytes
                + m * op.n * op.groups * act_bytes)
        memory_s = data / (self.bandwidth_gbs * 1e9)
        return 1e3 * (max(math_s, memory_s) + self.launch_us * 1e-6)

    def params(self) -> dict[str, Any]:
        return {"sms": self.sms, "ctas_per_sm": self.ctas_per_sm, "tile": self.tile, "peak_tflops": self.peak_tflops,
                "bandwidth_gbs": self.bandwidth_gbs, "launch_us": self.launch_us, "sparse_2_4": self.sparse_2_4,
                "sparse_speedup": self.sparse_speedup, "precision": self.precision, "description": self.description}


class SystolicArray(LatencyModel):
    kind = "systolic"

    def __init__(self, name: str, rows: int, cols: int, dataflow: str, clock_mhz: float, native_bits: int = 8,
                 bit_scaling: bool = False, zero_skipping: bool = False, description: str = ""):
        super().__init__(name)
        if dataflow not in ("os", "ws", "is"):
            raise BudgetError(f"target {name!r}: dataflow {dataflow!r} is not os, ws or is")
        self.rows, self.cols, self.dataflow = int(rows), int(cols), dataflow
        self.clock_mhz, self.native_bits = float(clock_mhz), int(native_bits)
        self.bit_scaling, self.zero_skipping, self.description = bool(bit_scaling), bool(zero_skipping), description

    def cycles(self, op: Op, batch: int = 1) -> int:
        """Cycles of ``op`` (all groups, run one after another; attention's two products too)."""
        if op.kind == "attention":
            return sum(self.cycles(product, batch) for product in products(op))
        npix, w, filters = batch * op.m, op.k, op.n
        cols = self.cols * (max(1, self.native_bits // op.bits) if self.bit_scaling and op.bits < self.native_bits
                            else 1)
        density = 1.0 - op.sparsity if self.zero_skipping else 1.0
        if self.dataflow == "os":
            spatial, stream, fixed = (npix, filters), w * density, self.rows + cols - 2
        elif self.dataflow == "ws":
            spatial, stream, fixed = (math.ceil(w * density), filters), npix, 2 * self.rows + cols - 2
        else:
            spatial, stream, fixed = (math.ceil(w * density), npix), filters, 2 * self.rows + cols - 2
        folds = math.ceil(spatial[0] / self.rows) * math.ceil(spatial[1] / cols)
        return int(op.groups * folds * (math.ceil(stream) + fixed))

    def predict_op(self, op: Op, batch: int = 1) -> float:
        return self.cycles(op, batch) / (self.clock_mhz * 1e3)

    def params(self) -> dict[str, Any]:
        return {"rows": self.rows, "cols": self.cols, "dataflow": self.dataflow, "clock_mhz": self.clock_mhz,
                "native_bits": self.native_bits, "bit_scaling": self.bit_scaling,
                "zero_skipping": self.zero_skipping, "description": self.description}


def presets() -> dict[str, dict[str, Any]]:
    """The built-in targets (``presets.yaml``) by name."""
    return yaml.safe_load(PRESETS_FILE.read_text())


def from_fields(name: str, fields: dict[str, Any]) -> LatencyModel:
    """An analytic model from a preset's or a user's YAML fields; BudgetError names
    what is missing or wrong."""
    if not isinstance(fields, dict):
        raise BudgetError(f"target {name!r} must be a mapping of fields")
    kind = fields.get("kind")
    required = {"gpu": _GPU_FIELDS[:6], "systolic": _SYSTOLIC_FIELDS[:4]}.get(kind)
    if required is None:
        raise BudgetError(f"target {name!r} has kind {kind!r}; use gpu or systolic")
    missing = [f for f in required if f not in fields]
    if missing:
        raise BudgetError(f"target {name!r} lacks the field(s) {', '.join(missing)}")
    known = set(_GPU_FIELDS if kind == "gpu" else _SYSTOLIC_FIELDS) | {"kind", "description", "precision"}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise BudgetError(f"target {name!r} has unknown field(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(known))}")
    args = {k: v for k, v in fields.items() if k != "kind"}
    try:
        model = GPURoofline(name, **args) if kind == "gpu" else SystolicArray(name, **args)
    except (TypeError, ValueError) as exc:
        raise BudgetError(f"target {name!r}: {exc}") from None
    if kind == "gpu":
        for precision in ("fp16", "int8", model.precision):
            if precision not in model.peak_tflops:
                raise BudgetError(f"target {name!r}: peak_tflops lacks {precision}")
    return model
