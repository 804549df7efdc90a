"""Compare the search strategies on the built-in demo (a small residual CNN on scikit-learn digits).

Every strategy gets the same budget, the same number of trials and the same final fine-tune,
once per seed; the table gives, per strategy, the trials actually run, the test accuracy of
the chosen recipe after its final fine-tune (mean ± sample std over seeds), its change against the
uncompressed model, the FLOPs ratio and the wall time of one whole search (after one
untimed 1-trial warm-up search, so import and first-call costs are not charged to a strategy).

Run from the project root (about 4 minutes on an otherwise idle 2-core CPU):

    python benchmarks/compare_strategies.py [--trials 30] [--seeds 0,1,2] \
        [--budgets flops=0.3,flops=0.1] [--strategies bo,uniform,random] [--output FILE]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass

from autocompress.api import search


@dataclass
class Run:
    trials: int
    accuracy: float
    base_accuracy: float
    flops_ratio: float
    seconds: float


def run_once(budget: str, strategy: str, seed: int, trials: int) -> Run:
    with tempfile.TemporaryDirectory(prefix="autocompress-bench-") as out:
        start = time.perf_counter()
        result = search(budget, out=out, progress=False, trials=trials, strategy=strategy, seed=seed)
        seconds = time.perf_counter() - start
    base, compressed = result.recipe.metrics["base"], result.recipe.metrics["compressed"]
    return Run(int(result.recipe.search["trials"]), compressed["accuracy"], base["accuracy"],
               compressed["flops"] / base["flops"], seconds)


def mean_std(values: list[float]) -> str:
    mean = statistics.mean(values)
    return f"{mean:.2f} ± {statistics.stdev(values):.2f}" if len(values) > 1 else f"{mean:.2f}"


def table(budget: str, runs: dict[str, list[Run]]) -> str:
    lines = [
        f"### `{budget}`",
        "",
        "| strategy | trials | test accuracy % (mean ± std) | change vs base (pt) | FLOPs ratio (mean) "
        "| wall time per run (s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for strategy, rs in runs.items():
        trials = sorted({r.trials for r in rs})
        change = round(statistics.mean(r.accuracy - r.base_accuracy for r in rs), 2) + 0.0  # no "-0.00"
        lines.append(
            f"| {strategy} | {'/'.join(map(str, trials))} | {mean_std([r.accuracy for r in rs])} | {change:+.2f} "
            f"| {statistics.mean(r.flops_ratio for r in rs):.3f} | {statistics.mean(r.seconds for r in rs):.1f} |"
        )
    base = statistics.mean(r.base_accuracy for rs in runs.values() for r in rs)
    lines += ["", f"Base (uncompressed) test accuracy: {base:.2f}%."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30, help="trials per search (default 30)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--budgets", default="flops=0.3,flops=0.1", help="comma-separated budgets")
    parser.add_argument("--strategies", default="bo,uniform,random", help="comma-separated strategies")
    parser.add_argument("--output", help="also write the markdown tables to this file")
    args = parser.parse_args(argv)
    seeds = [int(s) for s in args.seeds.split(",")]
    budgets, strategies = args.budgets.split(","), args.strategies.split(",")

    run_once(budgets[0], strategies[0], seeds[0], 1)  # warm-up, not reported
    tables = []
    for budget in budgets:
        runs: dict[str, list[Run]] = {}
        for strategy in strategies:
            for seed in seeds:
                run = run_once(budget, strategy, seed, args.trials)
                runs.setdefault(strategy, []).append(run)
                print(f"{budget} {strategy} seed={seed}: {run.trials} trials, test acc {run.accuracy:.2f}%, "
                      f"FLOPs ratio {run.flops_ratio:.3f}, {run.seconds:.1f}s", file=sys.stderr, flush=True)
        tables.append(table(budget, runs))
        print(tables[-1] + "\n", flush=True)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write("\n\n".join(tables) + "\n")


if __name__ == "__main__":
    main()
