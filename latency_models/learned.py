"""A learned latency model (nn-Meter's approach): one regressor per op kind, fitted on
measured ops, stored as JSON with a schema version (never pickle).

Features per op: log2 of the batch x positions, output channels, reduction length,
groups, input positions, input channels, FLOPs and bytes, plus kernel area and stride.
The regressor is scikit-learn's HistGradientBoostingRegressor on log(ms), with
monotonic constraints on the work features, so more work is never predicted faster
within one op kind.  Its trees are written out as plain arrays and evaluated here with
numpy, so a model fitted today loads with tomorrow's libraries.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import numpy as np

from ..ops import Op
from .base import LatencyModel

FEATURES = ("positions", "n", "k", "groups", "in_positions", "in_channels", "flops", "bytes", "kernel_area",
            "stride")
MONOTONE = (1, 1, 1, 0, 1, 1, 1, 1, 0, 0)


def op_kind(op: Op) -> str:
    """The regressor an op belongs to: linear, depthwise, pointwise (1x1) or conv."""
    if not op.geometry:
        return "linear"
    if op.groups > 1 and op.n == 1:
        return "depthwise"
    if op.kernel == (1, 1):
        return "pointwise"
    return "conv"


def features(op: Op, batch: int) -> list[float]:
    stride = op.geometry[2] * op.geometry[3] if op.geometry else 1
    data = batch * (op.in_positions * op.in_channels + op.m * op.n * op.groups) + op.n * op.k * op.groups
    values = (batch * op.m, op.n, op.k, op.groups, batch * op.in_positions, op.in_channels, batch * op.flops, data)
    return [math.log2(max(v, 1)) for v in values] + [float(op.kernel[0] * op.kernel[1]), float(stride)]


class LearnedLatency(LatencyModel):
    """Per-kind boosted trees over op features, predicting milliseconds."""

    kind = "learned"

    def __init__(self, name: str, device: str = "", kinds: dict[str, dict[str, Any]] | None = None):
        super().__init__(name)
        self.device = device
        self.kinds = kinds or {}

    # ----- prediction (numpy only) -------------------------------------------------------
    def predict_op(self, op: Op, batch: int = 1) -> float:
        kind = op_kind(op)
        model = self.kinds.get(kind)
        if model is None:
            from ..errors import BudgetError

            raise BudgetError(f"latency model {self.name!r} was fitted without {kind} ops; profile again")
        x = features(op, batch)
        log_ms = model["baseline"] + sum(_tree_value(tree, x) for tree in model["trees"])
        return float(math.exp(log_ms))

    def params(self) -> dict[str, Any]:
        return {"device": self.device, "kinds": self.kinds}


def _tree_value(tree: dict[str, list], x: Sequence[float]) -> float:
    node = 0
    while not tree["leaf"][node]:
        node = tree["left"][node] if x[tree["feature"][node]] <= tree["threshold"][node] else tree["right"][node]
    return tree["value"][node]


# ----- fitting ------------------------------------------------------------------------------
def fit_kind(samples: Sequence[tuple[Op, int, float]], seed: int = 0) -> dict[str, Any]:
    """Fit one kind's regressor on ``(op, batch, measured ms)`` samples; its JSON form."""
    return export_regressor(fit_regressor(samples, seed), len(samples))


def fit_regressor(samples: Sequence[tuple[Op, int, float]], seed: int = 0):
    """scikit-learn's monotone boosted trees on log(ms)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    X = np.array([features(op, b) for op, b, _ in samples])
    y = np.log(np.array([max(ms, 1e-6) for _, _, ms in samples]))
    regressor = HistGradientBoostingRegressor(max_iter=300, learning_rate=0.08, max_leaf_nodes=15,
                                              min_samples_leaf=3, monotonic_cst=list(MONOTONE), random_state=seed)
    return regressor.fit(X, y)


def export_regressor(regressor, samples: int) -> dict[str, Any]:
    """The fitted trees as plain lists (what ``_tree_value`` walks)."""
    trees = []
    for (predictor,) in regressor._predictors:  # one tree per iteration (single output)
        nodes = predictor.nodes
        trees.append({"feature": nodes["feature_idx"].astype(int).tolist(),
                      "threshold": nodes["num_threshold"].astype(float).tolist(),
                      "left": nodes["left"].astype(int).tolist(), "right": nodes["right"].astype(int).tolist(),
                      "leaf": nodes["is_leaf"].astype(bool).tolist(), "value": nodes["value"].astype(float).tolist()})
    return {"baseline": float(np.ravel(regressor._baseline_prediction)[0]), "trees": trees, "samples": samples}


def random_op(kind: str, rng: np.random.Generator) -> Op:
    """A random op of ``kind`` in the range compressed CNNs and MLPs have."""
    def channels() -> int:
        return int(rng.choice([int(v) for v in np.unique(np.geomspace(1, 512, 60).astype(int))]))

    if kind == "linear":
        k, n, m = channels() * int(rng.choice([1, 2, 4])), channels(), 1
        return Op("sample", "linear", m, n, k, 1, m, k)
    size = int(rng.choice([4, 7, 8, 14, 16, 28, 32, 56]))
    stride = int(rng.choice([1, 1, 1, 2]))
    if kind == "pointwise":
        kh = kw = 1
    else:
        kh = kw = int(rng.choice([3, 3, 3, 5, 7]))
    pad = kh // 2
    cin = channels()
    if kind == "depthwise":
        cin = max(cin, 2)  # one channel in one group is an ordinary convolution (op_kind "conv")
        groups, n, cout = cin, 1, cin
    else:
        groups, cout = 1, channels()
        n = cout
    out = (size + 2 * pad - kh) // stride + 1
    return Op("sample", "conv", out * out, n, (cin // groups) * kh * kw, groups, size * size, cin,
              kernel=(kh, kw), geometry=(size, size, stride, stride, pad, pad, 1, 1))


def profile(measure: Callable[[Op, int], float], name: str, device: str, samples_per_kind: int = 150,
            rounds: int = 2, batches: Sequence[int] = (1, 8, 32), seed: int = 0,
            progress: Callable[[str], None] | None = None) -> LearnedLatency:
    """Measure random ops, fit, then adaptive sampling: measure fresh ops, keep the worst
    predicted half and their neighbours, refit (``rounds`` times)."""
    rng = np.random.default_rng(seed)
    kinds = {}
    for kind in ("conv", "pointwise", "depthwise", "linear"):
        data = []
        for _ in range(samples_per_kind):
            op, batch = random_op(kind, rng), int(rng.choice(batches))
            data.append((op, batch, measure(op, batch)))
        model = LearnedLatency(name, device, {kind: fit_kind(data, seed)})
        for r in range(rounds):
            fresh = [(random_op(kind, rng), int(rng.choice(batches))) for _ in range(samples_per_kind // 2)]
            scored = []
            for op, batch in fresh:
                ms = measure(op, batch)
                scored.append((abs(model.predict_op(op, batch) / ms - 1), op, batch, ms))
            scored.sort(key=lambda t: -t[0])
            data += [(op, batch, ms) for _, op, batch, ms in scored]
            for _, op, batch, _ in scored[: len(scored) // 4]:  # neighbours of the worst ones
                near = _neighbour(op, rng)
                data.append((near, batch, measure(near, batch)))
            model = LearnedLatency(name, device, {kind: fit_kind(data, seed)})
            if progress:
                progress(f"{kind}: round {r + 1}/{rounds}, {len(data)} samples")
        kinds[kind] = model.kinds[kind]
    return LearnedLatency(name, device, kinds)


def _neighbour(op: Op, rng: np.random.Generator) -> Op:
    """``op`` with its channel counts nudged (groups kept consistent)."""
    import dataclasses

    scale = float(rng.choice([0.75, 0.875, 1.125, 1.25]))
    cin = max(1, int(round(op.in_channels * scale)))
    if op.groups > 1:  # depthwise: stays depthwise (2 channels or more)
        cin = max(cin, 2)
        return dataclasses.replace(op, in_channels=cin, groups=cin, k=op.kernel[0] * op.kernel[1])
    if not op.geometry:
        return dataclasses.replace(op, k=cin, in_channels=cin, n=max(1, int(round(op.n * scale))))
    return dataclasses.replace(op, in_channels=cin, k=cin * op.kernel[0] * op.kernel[1],
                               n=max(1, int(round(op.n / scale))))
