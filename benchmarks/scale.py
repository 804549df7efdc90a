"""Scale: where a trial's time goes, and how much memory a search holds, on torchvision
ResNet-18, -34 and -50 at 64x64 on this CPU.

Each model is searched in its own process (peak RSS is per process): random weights,
10 classes, self-labelled random images (labels from the base model, so the base scores
100%), ``--budget flops=0.5``, the default strategy and proxy (BatchNorm recalibration on
20 batches, a 20-step distillation fine-tune), batches of 32.  The engine's own functions
are wrapped to time each phase of every trial:

- space: building the space (once per search, shown per trial as its share);
- compress: turning the candidate into a smaller model (``compress.compress``);
- recover: BatchNorm recalibration + the distillation fine-tune;
- score: the proxy score (accuracy) on the validation batches;
- costs: FLOPs/params/size of the compressed model;
- other: the rest of the trial (the budget check, bookkeeping).

Memory: peak RSS of the process against the model's size (fp32 parameters and buffers),
and the most model instances alive (``gc``) at the end of any recovery, the point where a
trial holds the most (the base, which is also the teacher, and the candidate).

    python benchmarks/scale.py [--models resnet18 resnet34 resnet50] [--trials 4]
"""
from __future__ import annotations

import argparse
import gc
import json
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict

PHASES = ("compress", "recover", "score", "costs")


def one(name: str, trials: int, size: int) -> dict:
    import torch

    import autocompress.engine.evaluation as evaluation
    import autocompress.engine.trials as trials_module
    from autocompress.api import search
    from autocompress.models.thirdparty import import_torchvision

    torch.manual_seed(0)
    tv = import_torchvision()
    model = getattr(tv.models, name)(num_classes=10).eval()
    model_bytes = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])

    def batches(n: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        generator = torch.Generator().manual_seed(seed)
        out = []
        with torch.no_grad():
            for _ in range(n):
                x = torch.randn(32, 3, size, size, generator=generator)
                out.append((x, model(x).argmax(dim=1)))
        return out

    train, val, test = batches(20, 1), batches(8, 2), batches(8, 3)
    gc.collect()
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    seconds: dict[str, float] = defaultdict(float)
    per_trial: list[dict[str, float]] = []
    live: list[int] = []
    current: dict[str, float] = {}

    def timed(label: str, fn, count_models: bool = False):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.perf_counter() - start
                seconds[label] += elapsed
                current[label] = current.get(label, 0.0) + elapsed
                if count_models:
                    gc.collect()
                    live.append(sum(isinstance(o, type(model)) for o in gc.get_objects()))
        return wrapper

    evaluation.build_space = timed("space", evaluation.build_space)
    evaluation.compress = timed("compress", evaluation.compress)
    evaluation.recover = timed("recover", evaluation.recover, count_models=True)
    evaluation.evaluate = timed("score", evaluation.evaluate)
    evaluation.measure_costs = timed("costs", evaluation.measure_costs)
    evaluate_trial = trials_module.evaluate_trial

    def trial(*args, **kwargs):
        current.clear()
        start = time.perf_counter()
        try:
            return evaluate_trial(*args, **kwargs)
        finally:
            total = time.perf_counter() - start
            row = {p: current.get(p, 0.0) for p in PHASES}
            row["other"] = total - sum(row.values())
            row["total"] = total
            row["purpose"] = args[5] if len(args) > 5 else kwargs.get("purpose", "search")
            per_trial.append(row)

    trials_module.evaluate_trial = trial
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        result = search("flops=0.5", model=model, data=(train, val, test), out=out, progress=False,
                        trials=trials, final_finetune_steps=20)
    wall = time.perf_counter() - start
    search_rows = [r for r in per_trial if r["purpose"] != "scan"]
    return {
        "model": name, "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "model_mb": model_bytes / 2**20, "wall_s": wall, "space_s": seconds["space"],
        "trials": search_rows, "scans": len(per_trial) - len(search_rows),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mb": rss_before / 2**20, "max_live_models": max(live) if live else 0,
        "flops_ratio": result.recipe.metrics["compressed"]["flops"] / result.recipe.metrics["base"]["flops"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet34", "resnet50"])
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--one", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(args.one, args.trials, args.size)))
        return
    rows = []
    for name in args.models:
        done = subprocess.run([sys.executable, __file__, "--one", name, "--trials", str(args.trials),
                               "--size", str(args.size)], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(f"{name} failed:\n{done.stderr[-3000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"\n{args.size}x{args.size} inputs, batch 32, {args.trials} search trials, flops=0.5, torch threads "
          f"{__import__('torch').get_num_threads()}\n")
    print("| model | params | trial s (mean) | space (once) | compress | recover | score | costs | other "
          "| outside recovery+scoring | peak RSS | RSS before search | model size | most models alive |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        n = len(r["trials"])
        mean = {k: sum(t[k] for t in r["trials"]) / n for k in (*PHASES, "other", "total")}
        share = {k: 100 * mean[k] / mean["total"] for k in mean}
        space_share = 100 * r["space_s"] / (mean["total"] * n)
        outside = 100 - share["recover"] - share["score"]
        print(f"| {r['model']} | {r['params_m']:.1f}M | {mean['total']:.2f} | {r['space_s']:.2f} s "
              f"({space_share:.1f}% of the trials) | {share['compress']:.1f}% | {share['recover']:.1f}% "
              f"| {share['score']:.1f}% | {share['costs']:.1f}% | {share['other']:.1f}% | {outside:.1f}% "
              f"| {r['peak_rss_mb']:.0f} MB | {r['rss_before_mb']:.0f} MB | {r['model_mb']:.0f} MB "
              f"| {r['max_live_models']} |")


if __name__ == "__main__":
    main()
