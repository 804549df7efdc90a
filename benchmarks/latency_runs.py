"""Several kept runs of the learned-latency benchmark side by side: how far apart two runs'
measurements of the same held-out ops are, and each run's fitted model scored against the
fastest measurement of every held-out op over all the runs.

``latency_models.py --part learned --keep DIR`` measures its held-out ops twice, back to
back, for a noise floor; runs minutes apart on a shared machine can differ more than that
(a burst of other work during one run's measurements).  The held-out ops are the same in
every run with the same ``--seed`` (and the same op kinds), so their measurements can be
compared across runs, and the fastest of all of them is the reference least spoiled by
bursts (other work only ever adds time).  A model is scored on the held-out ops its own
profile did not measure.  Nothing is measured.

    python benchmarks/latency_runs.py DIR1 DIR2 [DIR3 ...]
"""
from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
from latency_regressors import cached

from autocompress.latency_models import load_latency_model
from autocompress.latency_models.learned import LearnedLatency


def agreement(first: dict, second: dict) -> str:
    err = np.array([abs(second[key][2] / first[key][2] - 1) for key in first if key in second])
    return f"{len(err)} | {100 * err.mean():.1f}% | {100 * (err <= 0.1).mean():.0f}%"


def op_model(path: Path) -> LearnedLatency:
    """A kept run's op regressors.  Features versions 3 and 4 differ only in what runs
    between the layers, not in the ops, so version 3's regressors are scored too."""
    params = json.loads(path.read_text())["params"]
    if params.get("features") == 3:
        return LearnedLatency(path.parent.name, params["device"], params["kinds"])
    return load_latency_model(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="--keep folders of latency_models.py --part learned")
    args = parser.parse_args()
    held = {run: [cached(run / "held1.json"), cached(run / "held2.json")] for run in args.runs}
    print("| measurements of the same held-out ops | ops | MAPE | within ±10% |\n|---|---:|---:|---:|")
    for run, (first, second) in held.items():
        print(f"| {run}: first against second (back to back) | {agreement(first, second)} |")
    for a, b in itertools.combinations(args.runs, 2):
        print(f"| {a} against {b} (first measurements) | {agreement(held[a][0], held[b][0])} |")
    fastest: dict[str, tuple] = {}
    for measurements in held.values():
        for cache in measurements:
            for key, (op, batch, ms) in cache.items():
                if key not in fastest or ms < fastest[key][2]:
                    fastest[key] = (op, batch, ms)
    print("\n| model | held-out ops | MAPE against the fastest measurement | within ±10% |\n|---|---:|---:|---:|")
    for run in args.runs:
        model, trained = op_model(run / "learned-cpu.json"), cached(run / "fit-cache.json")
        err = np.array([abs(model.predict_op(op, batch) / ms - 1) for key, (op, batch, ms) in fastest.items()
                        if key not in trained])
        print(f"| {run} | {len(err)} | {100 * err.mean():.1f}% | {100 * (err <= 0.1).mean():.0f}% |")


if __name__ == "__main__":
    main()
