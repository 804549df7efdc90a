"""Multi-fidelity trials: evaluations per hour and best proxy accuracy with and without a pruner.

For each pruner and seed one ``autocompress.api.search`` runs ``--trials`` search trials on
the workload (the built-in demo by default) with the default proxy (20 fine-tune steps,
rungs after 5 and 10) and no final fine-tune (only the proxy is compared).  From the study's
trial timestamps (Optuna's ``datetime_start``/``datetime_complete``), per run:

- ``loop_s``: seconds from the first trial's start to the last trial's end (the trial loop,
  without base measurements, process start-up and the recipe);
- ``evals_per_hour``: trials that finished or were pruned (scans included) per hour of it;
- ``pruned``: how many search trials the pruner stopped;
- ``best_proxy``: the best feasible proxy accuracy after all the trials;
- ``best_at_equal_time``: the best feasible proxy accuracy among the trials that had
  finished after ``equal_s`` seconds of the loop, ``equal_s`` being the shortest loop of
  all the runs of that seed (every pruner given the same seconds).

Prints one markdown table (mean ± sample std over seeds) and writes every run as JSON.

    OMP_NUM_THREADS=1 python benchmarks/multi_fidelity.py [--pruners none,sha,median,hyperband] \
        [--strategy bo] [--budget flops=0.3] [--trials 30] [--seeds 0,1,2] [--workload demo|mnist] \
        [--output multi_fidelity.json]
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import optuna

from autocompress.api import search
from autocompress.core.trial import SCAN

COLUMNS = ("loop_s", "evals_per_hour", "pruned", "best_proxy", "best_at_equal_time")


def workload_objects(name: str) -> dict:
    """``model=`` and ``data=`` for ``search`` (none for the demo, its default)."""
    if name == "demo":
        return {}
    from autocompress.models.datasets import mnist_data, mnist_lenet5

    return {"model": mnist_lenet5(), "data": mnist_data()}


def run_once(workload: dict, pruner: str, seed: int, budget: str, strategy: str, trials: int) -> dict:
    """One search; its trials with their finish time in seconds from the first start."""
    with tempfile.TemporaryDirectory(prefix="autocompress-mf-") as out:
        start = time.perf_counter()
        result = search(budget, out=out, progress=False, trials=trials, strategy=strategy, seed=seed,
                        pruner=pruner, final_finetune_steps=0, **workload)
        total = time.perf_counter() - start
        stored = optuna.load_study(study_name="autocompress", storage=f"sqlite:///{Path(out) / 'study.db'}")
        ended = {t.number: t.datetime_complete for t in stored.get_trials(deepcopy=False)}
        first = min(t.datetime_start for t in stored.get_trials(deepcopy=False))
    trials_ = [{"number": r.number, "state": r.state, "purpose": r.purpose, "score": r.score,
                "feasible": r.feasible, "end_s": (ended[r.number] - first).total_seconds()}
               for r in result.history if ended.get(r.number) is not None]
    loop = max(t["end_s"] for t in trials_)
    return {"pruner": pruner, "seed": seed, "budget": budget, "strategy": strategy, "trials": trials,
            "total_s": total, "loop_s": loop, "evals_per_hour": 3600 * len(trials_) / loop,
            "pruned": sum(t["state"] == "pruned" for t in trials_),
            "best_proxy": result.recipe.search["best_proxy_accuracy"], "history": trials_}


def best_by(history: list[dict], seconds: float) -> float | None:
    """The best feasible search-trial proxy accuracy among trials finished by ``seconds``."""
    scores = [t["score"] for t in history if t["state"] == "complete" and t["purpose"] != SCAN and t["feasible"]
              and t["end_s"] <= seconds + 1e-9]
    return max(scores) if scores else None


def table(runs: list[dict]) -> str:
    for seed in {r["seed"] for r in runs}:
        same = [r for r in runs if r["seed"] == seed]
        equal = min(r["loop_s"] for r in same)
        for r in same:
            r["equal_s"], r["best_at_equal_time"] = equal, best_by(r["history"], equal)
    lines = ["| pruner | " + " | ".join(COLUMNS) + " |", "|---" * (len(COLUMNS) + 1) + "|"]
    for pruner in dict.fromkeys(r["pruner"] for r in runs):
        cells = []
        for column in COLUMNS:
            values = [r[column] for r in runs if r["pruner"] == pruner and r[column] is not None]
            mean = statistics.fmean(values) if values else float("nan")
            spread = f" ± {statistics.stdev(values):.1f}" if len(values) > 1 else ""
            cells.append(f"{mean:.1f}{spread}")
        lines.append(f"| {pruner} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pruners", default="none,sha,median,hyperband")
    parser.add_argument("--strategy", default="bo")
    parser.add_argument("--budget", default="flops=0.3")
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--workload", default="demo", choices=("demo", "mnist"))
    parser.add_argument("--output", default="multi_fidelity.json")
    args = parser.parse_args()
    workload = workload_objects(args.workload)
    search(args.budget, out=tempfile.mkdtemp(prefix="autocompress-mf-warm-"), progress=False, trials=1,
           strategy="uniform", final_finetune_steps=0, **workload)  # imports and first calls, not charged
    runs = []
    for seed in (int(s) for s in args.seeds.split(",")):
        for pruner in args.pruners.split(","):
            runs.append(run_once(workload, pruner, seed, args.budget, args.strategy, args.trials))
            print(f"{pruner} seed {seed}: {runs[-1]['loop_s']:.1f} s, {runs[-1]['pruned']} pruned, "
                  f"best proxy {runs[-1]['best_proxy']:.2f}", flush=True)
    print(f"\n{args.workload}, {args.budget}, {args.strategy}, {args.trials} trials, seeds {args.seeds}\n")
    print(table(runs))
    Path(args.output).write_text(json.dumps(runs, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
