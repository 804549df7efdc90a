"""Search quality: every strategy on the same workloads, budgets, trials or seconds, and final fine-tune.

For each workload, budget, strategy and seed one ``autocompress.api.search`` runs, either
with ``--trials`` search trials (equal evaluations) or, with ``--seconds S``, with as many
trials as start within S seconds of search (equal wall time: ``time_limit``; sensitivity
scans count against the time, the trial running at S finishes), then the final fine-tune.
Recorded per run: the chosen recipe's test accuracy after its final fine-tune and its
change against the uncompressed model, its FLOPs and parameter ratios, the evaluations the
search made (search trials plus sensitivity-scan trials, ``purpose == "scan"`` in
``result.history``), the wall time of the whole search (after one untimed 1-trial warm-up
search per workload, so import and first-call costs are not charged to a strategy), the
seconds of trials, and after each finished evaluation the best feasible proxy accuracy so
far and the seconds since the trials started at which it finished.  Writes every run to a
JSON file, prints a markdown table per workload and budget (mean ± sample std over seeds;
"evaluations to 0.5 pt": how many a run took until its best-so-far came within 0.5 pt of
its final best proxy accuracy) and writes the curves of best-so-far (mean over seeds, per
strategy, one panel per workload and budget) against evaluations and, for ``--seconds``
runs, also against seconds, as a PNG when matplotlib is installed, else as a CSV.

Workloads: ``demo`` (the bundled demo), ``mnist`` (LeNet-5 on MNIST), ``mnist-lenet300``
(LeNet-300-100 on MNIST; both trained once and cached), ``resnet20`` and
``mobilenetv2_small`` (the zoo's, on their self-labelled synthetic data).

Run from the project root (one torch thread by default):

    python benchmarks/search_quality.py [--workload demo|mnist|mnist-lenet300|resnet20|mobilenetv2_small[,...]] \
        [--strategies bo,uniform,random] [--budgets flops=0.3,params=0.1] [--seeds 0,1,2] \
        [--trials 20 | --seconds 600] [--final-finetune-steps 300] [--channel-multiple 8] \
        [--output search_quality.json] [--curves search_quality.png]
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

import optuna
import torch

from autocompress.api import search
from autocompress.core.errors import AutocompressError
from autocompress.core.trial import COMPLETE, SCAN
from autocompress.engine.study import STUDY_NAME
from autocompress.search import STRATEGIES

WORKLOADS = ("demo", "mnist", "mnist-lenet300", "resnet20", "mobilenetv2_small")
NEAR_BEST = 0.5  # points of proxy accuracy: "evaluations to 0.5 pt" of the final best


def workload_objects(name: str) -> dict:
    """``model=`` and ``data=`` for ``search`` (none for the demo, its default)."""
    if name == "demo":
        return {}
    if name in ("mnist", "mnist-lenet300"):
        from autocompress.models.datasets import mnist_data, mnist_lenet5, mnist_lenet300_100

        return {"model": mnist_lenet5() if name == "mnist" else mnist_lenet300_100(), "data": mnist_data()}
    from autocompress.models import zoo

    return {"model": zoo.MODELS[name].factory(), "data": getattr(zoo, f"{name}_data")()}


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


def finish_seconds(out: str, history, time_limit: float | None) -> list[float]:
    """For each finished evaluation of ``best_so_far``, the seconds from the start of the
    trials to its finish: from the study's clock (its deadline less ``time_limit``), else
    from the first trial's start."""
    study = optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{Path(out) / 'study.db'}")
    trials = {t.number: t for t in study.get_trials(deepcopy=False)}
    deadline = study.user_attrs.get("deadline")
    if deadline is not None and time_limit is not None:
        origin = deadline - time_limit
    else:
        origin = min(t.datetime_start for t in trials.values() if t.datetime_start is not None).timestamp()
    return [round(trials[r.number].datetime_complete.timestamp() - origin, 3) for r in history
            if r.state == COMPLETE]


def run_once(workload: str, objects: dict, budget: str, strategy: str, seed: int, trials: int | None,
             seconds: float | None = None, **settings) -> dict:
    with tempfile.TemporaryDirectory(prefix="autocompress-bench-") as out:
        start = time.perf_counter()
        result = search(budget, out=out, progress=False, trials=trials, time_limit=seconds, strategy=strategy,
                        seed=seed, **objects, **settings)
        wall = time.perf_counter() - start
        finished_at = finish_seconds(out, result.history, seconds)
    base, compressed = result.recipe.metrics["base"], result.recipe.metrics["compressed"]
    finished = [r for r in result.history if r.state == COMPLETE]
    return {
        "workload": workload, "budget": budget, "strategy": strategy, "seed": seed, "time_limit": seconds,
        "search_trials": int(result.recipe.search["trials"]),
        "scan_trials": sum(r.purpose == SCAN for r in finished),
        "evaluations": len(finished), "failed": sum(r.state != COMPLETE for r in result.history),
        "test_accuracy": compressed["accuracy"], "base_test_accuracy": base["accuracy"],
        "best_proxy_accuracy": result.recipe.search["best_proxy_accuracy"],
        "flops_ratio": compressed["flops"] / base["flops"], "params_ratio": compressed["params"] / base["params"],
        "seconds": wall, "trial_seconds": finished_at[-1] if finished_at else 0.0,
        "best_so_far": best_so_far(result.history), "finish_seconds": finished_at,
    }


def evaluations_to_near_best(run: dict) -> int | None:
    """The evaluations (scans included) until the run's best-so-far came within ``NEAR_BEST``
    of its final best; None without a feasible trial."""
    curve = run["best_so_far"]
    if not curve or curve[-1] is None:
        return None
    return next(i + 1 for i, v in enumerate(curve) if v is not None and v >= curve[-1] - NEAR_BEST)


def mean_std(values: list[float], digits: int = 2) -> str:
    if not values:
        return "–"
    mean = statistics.mean(values)
    return f"{mean:.{digits}f} ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else f"{mean:.{digits}f}"


def table(title: str, runs: list[dict]) -> str:
    lines = [
        f"### {title}", "",
        f"| strategy | seeds | evaluations (search + scan) | evaluations to {NEAR_BEST} pt | test accuracy % "
        "| change vs base (pt) | FLOPs ratio | params ratio | seconds of trials | wall time per run (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    failed = [r for r in runs if "error" in r]
    runs = [r for r in runs if "error" not in r]
    for strategy in dict.fromkeys(r["strategy"] for r in runs):
        rs = [r for r in runs if r["strategy"] == strategy]
        search_trials = "/".join(map(str, sorted({r["search_trials"] for r in rs})))
        scans = "/".join(map(str, sorted({r["scan_trials"] for r in rs})))
        near = [n for n in map(evaluations_to_near_best, rs) if n is not None]
        change = round(statistics.mean(r["test_accuracy"] - r["base_test_accuracy"] for r in rs), 2) + 0.0
        trial_seconds = [r["trial_seconds"] for r in rs if "trial_seconds" in r]
        lines.append(
            f"| {strategy} | {len(rs)} | {search_trials} + {scans} | {mean_std(near, 1)} "
            f"| {mean_std([r['test_accuracy'] for r in rs])} | {change:+.2f} "
            f"| {mean_std([r['flops_ratio'] for r in rs], 3)} | {mean_std([r['params_ratio'] for r in rs], 3)} "
            f"| {mean_std(trial_seconds, 1)} | {mean_std([r['seconds'] for r in rs], 1)} |"
        )
    notes = [f"{r['strategy']} (seed {r['seed']}): {r['error']}" for r in failed]
    base = [f"Base (uncompressed) test accuracy: {statistics.mean(r['base_test_accuracy'] for r in runs):.2f}%."]
    return "\n".join(lines + [""] + (base if runs else []) + notes)


def mean_curve(runs: list[dict]) -> list[float | None]:
    """Mean over runs of best-so-far at each evaluation; None where a run has not yet found
    a feasible trial or has stopped."""
    length = max(len(r["best_so_far"]) for r in runs)
    out = []
    for i in range(length):
        values = [r["best_so_far"][i] if i < len(r["best_so_far"]) else None for r in runs]
        out.append(None if None in values else statistics.mean(values))
    return out


def mean_time_curve(runs: list[dict]) -> list[tuple[float, float | None]]:
    """Mean over runs of best-so-far against seconds of trials: at every second at which
    some run finished an evaluation, the mean of each run's best-so-far then (each run
    keeps its last value after its own last evaluation); None until every run has a
    feasible trial."""
    points = []
    for t in sorted({s for r in runs for s in r["finish_seconds"]}):
        values = []
        for r in runs:
            done = [v for s, v in zip(r["finish_seconds"], r["best_so_far"]) if s <= t]
            values.append(done[-1] if done else None)
        points.append((t, None if None in values else statistics.mean(values)))
    return points


def panels(runs: list[dict]) -> dict[str, list[dict]]:
    """The runs without errors by panel title (``workload budget``), in the order run."""
    out: dict[str, list[dict]] = {}
    for r in runs:
        if "error" not in r:
            out.setdefault(f"{r['workload']} {r['budget']}", []).append(r)
    return out


def timed(runs: list[dict]) -> bool:
    """Whether the runs were given equal seconds (``--seconds``) and carry finish times."""
    return bool(runs) and all(r.get("time_limit") is not None and "finish_seconds" in r for r in runs)


def write_curves(runs: list[dict], path: Path) -> Path:
    """The curves as a PNG (matplotlib) or, without matplotlib or for a ``.csv`` path, a CSV
    of workload, budget, strategy, axis (``evaluation`` or ``seconds``), x and mean best
    feasible proxy accuracy.  Against seconds only when the runs were given equal seconds."""
    data = {title: {s: [r for r in rs if r["strategy"] == s] for s in dict.fromkeys(r["strategy"] for r in rs)}
            for title, rs in panels(runs).items()}
    axes_kinds = ["seconds", "evaluation"] if timed([r for rs in panels(runs).values() for r in rs]) else ["evaluation"]

    def curve(kind: str, rs: list[dict]) -> list[tuple[float, float]]:
        points = mean_time_curve(rs) if kind == "seconds" else [(i + 1, v) for i, v in enumerate(mean_curve(rs))]
        return [(x, v) for x, v in points if v is not None]

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
            writer.writerow(["workload", "budget", "strategy", "axis", "x", "best_feasible_proxy_accuracy"])
            for title, by_strategy in data.items():
                workload, budget = title.split(" ", 1)
                for strategy, rs in by_strategy.items():
                    for kind in axes_kinds:
                        writer.writerows([workload, budget, strategy, kind, x, f"{v:.4f}"] for x, v in curve(kind, rs))
        return path
    fig, axes = plt.subplots(len(axes_kinds), len(data), figsize=(5 * len(data), 4 * len(axes_kinds)),
                             squeeze=False)
    labels = {"seconds": "seconds of search (trials and scans)", "evaluation": "evaluation (search + scan trials)"}
    for row, kind in enumerate(axes_kinds):
        for ax, (title, by_strategy) in zip(axes[row], data.items()):
            for strategy, rs in by_strategy.items():
                points = curve(kind, rs)
                if points:
                    ax.step(*zip(*points), where="post", marker="." if kind == "evaluation" else None,
                            markersize=3, label=strategy)
            ax.set(title=title, xlabel=labels[kind], ylabel="best feasible proxy accuracy %")
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def report(runs: list[dict], curves_path: Path) -> None:
    for workload, budget in dict.fromkeys((r["workload"], r["budget"]) for r in runs):
        rs = [r for r in runs if r["workload"] == workload and r["budget"] == budget]
        print(table(f"{workload} `{budget}`", rs) + "\n")
    print(f"best-so-far curves: {write_curves(runs, curves_path)}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", default="demo",
                        help=f"comma-separated workloads, some of {', '.join(WORKLOADS)} (default demo)")
    parser.add_argument("--strategies", default="bo,uniform,random", help="comma-separated strategies")
    parser.add_argument("--budgets", default="flops=0.3,params=0.1", help="comma-separated budgets")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--trials", type=int, help="search trials per run (default: each strategy's own; with "
                                                   "--seconds, as many as fit)")
    parser.add_argument("--seconds", type=float, help="seconds of search per run, scans included (equal wall time; "
                                                      "the trial running then finishes)")
    parser.add_argument("--final-finetune-steps", type=int, default=300,
                        help="distillation fine-tune of every chosen recipe (default 300, the CLI's)")
    parser.add_argument("--channel-multiple", type=int, default=8, metavar="N",
                        help="kept channel counts rounded to multiples of N (default 8, the CLI's; LeNet-5's 6 and 16 "
                             "channels leave few distinct points at 8)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--output", default="search_quality.json", help="JSON of every run")
    parser.add_argument("--curves", default="search_quality.png", help="best-so-far curves (.png or .csv)")
    parser.add_argument("--report", metavar="JSON", nargs="+", help="only print the tables and write the curves of "
                                                                     "these JSONs")
    args = parser.parse_args(argv)
    if args.report:
        runs = []
        for name in args.report:
            with open(name, encoding="utf-8") as f:
                data = json.load(f)
            runs += [{"workload": data["workload"], **r} for r in data["runs"]]  # older files: one workload each
        report(runs, Path(args.curves))
        return
    workloads, strategies, budgets = args.workload.split(","), args.strategies.split(","), args.budgets.split(",")
    unknown = [s for s in strategies if s not in STRATEGIES] + [w for w in workloads if w not in WORKLOADS]
    if unknown:
        parser.error(f"unknown strategies or workloads {', '.join(unknown)}; use some of {', '.join(STRATEGIES)} "
                     f"and {', '.join(WORKLOADS)}")
    if args.seconds is not None and not args.seconds > 0:
        parser.error(f"--seconds {args.seconds} must be above 0")
    seeds = [int(s) for s in args.seeds.split(",")]
    torch.set_num_threads(args.threads)

    runs: list[dict] = []
    for workload in workloads:
        objects = workload_objects(workload)
        settings = {"final_finetune_steps": args.final_finetune_steps, "channel_multiple": args.channel_multiple}
        run_once(workload, objects, budgets[0], strategies[0], seeds[0], 1, **settings)  # warm-up, not reported
        for budget in budgets:
            for strategy in strategies:
                for seed in seeds:
                    try:
                        run = run_once(workload, objects, budget, strategy, seed, args.trials, args.seconds, **settings)
                    except AutocompressError as exc:  # e.g. a rank-only space that cannot reach the budget
                        runs.append({"workload": workload, "budget": budget, "strategy": strategy, "seed": seed,
                                     "error": str(exc)})
                        print(f"{workload} {budget} {strategy} seed={seed}: {exc}", file=sys.stderr, flush=True)
                        continue
                    runs.append(run)
                    print(f"{workload} {budget} {strategy} seed={seed}: {run['evaluations']} evaluations in "
                          f"{run['trial_seconds']:.0f}s, test acc {run['test_accuracy']:.2f}%, FLOPs ratio "
                          f"{run['flops_ratio']:.3f}, {run['seconds']:.1f}s", file=sys.stderr, flush=True)
                    with open(args.output, "w", encoding="utf-8") as f:  # after each run: a stopped grid keeps its runs
                        json.dump({"schema": 1, "workload": args.workload, "args": vars(args),
                                   "load_average": os.getloadavg(), "runs": runs}, f, indent=1)
    report(runs, Path(args.curves))


if __name__ == "__main__":
    main()
