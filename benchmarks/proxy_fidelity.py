"""Proxy fidelity: how well does each cheap per-trial score rank candidates by their final accuracy?

Random allocation profiles (every knob uniform in its range, as the ``random`` strategy
proposes them) are repaired onto each budget with ``autocompress.core.projection.project``;
every candidate is compressed and recovered (``engine.evaluation.compress_and_recover``:
BatchNorm recalibration, then a distillation fine-tune) once per proxy setting and once per
truth seed with the final fine-tune (``final_finetune_steps``, 300 by default, as a search's chosen recipe gets);
truth seed s > 0 fine-tunes on the training batches shuffled with seed s (the fine-tune
itself is deterministic: the batch order is its only randomness).

Scores of a proxy setting, all on the validation split: top-1 accuracy (what the search
uses today), minus the cross-entropy loss, minus the KL divergence to the uncompressed
model (T=1).  Truth: test accuracy after the final fine-tune (the mean over truth seeds),
and also minus the test cross-entropy, a finer truth where accuracies tie.  The table gives
Kendall's tau-b (``scipy.stats.kendalltau``) of each score against each truth, per budget
and pooled over the budgets' candidates, with the seconds one proxy evaluation costs
(compress + recover + score); with two or more truth seeds, the tau of the truth's seed 0
against seed 1 says how far the truth itself is reproducible.

Run from the project root; one torch thread by default (a shared 2-core machine runs
several times slower with two contending threads):

    python benchmarks/proxy_fidelity.py [--workload demo|mnist] [--budgets flops=0.3,params=0.1] \
        [--candidates 20] [--truth-seeds 2] [--output proxy.json]
    python benchmarks/proxy_fidelity.py --report proxy.json [more.json]   # the table of (partial) runs
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F
from scipy.stats import kendalltau

from autocompress.core import budget as _budget
from autocompress.core.projection import project
from autocompress.engine.evaluation import base_metrics, compress_and_recover, limits_for, search_space
from autocompress.engine.settings import SearchSettings
from autocompress.models.data import TensorBatches
from autocompress.models.workload import load_workload

PROXIES: dict[str, dict[str, float]] = {
    "bn": {"finetune_steps": 0},
    "bn+20": {"finetune_steps": 20},
    "bn+20 lr3e-3": {"finetune_steps": 20, "lr": 3e-3},
    "bn+50": {"finetune_steps": 50},
    "bn+100": {"finetune_steps": 100},
}
"""Proxy settings by name: overrides of ``SearchSettings.recovery(final=False)``."""
SCORES = ("val_acc", "-val_ce", "-val_kl", "val_acc, -val_kl")
"""Scores of a proxy; ``"val_acc, -val_kl"`` is accuracy with ties broken by the KL divergence."""
TRUTHS = ("test_acc", "-test_ce")
WORKLOADS = {
    "demo": {},
    "mnist": {"model": "autocompress.models.datasets:mnist_lenet5", "data": "autocompress.models.datasets:mnist_data"},
}


def evaluate(model, teacher, batches) -> dict[str, float]:
    """Accuracy (%), mean cross-entropy and mean KL(teacher || model) at T=1 over ``batches``."""
    model.eval()
    correct = total = 0
    ce = kl = 0.0
    with torch.no_grad():
        for x, y in batches:
            logits, reference = model(x), teacher(x)
            correct += int((logits.argmax(1) == y).sum())
            total += len(y)
            ce += float(F.cross_entropy(logits, y, reduction="sum"))
            kl += float(F.kl_div(F.log_softmax(logits, 1), F.log_softmax(reference, 1), reduction="sum",
                                 log_target=True))
    return {"acc": 100.0 * correct / total, "ce": ce / total, "kl": kl / total}


def recovered(workload, space, candidate, recovery) -> tuple[torch.nn.Module, float]:
    start = time.perf_counter()
    model = compress_and_recover(workload, space, space.resolve(candidate), recovery)
    return model, time.perf_counter() - start


def reshuffled(workload, seed: int):
    """``workload`` with its training batches in the order of ``seed`` (0: as given).  The
    fine-tune draws nothing at random itself: the batch order is what a seed changes."""
    if seed == 0:
        return workload
    train = workload.train
    return replace(workload, train=TensorBatches(train.x, train.y, train.batch_size, shuffle=True, seed=seed))


def candidates(space, limits, count: int, seed: int) -> list[dict[str, float]]:
    out = []
    for i in range(count):
        rng = np.random.default_rng([seed, i])
        out.append(project(space, {k.name: float(rng.uniform(k.low, k.high)) for k in space.knobs}, limits))
    return out


def measure(workload, budget: str, count: int, seed: int, truth_seeds: int):
    """Yield one row of measurements per candidate."""
    settings = SearchSettings(_budget.parse(budget))
    space = search_space(workload, settings)
    limits = limits_for(settings.budget, base_metrics(workload))
    for i, candidate in enumerate(candidates(space, limits, count, seed)):
        row: dict = {"budget": budget, "candidate": i, "proxy": {}, "seconds": {}, "truth": []}
        for name, overrides in PROXIES.items():
            start = time.perf_counter()
            model, _ = recovered(workload, space, candidate, {**settings.recovery(final=False), **overrides})
            m = evaluate(model, workload.model, workload.val)
            row["seconds"][name] = time.perf_counter() - start
            row["proxy"][name] = {"val_acc": m["acc"], "-val_ce": -m["ce"], "-val_kl": -m["kl"]}
        for truth_seed in range(truth_seeds):
            recovery = {**settings.recovery(final=True), "seed": truth_seed}
            model, seconds = recovered(reshuffled(workload, truth_seed), space, candidate, recovery)
            m = evaluate(model, workload.model, workload.test)
            row["truth"].append({"test_acc": m["acc"], "-test_ce": -m["ce"], "seconds": seconds})
        yield row


def score_of(proxy: dict[str, float], score: str) -> float:
    if score == "val_acc, -val_kl":  # the KL term is far below one validation image's share
        return proxy["val_acc"] - 1e-6 * min(-proxy["-val_kl"], 1e3)
    return proxy[score]


def truth_of(row: dict, key: str) -> float:
    return statistics.mean(t[key] for t in row["truth"])


def tau(x: list[float], y: list[float]) -> float:
    value = kendalltau(x, y).statistic
    return float("nan") if value is None else float(value)


def report(rows: list[dict]) -> str:
    groups = {b: [r for r in rows if r["budget"] == b] for b in dict.fromkeys(r["budget"] for r in rows)}
    if len(groups) > 1:
        groups["pooled"] = rows
    head = "| proxy | score | s / candidate | " + " | ".join(
        f"tau vs {t} ({g})" for g in groups for t in TRUTHS) + " |"
    lines = [head, "|---|---|---:|" + "---:|" * (len(groups) * len(TRUTHS))]
    for name in PROXIES:
        seconds = statistics.mean(r["seconds"][name] for r in rows)
        for score in SCORES:
            cells = [f"{tau([score_of(r['proxy'][name], score) for r in g], [truth_of(r, t) for r in g]):.2f}"
                     for g in groups.values() for t in TRUTHS]
            lines.append(f"| {name} | {score} | {seconds:.2f} | " + " | ".join(cells) + " |")
    lines.append("")
    truth_seconds = statistics.mean(t["seconds"] for r in rows for t in r["truth"])
    lines.append(f"Truth: final fine-tune, {truth_seconds:.2f} s per candidate and seed.")
    for g, rs in groups.items():
        accs = [truth_of(r, "test_acc") for r in rs]
        note = f"{g}: {len(rs)} candidates, truth test accuracy {min(accs):.2f}-{max(accs):.2f}% " \
               f"({len(set(accs))} distinct values)"
        if all(len(r["truth"]) > 1 for r in rs):
            note += "; truth seed 0 vs seed 1 tau: " + ", ".join(
                f"{t} {tau([r['truth'][0][t] for r in rs], [r['truth'][1][t] for r in rs]):.2f}" for t in TRUTHS)
        lines.append(note + ".")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="demo")
    parser.add_argument("--budgets", default="flops=0.3,params=0.1", help="comma-separated budgets")
    parser.add_argument("--candidates", type=int, default=20, help="candidates per budget (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random allocation profiles")
    parser.add_argument("--truth-seeds", type=int, default=2, help="final fine-tunes per candidate (default 2)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--output", help="write every measurement to this JSON file")
    parser.add_argument("--report", metavar="JSON", nargs="+", help="only print the table of --output files")
    args = parser.parse_args(argv)
    if args.report:
        rows = []
        for path in args.report:
            with open(path, encoding="utf-8") as f:
                rows += json.load(f)["rows"]
        print(report(rows))
        return
    torch.set_num_threads(args.threads)
    workload = load_workload(**WORKLOADS[args.workload])
    rows: list[dict] = []
    for budget in args.budgets.split(","):
        for row in measure(workload, budget, args.candidates, args.seed, args.truth_seeds):
            rows.append(row)
            print(f"{budget} candidate {row['candidate']}: truth test acc {row['truth'][0]['test_acc']:.2f}%, "
                  + ", ".join(f"{n} {row['proxy'][n]['val_acc']:.2f}%" for n in PROXIES), file=sys.stderr, flush=True)
            if not args.output:
                continue
            with open(args.output, "w", encoding="utf-8") as f:  # after every candidate: a stopped run keeps its rows
                json.dump({"schema": 1, "workload": args.workload, "args": vars(args), "proxies": PROXIES,
                           "load_average": os.getloadavg(), "rows": rows}, f, indent=1)
    print(report(rows))


if __name__ == "__main__":
    main()
