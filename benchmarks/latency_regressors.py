"""Would another regressor make the learned CPU latency model more accurate?

Refits the learned model's training samples with other scikit-learn regressors and scores
each on the held-out random ops, all from the measurements ``latency_models.py --part
learned --keep DIR`` left in DIR (nothing is measured again: the profile is replayed from
DIR's cache, which reproduces its samples exactly, and the held-out ops are drawn with the
same seed).  Prints MAPE and the share within +-10% per op kind and regressor.  The
replay covers the random ops and their adaptive rounds only: the real-model layers and
re-timed samples ``autocompress profile`` adds since features version 2 are left out, so
ops the replay picks differently are timed afresh.

    python benchmarks/latency_models.py --part learned --keep /tmp/latkeep
    python benchmarks/latency_regressors.py --keep /tmp/latkeep
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import RidgeCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import PolynomialFeatures, StandardScaler

import autocompress.latency_models.learned as learned
from autocompress.latency_models.measured import MeasuredLatency, device_key

KINDS = ("conv", "pointwise", "depthwise", "linear")
REGRESSORS = {
    "boosted trees, monotone (shipped)": lambda: HistGradientBoostingRegressor(
        max_iter=300, learning_rate=0.08, max_leaf_nodes=15, min_samples_leaf=3,
        monotonic_cst=list(learned.MONOTONE), random_state=0),
    "boosted trees, unconstrained": lambda: HistGradientBoostingRegressor(
        max_iter=300, learning_rate=0.08, max_leaf_nodes=15, min_samples_leaf=3, random_state=0),
    "boosted trees, slower (800 x 0.03, 8 leaves)": lambda: HistGradientBoostingRegressor(
        max_iter=800, learning_rate=0.03, max_leaf_nodes=8, min_samples_leaf=5,
        monotonic_cst=list(learned.MONOTONE), random_state=0),
    "ridge": lambda: RidgeCV(alphas=np.logspace(-3, 2, 12)),
    "quadratic ridge": lambda: make_pipeline(StandardScaler(), PolynomialFeatures(2),
                                             RidgeCV(alphas=np.logspace(-3, 3, 13))),
}


def training_samples(keep: Path, samples: int, rounds: int, seed: int) -> dict[str, list]:
    """The profile's final samples per kind, replayed from the kept measurement cache."""
    cache = MeasuredLatency("cpu", cache=str(keep / "fit-cache.json"))
    captured: dict[str, list] = {}
    fit_kind = learned.fit_kind

    def capture(data, seed=0):
        captured[learned.op_kind(data[0][0])] = list(data)
        return fit_kind(data, seed)

    learned.fit_kind = capture
    try:
        learned.profile(cache.predict_op, "replay", device_key("cpu"), samples, rounds, seed=seed)
    finally:
        learned.fit_kind = fit_kind
    return captured


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", required=True, type=Path, help="the --keep folder of latency_models.py")
    parser.add_argument("--samples", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--held-out", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    train = training_samples(args.keep, args.samples, args.rounds, args.seed)
    held = MeasuredLatency("cpu", cache=str(args.keep / "held1.json"))
    rng = np.random.default_rng(args.seed + 1000)  # as latency_models.py draws its held-out ops
    tests = {k: [(learned.random_op(k, rng), int(rng.choice([1, 8, 32]))) for _ in range(args.held_out)]
             for k in KINDS}
    print("| regressor | " + " | ".join(f"{k} MAPE | {k} within ±10%" for k in KINDS) + " |")
    print("|---|" + "---:|" * (2 * len(KINDS)))
    for name, make in REGRESSORS.items():
        cells = []
        for kind in KINDS:
            data = train[kind]
            model = make().fit(np.array([learned.features(op, b) for op, b, _ in data]),
                               np.log([ms for *_, ms in data]))
            ops = tests[kind]
            pred = np.exp(model.predict(np.array([learned.features(op, b) for op, b in ops])))
            error = np.abs(pred / np.array([held.predict_op(op, b) for op, b in ops]) - 1)
            cells += [f"{100 * error.mean():.1f}%", f"{100 * (error <= 0.1).mean():.0f}%"]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
