"""Sample efficiency on the cost objective: after how many search trials each strategy reaches
its final cheapest point within the accuracy drop (Condensa's paper: a good point within at
most 10 samples).

For each strategy and seed one ``autocompress.api.search`` runs on the built-in demo with
``objective="cost"`` and ``max_accuracy_drop`` (points below the base model's proxy accuracy),
``--trials`` search trials and no final fine-tune (only the search is measured).  Recorded
per run, over the search trials in order (scans are evaluations too, counted apart): the
cheapest feasible trial so far whose proxy accuracy is within the drop (its primary cost as a
fraction of the base's), the search trial at which the final cheapest was first reached, the
first search trial within 10% of that final cost, the evaluations (search + scans) spent by
then, and the wall time.  Writes every run to a JSON file and prints a markdown table.

Run from the project root (one torch thread by default):

    OMP_NUM_THREADS=1 python benchmarks/condensa_cost.py [--strategies condensa,random,bo] [--seeds 0] \
        [--budget flops=0.8] [--max-accuracy-drop 1] [--trials 20] [--output condensa_cost.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time

import torch

from autocompress.api import search
from autocompress.core.errors import AutocompressError
from autocompress.core.trial import COMPLETE, SCAN
from autocompress.engine.study import Study, study_location

NEAR = 1.10  # "within 10% of the final cost"


def cheapest_so_far(history, floor: float, metric: str, base: float) -> list[float | None]:
    """After each search trial (in order), the least cost (fraction of the base) of a
    feasible complete search trial at or above ``floor`` so far (None before one is)."""
    best, curve = None, []
    for record in history:
        if record.purpose == SCAN:
            continue
        if record.state == COMPLETE and record.feasible and record.score >= floor:
            cost = record.metrics[metric] / base
            best = cost if best is None else min(best, cost)
        curve.append(best)
    return curve


def first_at(curve: list[float | None], target: float) -> int | None:
    """The 1-based search trial at which ``curve`` first reaches ``target`` or below."""
    return next((i + 1 for i, v in enumerate(curve) if v is not None and v <= target + 1e-12), None)


def evaluations_by(history, search_trial: int | None) -> int | None:
    """Evaluations (search and scan trials) spent up to the ``search_trial``-th search trial."""
    if search_trial is None:
        return None
    seen = 0
    for count, record in enumerate(history, 1):
        seen += record.purpose != SCAN
        if seen == search_trial:
            return count
    return None


def run_once(budget: str, strategy: str, seed: int, trials: int, drop: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="autocompress-bench-") as out:
        start = time.perf_counter()
        result = search(budget, out=out, progress=False, trials=trials, strategy=strategy, seed=seed,
                        objective="cost", max_accuracy_drop=drop, final_finetune_steps=0)
        seconds = time.perf_counter() - start
        study = Study.open(*study_location(out))
        base_score = study.base["proxy_accuracy"]
    metric = budget.split("=")[0]
    base = result.recipe.metrics["base"][metric]
    floor = base_score - drop
    curve = cheapest_so_far(result.history, floor, metric, base)
    final = curve[-1] if curve else None
    reached = first_at(curve, final) if final is not None else None
    near = first_at(curve, NEAR * final) if final is not None else None
    return {
        "budget": budget, "strategy": strategy, "seed": seed, "max_accuracy_drop": drop,
        "base_proxy_accuracy": base_score, "floor": floor, "search_trials": len(curve),
        "scan_trials": sum(r.purpose == SCAN and r.state == COMPLETE for r in result.history),
        "final_cost": final, "final_trial_reached_at": reached, "within_10pct_at": near,
        "evaluations_to_final": evaluations_by(result.history, reached),
        "recipe_trial": result.recipe.search["best_trial"], "seconds": seconds, "cheapest_so_far": curve,
    }


def _mean(values, digits: int) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean = statistics.mean(values)
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def table(runs: list[dict]) -> str:
    lines = [
        "| strategy | seeds | search + scan trials | final cost (fraction of base) | final reached at search trial "
        "| within 10% at search trial | evaluations to final | wall time (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for strategy in dict.fromkeys(r["strategy"] for r in runs):
        rs = [r for r in runs if r["strategy"] == strategy]
        scans = "/".join(map(str, sorted({r["scan_trials"] for r in rs})))
        searched = "/".join(map(str, sorted({r["search_trials"] for r in rs})))
        lines.append(
            f"| {strategy} | {len(rs)} | {searched} + {scans} | {_mean([r['final_cost'] for r in rs], 3)} "
            f"| {_mean([r['final_trial_reached_at'] for r in rs], 1)} | {_mean([r['within_10pct_at'] for r in rs], 1)} "
            f"| {_mean([r['evaluations_to_final'] for r in rs], 1)} | {_mean([r['seconds'] for r in rs], 1)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--strategies", default="condensa,random,bo", help="comma-separated strategies")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument("--budget", default="flops=0.8", help="budget; its metric is the cost (default flops=0.8)")
    parser.add_argument("--max-accuracy-drop", type=float, default=1.0, help="points below the base proxy (default 1)")
    parser.add_argument("--trials", type=int, default=20, help="search trials per run (default 20)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--output", default="condensa_cost.json", help="JSON of every run")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = []
    for strategy in args.strategies.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            try:
                run = run_once(args.budget, strategy, seed, args.trials, args.max_accuracy_drop)
            except AutocompressError as exc:
                print(f"{strategy} seed {seed}: {exc}", file=sys.stderr)
                continue
            runs.append(run)
            print(f"{strategy} seed {seed}: final cost {run['final_cost']} reached at search trial "
                  f"{run['final_trial_reached_at']} ({run['seconds']:.0f} s)", file=sys.stderr)
    with open(args.output, "w", encoding="utf-8") as f:
        json.dump({"argv": sys.argv[1:], "runs": runs}, f, indent=1)
    print(f"### `--objective cost --max-accuracy-drop {args.max_accuracy_drop:g}`, budget `{args.budget}`, "
          f"{args.trials} search trials, demo\n")
    print(table(runs))


if __name__ == "__main__":
    main()
