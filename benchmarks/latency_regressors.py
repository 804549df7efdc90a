"""Would another regressor make the learned CPU latency model more accurate, or is it the
samples that limit it?

Refits every op sample the profile of ``latency_models.py --part learned --keep DIR``
measured (DIR's fit cache: the random ops, the adaptive rounds, the layers of the profiled
zoo models, re-timed samples at their faster time) with other scikit-learn regressors,
and scores each on every held-out op of that run (DIR/held1.json, less any op the fit
cache also has) and on its own training samples.  A regressor that fits its training
samples far better than the held-out ones is short of samples, not of capacity; the
learning curve (the shipped regressor on a quarter, half, three quarters and all of the
samples) shows how much more samples would buy.  Also: the measured attention ops that
differ only in their head dimension (is the device monotone in it?).  The noise floor is
the held-out ops' second measurement (DIR/held2.json).  Nothing is measured again.

    python benchmarks/latency_models.py --part learned --keep /tmp/latkeep
    python benchmarks/latency_regressors.py --keep /tmp/latkeep
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from sklearn.ensemble import ExtraTreesRegressor, HistGradientBoostingRegressor
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler

import autocompress.latency_models.learned as learned
from autocompress.core.ops import Op
from autocompress.latency_models.measured import device_key

KINDS = learned.KINDS
SHIPPED = learned.REGRESSOR  # what autocompress profile fits
REGRESSORS = {
    "boosted trees, monotone (shipped)": lambda kind: HistGradientBoostingRegressor(
        **SHIPPED, monotonic_cst=learned.monotone(kind)),
    "boosted trees, monotone in every feature": lambda kind: HistGradientBoostingRegressor(
        **SHIPPED, monotonic_cst=list(learned.MONOTONE)),
    "boosted trees, monotone, 1000 x 0.05, 31 leaves": lambda kind: HistGradientBoostingRegressor(
        **{**SHIPPED, "max_iter": 1000, "learning_rate": 0.05, "max_leaf_nodes": 31, "min_samples_leaf": 2},
        monotonic_cst=learned.monotone(kind)),
    "boosted trees, unconstrained": lambda kind: HistGradientBoostingRegressor(**SHIPPED),
    "boosted trees, unconstrained, 1000 x 0.05": lambda kind: HistGradientBoostingRegressor(
        **{**SHIPPED, "max_iter": 1000, "learning_rate": 0.05}),
    "extra trees (500)": lambda kind: ExtraTreesRegressor(500, random_state=0, n_jobs=-1),
    "ridge": lambda kind: RidgeCV(alphas=np.logspace(-3, 2, 12)),
    "quadratic ridge": lambda kind: make_pipeline(StandardScaler(), PolynomialFeatures(2),
                                             RidgeCV(alphas=np.logspace(-3, 3, 13))),
}


def parse(key: str) -> tuple[Op, int]:
    """The ``(op, batch)`` of a measured-op cache key (``Op.signature()|b=batch``)."""
    signature, batch = key.rsplit("|b=", 1)
    d = dict(item.split("=", 1) for item in signature.split(","))
    op = Op("sample", d["kind"], int(d["m"]), int(d["n"]), int(d["k"]), int(d["groups"]), int(d["in_positions"]),
            int(d["in_channels"]), int(d["bits"]), float(d["sparsity"]), d["pattern"],
            tuple(int(v) for v in d["kernel"].split("x")),
            tuple(int(v) for v in d["geometry"].split("x")) if d["geometry"] else ())
    return op, int(batch)


def cached(path: Path) -> dict[str, tuple[Op, int, float]]:
    """Every ``(op, batch, ms)`` a measured-op cache file holds for this machine."""
    entries = json.loads(path.read_text())[device_key("cpu")]
    return {key: (*parse(key), ms) for key, ms in entries.items()}


def errors(model, samples) -> np.ndarray:
    X = np.array([learned.features(op, b) for op, b, _ in samples])
    return np.abs(np.exp(model.predict(X)) / np.array([ms for *_, ms in samples]) - 1)


def cells(err: np.ndarray) -> str:
    return f"{100 * err.mean():.1f}% | {100 * (err <= 0.1).mean():.0f}%"


def head_dimension_pairs(samples: dict[str, tuple[Op, int, float]]) -> None:
    """Is this CPU monotone in attention's head dimension?  Every pair of measured attention
    ops that differ only in it, by the head dimension doubled."""
    attention = {(op.m, op.n, op.k, op.groups, b): ms for op, b, ms in samples.values() if op.kind == "attention"}
    ratios: dict[int, list[float]] = {}
    for (m, n, k, heads, b), ms in attention.items():
        wider = attention.get((m, n, 2 * k, heads, b))
        if wider is not None:
            ratios.setdefault(k, []).append(wider / ms)
    print("\n| head dimension doubled (attention) | pairs | wider head >10% faster | time ratio (min-median-max) |"
          "\n|---|---:|---:|---:|")
    for k, r in sorted(ratios.items()):
        print(f"| {k} to {2 * k} | {len(r)} | {sum(x < 0.9 for x in r)} | "
              f"{min(r):.2f}-{float(np.median(r)):.2f}-{max(r):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", required=True, type=Path, help="the --keep folder of latency_models.py")
    args = parser.parse_args()
    train = cached(args.keep / "fit-cache.json")
    first, second = cached(args.keep / "held1.json"), cached(args.keep / "held2.json")
    held = {key: sample for key, sample in first.items() if key not in train}
    by_kind = {kind: ([s for s in train.values() if learned.op_kind(s[0]) == kind],
                      [s for s in held.values() if learned.op_kind(s[0]) == kind]) for kind in KINDS}
    by_kind = {kind: data for kind, data in by_kind.items() if data[0] and data[1]}
    noise = np.array([abs(second[key][2] / ms - 1) for key, (_, _, ms) in held.items() if key in second])
    print(f"{len(train)} training samples, {len(held)} held-out ops ("
          + ", ".join(f"{kind} {len(t)}/{len(h)}" for kind, (t, h) in by_kind.items()) + ")")
    print(f"noise floor (held-out ops measured twice): MAPE {100 * noise.mean():.1f}%, "
          f"within ±10% {100 * (noise <= 0.1).mean():.0f}%\n")
    print("| regressor | held-out MAPE | held-out within ±10% | training MAPE | training within ±10% | "
          + " | ".join(f"{kind} held-out MAPE" for kind in by_kind) + " |")
    print("|---|---:|---:|---:|---:|" + "---:|" * len(by_kind))
    for name, make in REGRESSORS.items():
        test, fit, per_kind = [], [], []
        for kind, (samples, held_out) in by_kind.items():
            X = np.array([learned.features(op, b) for op, b, _ in samples])
            model = make(kind).fit(X, np.log([ms for *_, ms in samples]))
            test.append(errors(model, held_out))
            fit.append(errors(model, samples))
            per_kind.append(f"{100 * test[-1].mean():.1f}%")
        print(f"| {name} | {cells(np.concatenate(test))} | {cells(np.concatenate(fit))} | "
              + " | ".join(per_kind) + " |", flush=True)
    head_dimension_pairs(train)
    # the learning curve: the shipped regressor on a random share of each kind's samples
    print("\n| share of the samples (shipped regressor) | samples | held-out MAPE | held-out within ±10% |"
          "\n|---|---:|---:|---:|")
    rng = np.random.default_rng(0)
    for share in (0.25, 0.5, 0.75, 1.0):
        test, count = [], 0
        for kind, (samples, held_out) in by_kind.items():
            chosen = [samples[i] for i in rng.permutation(len(samples))[: int(share * len(samples))]]
            count += len(chosen)
            test.append(errors(REGRESSORS["boosted trees, monotone (shipped)"](kind).fit(
                np.array([learned.features(op, b) for op, b, _ in chosen]), np.log([ms for *_, ms in chosen])),
                held_out))
        print(f"| {100 * share:.0f}% | {count} | {cells(np.concatenate(test))} |", flush=True)


if __name__ == "__main__":
    main()
