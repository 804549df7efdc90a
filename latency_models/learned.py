"""A learned latency model (nn-Meter's approach): one regressor per op kind, fitted on
measured ops, stored as JSON with a schema version (never pickle).

Features per op (``FEATURES_VERSION`` 3 added attention as its own kind, 4 the gathered
inputs between the layers): log2 of the batch x positions, output channels, reduction
length, groups, input positions, input channels, FLOPs and bytes, kernel area and
stride; then log2 of the batch, the FLOPs with channels padded to the CPU kernels' block
of 8 (oneDNN's AVX2 blocking: 9 channels cost what 16 do), the padded channel counts and
the output and input elements.  The regressor is scikit-learn's
HistGradientBoostingRegressor on log(ms), with monotonic constraints on every work
feature, so more work is never predicted faster within one op kind (``CONSTRAINTS``: the
one exception is attention's head dimension, where the CPU itself is not monotone).  Its
trees are written out as plain arrays and evaluated here with numpy, so a model fitted
today loads with tomorrow's libraries.

What runs between the layers (activations, additions, normalisation, pooling, the per-node
dispatch) is not an op: ``fit_glue`` fits it on whole models measured at profile time as
``c0 + c_ops x ops + c_elements x output elements + c_in_elements x input elements +
c_gathered x gathered elements`` (non-negative least squares; the gathered elements are
the inputs of the ops whose input, in the base model, is more than the op before wrote:
concatenations copy them and skip connections read them again, so DenseNet's layers cost
far more than their ops), and ``total`` adds it to the sum of the ops (the "(between the
layers)" row of a report).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ..core.ops import Op
from .base import LatencyModel, LatencyReport

FEATURES = ("positions", "n", "k", "groups", "in_positions", "in_channels", "flops", "bytes", "kernel_area",
            "stride", "batch", "padded_flops", "padded_out_channels", "padded_in_channels", "out_elements",
            "in_elements")
MONOTONE = (1, 1, 1, 0, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 1)
# Per kind: attention's groups are its heads (more heads, more work), and its head
# dimension is left free because the device itself is not monotone in it: this CPU ran 14
# of 42 attention ops over 10% (up to 34%) faster with 16 features per head than with 8
# (BENCHMARKS.md); held to "never faster", the attention regressor's error went from 19%
# to 30%.  A search never changes the head dimension (heads are pruned whole).
CONSTRAINTS = {"attention": {"groups": 1, "k": 0}}
KINDS = ("conv", "pointwise", "depthwise", "linear", "attention")  # one regressor each
BATCHES = (1, 8, 32)  # batch sizes ops (and whole models) are profiled at
SAMPLES_PER_KIND = 300  # first random samples per op kind (BENCHMARKS.md: 300 beat 150, 51% vs 46% within 10%)
FEATURES_VERSION = 4  # saved models record it; a model fitted on other features is refused (4: gathered inputs)
REGRESSOR = dict(max_iter=300, learning_rate=0.08, max_leaf_nodes=15, min_samples_leaf=3, random_state=0)
BLOCK = 8  # channels per block of the CPU's convolution and GEMM kernels (oneDNN, AVX2 fp32)


def op_kind(op: Op) -> str:
    """The regressor an op belongs to: attention, linear, depthwise, pointwise (1x1) or conv."""
    if op.kind == "attention":
        return "attention"
    if not op.geometry:
        return "linear"
    if op.groups > 1 and op.n == 1:
        return "depthwise"
    if op.kernel == (1, 1):
        return "pointwise"
    return "conv"


def _padded(channels: int) -> int:
    return -(-channels // BLOCK) * BLOCK


def features(op: Op, batch: int) -> list[float]:
    """The regressor's inputs for ``op`` at ``batch`` (``FEATURES``, in that order)."""
    stride = op.geometry[2] * op.geometry[3] if op.geometry else 1
    data = batch * (op.in_positions * op.in_channels + op.m * op.n * op.groups) + op.n * op.k * op.groups
    area = op.kernel[0] * op.kernel[1]
    out_channels = op.out_elements // max(op.m, 1)
    if op.kind == "attention":  # per head: (m, k) @ (k, n), then (m, n) @ (n, k); reads Q, K, V, writes out
        data = batch * op.groups * op.k * (2 * op.m + 2 * op.n)
        padded_out, padded_in = _padded(op.n), _padded(op.k)
        padded_flops = 4 * batch * op.m * padded_out * padded_in * op.groups
    elif not op.geometry:  # a GEMM: (batch x m, k) @ (k, n)
        padded_out, padded_in = _padded(op.n), _padded(op.k)
        padded_flops = 2 * batch * op.m * padded_out * padded_in
    elif op.groups > 1:  # a grouped / depthwise convolution: channels are blocked, each group's k is not
        padded_out = padded_in = _padded(out_channels)
        padded_flops = 2 * batch * op.m * padded_out * (op.k // area) * area
    else:
        padded_out, padded_in = _padded(out_channels), _padded(op.in_channels)
        padded_flops = 2 * batch * op.m * padded_out * padded_in * area
    values = (batch * op.m, op.n, op.k, op.groups, batch * op.in_positions, op.in_channels, batch * op.flops, data)
    extra = (batch, padded_flops, padded_out, padded_in, batch * op.out_elements,
             batch * op.in_positions * op.in_channels)
    return ([math.log2(max(v, 1)) for v in values] + [float(area), float(stride)]
            + [math.log2(max(v, 1)) for v in extra])


class LearnedLatency(LatencyModel):
    """Per-kind boosted trees over op features, predicting milliseconds, plus what runs
    between the layers (``glue``: ``GLUE_TERMS``, ms, ms per op, ms per million output,
    input and gathered elements) when the profile measured whole models."""

    kind = "learned"

    def __init__(self, name: str, device: str = "", kinds: dict[str, dict[str, Any]] | None = None,
                 glue: dict[str, float] | None = None, features: int = FEATURES_VERSION):
        super().__init__(name)
        if features != FEATURES_VERSION:
            from ..core.errors import BudgetError

            raise BudgetError(f"latency model {name!r} was fitted on features of version {features} (this "
                              f"autocompress uses {FEATURES_VERSION}); run `autocompress profile` again")
        self.device = device
        self.kinds = kinds or {}
        self.glue = dict(glue or {})

    # ----- prediction (numpy only) -------------------------------------------------------
    def predict_op(self, op: Op, batch: int = 1) -> float:
        kind = op_kind(op)
        model = self.kinds.get(kind)
        if model is None:
            from ..core.errors import BudgetError

            raise BudgetError(f"latency model {self.name!r} was fitted without {kind} ops; profile again")
        x = features(op, batch)
        log_ms = model["baseline"] + sum(_tree_value(tree, x) for tree in model["trees"])
        return float(math.exp(log_ms))

    def between_layers(self, ops: Sequence[Op], batch: int = 1) -> float:
        """Milliseconds of what runs between the layers of a model made of ``ops`` (0
        without a fitted glue): never negative, more with more ops and more elements."""
        if not self.glue:
            return 0.0
        return float(np.dot([self.glue[name] for name in GLUE_TERMS], [1.0, *glue_features(ops, batch)]))

    def total(self, ops, batch: int = 1) -> float:
        ops = list(ops)
        return super().total(ops, batch) + self.between_layers(ops, batch)

    def predict(self, ops, batch: int = 1) -> LatencyReport:
        ops = list(ops)
        report = super().predict(ops, batch)
        if self.glue:
            report.rows.append({"layer": "(between the layers)", "kind": "-", "m": 0, "n": 0, "k": 0, "groups": 0,
                                "bits": 0, "ms": self.between_layers(ops, batch)})
        return report

    def params(self) -> dict[str, Any]:
        return {"device": self.device, "kinds": self.kinds, "glue": self.glue, "features": FEATURES_VERSION}


GLUE_TERMS = ("c0", "c_ops", "c_elements", "c_in_elements", "c_gathered")


def glue_features(ops: Sequence[Op], batch: int = 1) -> tuple[float, float, float, float]:
    """What the between-the-layers time scales with: the number of ops; the millions of
    elements they write (each is read and written again by the activation, addition,
    normalisation or pooling after it) and read (pre-activation blocks normalise them);
    and the millions read by the ops that gather (``Op.gathers``: concatenations copy
    their input, skip connections read it again).  Each grows with every op's channels."""
    reads = [op.in_positions * op.in_channels for op in ops]
    gathered = sum(read for read, op in zip(reads, ops) if op.gathers)
    return (float(len(ops)), 1e-6 * batch * sum(op.out_elements for op in ops), 1e-6 * batch * sum(reads),
            1e-6 * batch * gathered)


def fit_glue(model: LearnedLatency, samples: Sequence[tuple[Sequence[Op], int, float]]) -> dict[str, float]:
    """Fit ``model``'s between-the-layers term on ``(ops, batch, measured whole-model ms)``
    samples: non-negative least squares on what the summed op predictions leave over,
    each model weighted by 1 / its latency (relative errors count, not milliseconds)."""
    from scipy.optimize import nnls

    rows, rest, weights = [], [], []
    for ops, batch, ms in samples:
        rows.append([1.0, *glue_features(ops, batch)])
        rest.append(ms - sum(model.predict_op(op, batch) for op in ops))
        weights.append(1.0 / ms)
    w = np.array(weights)
    coef, _ = nnls(np.array(rows) * w[:, None], np.array(rest) * w)
    return {**{name: float(c) for name, c in zip(GLUE_TERMS, coef)}, "models": len(samples)}


def _tree_value(tree: dict[str, list], x: Sequence[float]) -> float:
    node = 0
    while not tree["leaf"][node]:
        node = tree["left"][node] if x[tree["feature"][node]] <= tree["threshold"][node] else tree["right"][node]
    return tree["value"][node]


# ----- fitting ------------------------------------------------------------------------------
def fit_kind(samples: Sequence[tuple[Op, int, float]], seed: int = 0) -> dict[str, Any]:
    """Fit one kind's regressor on ``(op, batch, measured ms)`` samples; its JSON form."""
    return export_regressor(fit_regressor(samples, seed), len(samples))


def monotone(kind: str) -> list[int]:
    """The monotonic constraint on each feature of ``kind``'s regressor."""
    return [CONSTRAINTS.get(kind, {}).get(name, c) for name, c in zip(FEATURES, MONOTONE)]


def fit_regressor(samples: Sequence[tuple[Op, int, float]], seed: int = 0):
    """scikit-learn's monotone boosted trees on log(ms) (one kind's samples)."""
    from sklearn.ensemble import HistGradientBoostingRegressor

    X = np.array([features(op, b) for op, b, _ in samples])
    y = np.log(np.array([max(ms, 1e-6) for _, _, ms in samples]))
    regressor = HistGradientBoostingRegressor(**{**REGRESSOR, "random_state": seed},
                                              monotonic_cst=monotone(op_kind(samples[0][0])))
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

    if kind == "attention":  # heads x head_dim as vision and small language transformers have them
        heads, head_dim = int(rng.choice([1, 2, 3, 4, 6, 8, 12])), int(rng.choice([8, 16, 32, 64]))
        queries = int(rng.choice([4, 16, 17, 49, 50, 64, 65, 196, 197, 256]))
        keys = queries if rng.random() < 0.75 else int(rng.choice([4, 16, 49, 64, 196, 256]))  # else cross-attention
        return Op("sample", "attention", queries, keys, head_dim, heads, queries, heads * head_dim)
    if kind == "linear":  # one row per sample (an MLP, a classifier) or a token sequence (a transformer)
        k, n = channels() * int(rng.choice([1, 2, 4])), channels()
        m = 1 if rng.random() < 0.5 else int(rng.choice([4, 16, 49, 64, 65, 196, 256]))
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


def profile(measure: Callable[[Op, int], float], name: str, device: str, samples_per_kind: int = SAMPLES_PER_KIND,
            rounds: int = 2, batches: Sequence[int] = BATCHES, seed: int = 0,
            progress: Callable[[str], None] | None = None, extra: Sequence[tuple[Op, int]] = (),
            remeasure: Callable[[Op, int], float] | None = None) -> LearnedLatency:
    """Measure random ops (and the ``extra`` ``(op, batch)`` pairs, e.g. the layers of real
    models), fit, then adaptive sampling: measure fresh ops, keep the worst predicted half
    and their neighbours, refit (``rounds`` times).  Finally, with ``remeasure`` (a fresh
    timing), every sample measured over 10% slower than predicted is timed again and the
    faster time kept before the last fit: other processes only ever add time, and on a
    shared machine they do so in bursts that spoil a run of consecutive samples."""
    rng = np.random.default_rng(seed)
    kinds = {}
    for kind in KINDS:
        data = [(op, batch, measure(op, batch)) for op, batch in extra if op_kind(op) == kind]
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
        if remeasure:
            suspects = [i for i, (op, batch, ms) in enumerate(data) if ms > 1.1 * model.predict_op(op, batch)]
            for i in suspects:
                op, batch, ms = data[i]
                data[i] = (op, batch, min(ms, remeasure(op, batch)))
            model = LearnedLatency(name, device, {kind: fit_kind(data, seed)})
            if progress:
                progress(f"{kind}: {len(suspects)} samples slower than predicted timed again")
        kinds[kind] = model.kinds[kind]
    return LearnedLatency(name, device, kinds)


def _neighbour(op: Op, rng: np.random.Generator) -> Op:
    """``op`` with its channel counts nudged (groups kept consistent)."""
    import dataclasses

    scale = float(rng.choice([0.75, 0.875, 1.125, 1.25]))
    if op.kind == "attention":  # a head more or fewer
        heads = max(1, op.groups + int(rng.choice([-1, 1])))
        return dataclasses.replace(op, groups=heads, in_channels=heads * op.k)
    cin = max(1, int(round(op.in_channels * scale)))
    if op.groups > 1:  # depthwise: stays depthwise (2 channels or more)
        cin = max(cin, 2)
        return dataclasses.replace(op, in_channels=cin, groups=cin, k=op.kernel[0] * op.kernel[1])
    if not op.geometry:
        return dataclasses.replace(op, k=cin, in_channels=cin, n=max(1, int(round(op.n * scale))))
    return dataclasses.replace(op, in_channels=cin, k=cin * op.kernel[0] * op.kernel[1],
                               n=max(1, int(round(op.n / scale))))
