"""How repeatable is one op's timing on this machine, by the statistic taken of its repeats?

Times 60 random ops (15 per kind, batch 1/8/32) in three passes, each op 5 warm-up runs
and 20 timed runs per pass, and compares the passes op by op for the median, the fastest
run and the 20th percentile: the share of ops whose two passes agree within +-10% and
+-5%, and the mean relative difference.  The statistic that repeats best is what
``MeasuredLatency`` (and so ``autocompress profile``) records.

    python benchmarks/timing_noise.py
"""
from __future__ import annotations

import argparse
import statistics

import numpy as np

from autocompress.latency_models.learned import KINDS, random_op
from autocompress.latency_models.measured import device_key, op_module, run_times


def one_pass(modules, repeats: int) -> np.ndarray:
    rows = []
    for module, x in modules:
        times = sorted(run_times(module, x, repeats, warmup=5))
        rows.append((statistics.median(times), times[0], times[len(times) // 5]))
    return np.array(rows)


def agreement(a: np.ndarray, b: np.ndarray) -> str:
    error = np.abs(a / b - 1)
    return f"{100 * error.mean():.1f}% | {100 * (error <= 0.1).mean():.0f}% | {100 * (error <= 0.05).mean():.0f}%"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-kind", type=int, default=15)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    ops = [(random_op(kind, rng), int(rng.choice([1, 8, 32]))) for kind in KINDS for _ in range(args.per_kind)]
    modules = [op_module(op, batch) for op, batch in ops]
    passes = [one_pass(modules, args.repeats) for _ in range(3)]
    print(f"device: {device_key('cpu')}; {len(ops)} ops, {args.repeats} timed runs per pass\n")
    print("| statistic | passes | mean difference | within ±10% | within ±5% |\n|---|---|---:|---:|---:|")
    for column, name in enumerate(("median", "fastest run", "20th percentile")):
        for i, j in ((0, 1), (1, 2), (0, 2)):
            print(f"| {name} | {i + 1} vs {j + 1} | {agreement(passes[i][:, column], passes[j][:, column])} |")


if __name__ == "__main__":
    main()
