"""Latency models: accuracy of the learned CPU model on held-out ops and whole models, a
latency budget measured on the exported model, and predicted speedups per target.

    python benchmarks/latency_models.py [--samples 300] [--rounds 2] [--held-out 40] [--part all]

Parts (``--part``):
- ``learned``: fit ``autocompress profile``'s model on this CPU (random ops and the layers
  of the zoo models it profiles, adaptive sampling, whole models for what runs between the
  layers), then on held-out configurations (fresh random ops of every kind; the layers of
  the profiled zoo architectures compressed at other random settings; the layers of zoo
  architectures the profile never saw): MAPE, share within +-10% and +-5%, Spearman.  The
  measurement noise floor is the same statistics between two independent measurements of
  the same ops.  Whole models (exported as ``apply`` exports them, batch 1/8/32): the
  learned total (ops plus between the layers) and the sum of the ops alone against the
  measured latency, with the noise floor of two measurements.
- ``budget``: ``latency=0.5@cpu`` on ResNet-20 at batch 32 (``--latency-batch 32``;
  uniform strategy, 1 trial, no fine-tune): the exported model's measured latency against
  the exported base, side by side (both as ``apply`` exports them).
- ``targets``: one recipe (ResNet-20 at flops=0.3, uniform) and the predicted speedup on
  every target.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from autocompress.api import search
from autocompress.compress.export import export_model
from autocompress.core.ops import space_ops
from autocompress.core.recipe import Recipe
from autocompress.core.workload import Workload
from autocompress.engine.recipes import replay
from autocompress.latency_models import get_latency_model, target_names
from autocompress.latency_models.learned import KINDS, SAMPLES_PER_KIND, random_op
from autocompress.latency_models.measured import MeasuredLatency, device_key, measure_cpu_latency
from autocompress.latency_models.profiling import compressed_models, profile_device, whole_model_samples
from autocompress.models import zoo
from autocompress.spaces import build_space

UNSEEN_MODELS = ("se_net", "vit_tiny")


def stats(predicted, measured) -> dict[str, float]:
    p, m = np.asarray(predicted), np.asarray(measured)
    err = np.abs(p / m - 1)
    return {"n": len(p), "mape_%": 100 * err.mean(), "within10_%": 100 * (err <= 0.10).mean(),
            "within5_%": 100 * (err <= 0.05).mean(), "spearman": float(spearmanr(p, m)[0])}


def row(name, s) -> str:
    return (f"| {name} | {s['n']} | {s['mape_%']:.1f}% | {s['within10_%']:.0f}% | {s['within5_%']:.0f}% | "
            f"{s['spearman']:.3f} |")


def part_learned(args) -> None:
    measured = MeasuredLatency("cpu", cache=str(Path(args.tmp) / "fit-cache.json"), repeats=args.repeats)
    start = time.perf_counter()
    learned = profile_device("cpu", args.samples, args.rounds, seed=args.seed, measured=measured,
                             models=zoo.instances(zoo.PROFILED),
                             progress=lambda line: print("  profile:", line, flush=True))
    print(f"profiled in {time.perf_counter() - start:.0f} s; between the layers: {learned.glue}")
    learned.save(Path(args.tmp) / "learned-cpu.json")
    rng = np.random.default_rng(args.seed + 1000)
    # held-out ops, each measured twice (fresh caches) for the noise floor
    first = MeasuredLatency("cpu", cache=str(Path(args.tmp) / "held1.json"), repeats=args.repeats)
    second = MeasuredLatency("cpu", cache=str(Path(args.tmp) / "held2.json"), repeats=args.repeats)
    print("\n| held-out set | ops | MAPE | within ±10% | within ±5% | Spearman |\n|---|---:|---:|---:|---:|---:|")
    everything = {"pred": [], "m1": [], "m2": []}

    def held_out(label, ops):
        pred = [learned.predict_op(op, b) for op, b in ops]
        m1 = [first.predict_op(op, b) for op, b in ops]
        m2 = [second.predict_op(op, b) for op, b in ops]
        for k, v in (("pred", pred), ("m1", m1), ("m2", m2)):
            everything[k] += v
        print(row(f"{label}: learned", stats(pred, m1)))
        print(row(f"{label}: noise floor (2nd measurement)", stats(m2, m1)))

    for kind in KINDS:
        ops = [(random_op(kind, rng), int(rng.choice([1, 8, 32]))) for _ in range(args.held_out)]
        held_out(f"random {kind} ops", ops)
    # zoo models never measured in the profile: other random compressions of the profiled
    # architectures, and architectures the profile never saw
    seen = compressed_models(zoo.instances(zoo.PROFILED), args.models, rng, base=False)
    unseen = compressed_models(zoo.instances(UNSEEN_MODELS), args.models, rng)
    for label, items in (("layers of compressed profiled models", seen), ("layers of unseen models", unseen)):
        held_out(label, [(op, b) for *_, ops in items for op in ops for b in (1, 32)])
    print(row("all held-out layers: learned", stats(everything["pred"], everything["m1"])))
    print("\n| whole models (exported), batch 1/8/32 | models | MAPE | within ±10% | within ±5% | Spearman |"
          "\n|---|---:|---:|---:|---:|---:|")
    for label, items in (("compressed profiled architectures", seen), ("unseen architectures", unseen)):
        m1 = whole_model_samples(items, repeats=args.repeats)
        m2 = whole_model_samples(items, repeats=args.repeats)
        measured_ms = [ms for *_, ms in m1]
        print(row(f"{label}: learned (ops + between the layers)",
                  stats([learned.total(ops, b) for ops, b, _ in m1], measured_ms)))
        print(row(f"{label}: sum of the ops alone", stats([sum(learned.predict_op(op, b) for op in ops)
                                                         for ops, b, _ in m1], measured_ms)))
        print(row(f"{label}: noise floor (2nd measurement)", stats([ms for *_, ms in m2], measured_ms)))
        print("\n| model | batch | predicted ms | measured ms | ratio |\n|---|---:|---:|---:|---:|")
        names = [name for name, *_ in items for _ in (1, 8, 32)]
        for name, (ops, b, ms) in zip(names, m1):
            p = learned.total(ops, b)
            print(f"| {name} | {b} | {p:.3f} | {ms:.3f} | {p / ms:.2f} |")
        print()


def part_budget(args) -> None:
    base = zoo.resnet20()
    data = zoo.resnet20_data()
    x = zoo.example_input("resnet20", args.batch)
    with tempfile.TemporaryDirectory() as folder:
        result = search("latency=0.5@cpu", model=base, data=data, out=Path(folder) / "run", progress=False,
                        trials=1, strategy="uniform", finetune_steps=0, final_finetune_steps=0,
                        latency_batch=args.batch)
        recipe = Recipe.load(result.recipe_path)
        workload = Workload("resnet20", base, x[:1], *data)
        small, metrics = replay(workload, recipe)
        programs = {}
        for tag, model in (("base", base), ("compressed", small)):
            export_model(copy.deepcopy(model), x[:1], Path(folder) / f"{tag}.pt2")
            programs[tag] = torch.export.load(str(Path(folder) / f"{tag}.pt2")).module()
        rounds = {"base": [], "compressed": []}
        for _ in range(args.budget_rounds):
            for tag in rounds:
                rounds[tag].append(measure_cpu_latency(programs[tag], x, repeats=args.repeats * 2))
    ratio = statistics.median(c / b for b, c in zip(rounds["base"], rounds["compressed"]))
    print("\n| | predicted (search's model) | measured, exported (median of rounds) |\n|---|---:|---:|")
    print(f"| base ms | {recipe.metrics['base']['latency@cpu']:.3f} | {statistics.median(rounds['base']):.3f} |")
    print(f"| compressed ms | {recipe.metrics['compressed']['latency@cpu']:.3f} | "
          f"{statistics.median(rounds['compressed']):.3f} |")
    predicted = recipe.metrics['compressed']['latency@cpu'] / recipe.metrics['base']['latency@cpu']
    print(f"| compressed / base | {predicted:.3f} | {ratio:.3f} |")
    print(f"batch {args.batch}; FLOPs ratio {metrics['flops'] / recipe.metrics['base']['flops']:.3f}; budget 0.5; "
          f"measured ratio is {100 * (ratio / 0.5 - 1):+.1f}% from the budget")


def part_targets(args) -> None:
    base = zoo.resnet20()
    x = zoo.example_input("resnet20")
    data = zoo.resnet20_data()
    with tempfile.TemporaryDirectory() as folder:
        result = search("flops=0.3", model=base, data=data, out=Path(folder) / "run", progress=False, trials=1,
                        strategy="uniform", finetune_steps=0, final_finetune_steps=0)
        recipe = Recipe.load(result.recipe_path)
    space = build_space(base, x)
    dense, small = space_ops(space, space.resolve(space.neutral())), space_ops(space, recipe.layers)
    print(f"\nResNet-20 at flops=0.3 (uniform recipe, FLOPs ratio "
          f"{recipe.metrics['compressed']['flops'] / recipe.metrics['base']['flops']:.3f}), predicted speedup:\n")
    print("| target | batch 1 | batch 32 |\n|---|---:|---:|")
    for target in target_names():
        if target == "cuda" and not torch.cuda.is_available():
            continue
        model = get_latency_model(target)
        cells = [f"{model.total(dense, b) / model.total(small, b):.2f}x" for b in (1, 32)]
        print(f"| {target} ({model.kind}) | {cells[0]} | {cells[1]} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=SAMPLES_PER_KIND, help="as autocompress profile (default 300)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--held-out", type=int, default=40)
    parser.add_argument("--models", type=int, default=1, help="held-out compressions per zoo model (default 1)")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--budget-rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=32, help="batch of the latency budget part (default 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--part", default="all", choices=("all", "learned", "budget", "targets"))
    parser.add_argument("--keep", metavar="DIR", help="keep the measurement caches and the fitted model here")
    args = parser.parse_args()
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        args.tmp = args.keep or tmp
        Path(args.tmp).mkdir(parents=True, exist_ok=True)
        print(f"device: {device_key('cpu')}")
        for name, part in (("targets", part_targets), ("budget", part_budget), ("learned", part_learned)):
            if args.part in ("all", name):
                print(f"\n## {name}")
                part(args)


if __name__ == "__main__":
    main()
