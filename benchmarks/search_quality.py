"""Search quality: every strategy on the same workload, budgets, trials and final fine-tune.

For each budget, strategy and seed one ``autocompress.api.search`` runs with ``--trials``
search trials and the default final fine-tune; recorded per run: the chosen recipe's test
accuracy after its final fine-tune and its change against the uncompressed model, its FLOPs
and parameter ratios, the evaluations the search made (search trials plus sensitivity-scan
trials, ``purpose == "scan"`` in ``result.history``), and the wall time of the whole search
(after one untimed 1-trial warm-up search, so import and first-call costs are not charged
to a strategy).  Writes every run to a JSON file, prints a markdown table per budget (mean ±
sample std over seeds) and writes the sample-efficiency curves (best feasible proxy
accuracy after each evaluation, mean over seeds, per strategy) as a PNG when matplotlib is
installed, else as a CSV.

Run from the project root (one torch thread by default):

    python benchmarks/search_quality.py [--workload demo|mnist] [--strategies bo,uniform,random] \
        [--budgets flops=0.3,params=0.1] [--seeds 0,1,2] [--trials 20] [--output search_quality.json] \
        [--curves search_quality.png]
    python benchmarks/search_quality.py --report a.json [b.json ...]   # tables and curves again
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from autocompress.api import search
from autocompress.core.errors import AutocompressError
from autocompress.core.trial import COMPLETE, SCAN
from autocompress.search import STRATEGIES

WORKLOADS = ("demo", "mnist")


def workload_objects(name: str) -> dict:
    """``model=`` and ``data=`` for ``search`` (none for the demo, its default)."""
    if name == "demo":
        return {}
    from autocompress.models.datasets import mnist_data, mnist_lenet5

    return {"model": mnist_lenet5(), "data": mnist_data()}


def best_so_far(history) -> list[float | None]:
    """After each finished evaluation (scans included), the best feasible search-trial proxy
    accuracy so far (None until one is feasible)."""
    best, curve = None, []
    for record in history:
        if record.state != COMPLETE:
            continue
        if record.purpose != SCAN and record.feasible and (best is None or record.score > best):
            best = record.score
        curve.append(best)
    return curve


def run_once(workload: dict, budget: str, strategy: str, seed: int, trials: int | None, **settings) -> dict:
    with tempfile.TemporaryDirectory(prefix="autocompress-bench-") as out:
        start = time.perf_counter()
        result = search(budget, out=out, progress=False, trials=trials, strategy=strategy, seed=seed, **workload,
                        **settings)
        seconds = time.perf_counter() - start
    base, compressed = result.recipe.metrics["base"], result.recipe.metrics["compressed"]
    finished = [r for r in result.history if r.state == COMPLETE]
    return {
        "budget": budget, "strategy": strategy, "seed": seed,
        "search_trials": int(result.recipe.search["trials"]),
        "scan_trials": sum(r.purpose == SCAN for r in finished),
        "evaluations": len(finished), "failed": sum(r.state != COMPLETE for r in result.history),
        "test_accuracy": compressed["accuracy"], "base_test_accuracy": base["accuracy"],
        "best_proxy_accuracy": result.recipe.search["best_proxy_accuracy"],
        "flops_ratio": compressed["flops"] / base["flops"], "params_ratio": compressed["params"] / base["params"],
        "seconds": seconds, "best_so_far": best_so_far(result.history),
    }


def mean_std(values: list[float], digits: int = 2) -> str:
    mean = statistics.mean(values)
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def table(budget: str, runs: list[dict]) -> str:
    lines = [
        f"### `{budget}`", "",
        "| strategy | seeds | evaluations (search + scan) | test accuracy % | change vs base (pt) | FLOPs ratio "
        "| params ratio | wall time per run (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    failed = [r for r in runs if "error" in r]
    runs = [r for r in runs if "error" not in r]
    for strategy in dict.fromkeys(r["strategy"] for r in runs):
        rs = [r for r in runs if r["strategy"] == strategy]
        search_trials = "/".join(map(str, sorted({r["search_trials"] for r in rs})))
        scans = "/".join(map(str, sorted({r["scan_trials"] for r in rs})))
        change = round(statistics.mean(r["test_accuracy"] - r["base_test_accuracy"] for r in rs), 2) + 0.0
        lines.append(
            f"| {strategy} | {len(rs)} | {search_trials} + {scans} | {mean_std([r['test_accuracy'] for r in rs])} "
            f"| {change:+.2f} | {mean_std([r['flops_ratio'] for r in rs], 3)} "
            f"| {mean_std([r['params_ratio'] for r in rs], 3)} | {mean_std([r['seconds'] for r in rs], 1)} |"
        )
    base = statistics.mean(r["base_test_accuracy"] for r in runs)
    notes = [f"{r['strategy']} (seed {r['seed']}): {r['error']}" for r in failed]
    return "\n".join(lines + ["", f"Base (uncompressed) test accuracy: {base:.2f}%."] + notes)


def mean_curve(runs: list[dict]) -> list[float | None]:
    """Mean over runs of best-so-far at each evaluation; None where a run has not yet found
    a feasible trial or has stopped."""
    length = max(len(r["best_so_far"]) for r in runs)
    out = []
    for i in range(length):
        values = [r["best_so_far"][i] if i < len(r["best_so_far"]) else None for r in runs]
        out.append(None if None in values else statistics.mean(values))
    return out


def curves(runs: list[dict]) -> dict[str, dict[str, list[float | None]]]:
    """Mean best-so-far curves by budget, then strategy."""
    runs = [r for r in runs if "error" not in r]
    out: dict[str, dict[str, list[float | None]]] = {}
    for r in runs:
        out.setdefault(r["budget"], {}).setdefault(r["strategy"], [])
    for budget, by_strategy in out.items():
        for strategy in by_strategy:
            by_strategy[strategy] = mean_curve([r for r in runs if r["budget"] == budget and r["strategy"] == strategy])
    return out


def write_curves(runs: list[dict], path: Path) -> Path:
    """The sample-efficiency curves as a PNG (matplotlib) or, without matplotlib or for a
    ``.csv`` path, a CSV of budget, strategy, evaluation, mean best proxy accuracy."""
    data = curves(runs)
    try:
        if path.suffix == ".csv":
            raise ImportError
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        path = path.with_suffix(".csv")
        with open(path, "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["budget", "strategy", "evaluation", "best_feasible_proxy_accuracy"])
            for budget, by_strategy in data.items():
                for strategy, curve in by_strategy.items():
                    writer.writerows([budget, strategy, i + 1, "" if v is None else f"{v:.4f}"]
                                     for i, v in enumerate(curve))
        return path
    fig, axes = plt.subplots(1, len(data), figsize=(5 * len(data), 4), squeeze=False)
    for ax, (budget, by_strategy) in zip(axes[0], data.items()):
        for strategy, curve in by_strategy.items():
            points = [(i + 1, v) for i, v in enumerate(curve) if v is not None]
            if points:
                ax.step(*zip(*points), where="post", marker=".", label=strategy)
        ax.set(title=budget, xlabel="evaluation (search + scan trials)", ylabel="best feasible proxy accuracy %")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(runs: list[dict], curves_path: Path) -> None:
    for budget in dict.fromkeys(r["budget"] for r in runs):
        print(table(budget, [r for r in runs if r["budget"] == budget]) + "\n")
    print(f"sample-efficiency curves: {write_curves(runs, curves_path)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=WORKLOADS, default="demo")
    parser.add_argument("--strategies", default="bo,uniform,random", help="comma-separated strategies")
    parser.add_argument("--budgets", default="flops=0.3,params=0.1", help="comma-separated budgets")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--trials", type=int, help="search trials per run (default: each strategy's own)")
    parser.add_argument("--final-finetune-steps", type=int, default=300,
                        help="distillation fine-tune of every chosen recipe (default 300, the CLI's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--output", default="search_quality.json", help="JSON of every run")
    parser.add_argument("--curves", default="search_quality.png", help="sample-efficiency plot (.png or .csv)")
    parser.add_argument("--report", metavar="JSON", nargs="+",
                        help="only print the tables and write the curves of these JSONs (runs of one workload)")
    args = parser.parse_args(argv)
    if args.report:
        runs = []
        for name in args.report:
            with open(name, encoding="utf-8") as f:
                runs += json.load(f)["runs"]
        report(runs, Path(args.curves))
        return
    strategies, budgets = args.strategies.split(","), args.budgets.split(",")
    unknown = [s for s in strategies if s not in STRATEGIES]
    if unknown:
        parser.error(f"unknown strategies {', '.join(unknown)}; use some of {', '.join(STRATEGIES)}")
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(args.threads)
    workload = workload_objects(args.workload)

    run_once(workload, budgets[0], strategies[0], seeds[0], 1)  # warm-up, not reported
    runs: list[dict] = []
    for budget in budgets:
        for strategy in strategies:
            for seed in seeds:
                try:
                    run = run_once(workload, budget, strategy, seed, args.trials,
                                   final_finetune_steps=args.final_finetune_steps)
                except AutocompressError as exc:  # e.g. a rank-only space that cannot reach the budget
                    runs.append({"budget": budget, "strategy": strategy, "seed": seed, "error": str(exc)})
                    print(f"{budget} {strategy} seed={seed}: {exc}", file=sys.stderr, flush=True)
                    continue
                runs.append(run)
                print(f"{budget} {strategy} seed={seed}: {run['evaluations']} evaluations, test acc "
                      f"{run['test_accuracy']:.2f}%, FLOPs ratio {run['flops_ratio']:.3f}, {run['seconds']:.1f}s",
                      file=sys.stderr, flush=True)
                with open(args.output, "w", encoding="utf-8") as f:  # after every run: a stopped grid keeps its runs
                    json.dump({"schema": 1, "workload": args.workload, "args": vars(args),
                               "load_average": os.getloadavg(), "runs": runs}, f, indent=1)
    report(runs, Path(args.curves))


if __name__ == "__main__":
    main()
