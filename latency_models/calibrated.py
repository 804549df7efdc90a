"""Whole-model calibration of a per-op latency model on this machine.

Summing per-op times misses what runs between the layers (activations, additions,
pooling, dispatch) and how ops behave inside a model, so on a CPU it is optimistic by a
wide margin at batch 1 (BENCHMARKS.md, latency models).  ``CalibratedLatency`` maps the
per-op sum to whole-model milliseconds with an affine fit ``ms = a + b * sum`` over
models measured whole (the base and compressed candidates near the budget), so a
latency budget on ``cpu`` is checked against what the model really takes.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..core.ops import Op
from .base import LatencyModel, LatencyReport


class CalibratedLatency(LatencyModel):
    """``a + b * inner.total(ops)``: ``a`` is reported as one row ("rest of the model").
    Its contract holds on totals; per-op rows are the inner model's scaled by ``b``."""

    kind = "calibrated"

    def __init__(self, name: str, inner: LatencyModel, a: float, b: float, points: Sequence[Sequence[float]] = ()):
        super().__init__(name)
        self.inner, self.a, self.b = inner, float(a), float(b)
        self.points = [list(map(float, p)) for p in points]

    @classmethod
    def fit(cls, inner: LatencyModel, points: Sequence[tuple[float, float]]) -> CalibratedLatency:
        """Least squares over ``(per-op sum, measured whole-model ms)`` points; the slope is
        kept positive (more work is never faster) and the intercept non-negative."""
        x, y = np.array([p[0] for p in points]), np.array([p[1] for p in points])
        if len(points) < 2 or np.ptp(x) <= 0:
            b, a = float(y.mean() / max(x.mean(), 1e-12)), 0.0
        else:
            b, a = np.polyfit(x, y, 1)
            if b <= 0:  # fall back to a pure scale through the origin
                b, a = float((x @ y) / (x @ x)), 0.0
        return cls(inner.name, inner, float(a), float(b), points)

    def predict_op(self, op: Op, batch: int = 1) -> float:
        return self.b * self.inner.predict_op(op, batch)

    def total(self, ops: Iterable[Op], batch: int = 1) -> float:
        """``a + b * sum``, floored at a tenth of ``b * sum`` where a negative intercept
        (in-model kernels faster than alone) would go below it: never negative, and
        still non-decreasing in the work."""
        scaled = self.b * self.inner.total(ops, batch)
        return max(self.a + scaled, 0.1 * scaled)

    def predict(self, ops: Iterable[Op], batch: int = 1) -> LatencyReport:
        report = super().predict(ops, batch)
        report.rows.append({"layer": "(rest of the model)", "kind": "-", "m": 0, "n": 0, "k": 0, "groups": 0,
                            "bits": 0, "ms": self.a})
        return report

    def params(self) -> dict[str, Any]:
        return {"inner": self.inner.to_dict(), "a": self.a, "b": self.b, "points": self.points}
