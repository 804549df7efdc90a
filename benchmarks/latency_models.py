"""Latency models: accuracy of the learned CPU model on held-out ops and whole models, a
latency budget measured on the exported model, and predicted speedups per target.

    python benchmarks/latency_models.py [--samples 150] [--rounds 2] [--held-out 40] [--part all]

Parts (``--part``):
- ``learned``: fit ``autocompress profile``'s model on this CPU (random ops, adaptive
  sampling), then on held-out configurations (fresh random ops of every kind, and the
  layers of zoo models compressed at random settings, none used in fitting): MAPE, share
  within +-10% and +-5%, Spearman.  The measurement noise floor is the same statistics
  between two independent measurements of the same ops.  Whole models: the sum of the
  per-op predictions against the measured latency of the exported model (BN folded).
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

from autocompress import zoo
from autocompress.api import search
from autocompress.engine import export_model, replay
from autocompress.latency_models import get_latency_model, target_names
from autocompress.latency_models.learned import profile, random_op
from autocompress.latency_models.measured import MeasuredLatency, device_key, measure_cpu_latency
from autocompress.ops import space_ops
from autocompress.recipe import Recipe
from autocompress.spaces import build_space
from autocompress.workload import Workload

KINDS = ("conv", "pointwise", "depthwise", "linear")
MODELS = ("resnet20", "vgg_small", "mobilenetv2_small", "lenet5", "densenet_small")


def stats(predicted, measured) -> dict[str, float]:
    p, m = np.asarray(predicted), np.asarray(measured)
    err = np.abs(p / m - 1)
    return {"n": len(p), "mape_%": 100 * err.mean(), "within10_%": 100 * (err <= 0.10).mean(),
            "within5_%": 100 * (err <= 0.05).mean(), "spearman": float(spearmanr(p, m)[0])}


def row(name, s) -> str:
    return (f"| {name} | {s['n']} | {s['mape_%']:.1f}% | {s['within10_%']:.0f}% | {s['within5_%']:.0f}% | "
            f"{s['spearman']:.3f} |")


def zoo_ops(rng: np.random.Generator, count: int):
    """Ops of zoo models compressed at random channel settings."""
    out = []
    for i in range(count):
        name = MODELS[i % len(MODELS)]
        model = zoo.build_model(name) if hasattr(zoo, "build_model") else getattr(zoo, name)()
        x = zoo.example_input(name)
        space = build_space(model, x)
        candidate = {k.name: float(rng.uniform(0.2, 1.0)) for k in space.knobs if k.kind == "channels"}
        out.append((name, model, x, space, space.resolve(candidate)))
    return out


def part_learned(args) -> None:
    measured = MeasuredLatency("cpu", cache=str(Path(args.tmp) / "fit-cache.json"), repeats=args.repeats)
    start = time.perf_counter()
    learned = profile(measured.predict_op, "learned-cpu", device_key("cpu"), args.samples, args.rounds,
                      seed=args.seed, progress=lambda line: print("  profile:", line, flush=True))
    print(f"fitted in {time.perf_counter() - start:.0f} s")
    learned.save(Path(args.tmp) / "learned-cpu.json")
    rng = np.random.default_rng(args.seed + 1000)
    # held-out ops, each measured twice (fresh caches) for the noise floor
    first = MeasuredLatency("cpu", cache=str(Path(args.tmp) / "held1.json"), repeats=args.repeats)
    second = MeasuredLatency("cpu", cache=str(Path(args.tmp) / "held2.json"), repeats=args.repeats)
    print("\n| held-out set | ops | MAPE | within ±10% | within ±5% | Spearman |\n|---|---:|---:|---:|---:|---:|")
    everything = {"pred": [], "m1": [], "m2": []}
    for kind in KINDS:
        ops = [(random_op(kind, rng), int(rng.choice([1, 8, 32]))) for _ in range(args.held_out)]
        pred = [learned.predict_op(op, b) for op, b in ops]
        m1 = [first.predict_op(op, b) for op, b in ops]
        m2 = [second.predict_op(op, b) for op, b in ops]
        for k, v in (("pred", pred), ("m1", m1), ("m2", m2)):
            everything[k] += v
        print(row(f"random {kind} ops: learned", stats(pred, m1)))
        print(row(f"random {kind} ops: noise floor (2nd measurement)", stats(m2, m1)))
    models = zoo_ops(rng, args.models)
    layer_pred, layer_m1, layer_m2, whole_pred, whole_meas, whole_names = [], [], [], [], [], []
    for name, model, x, space, settings in models:
        ops = [op for op in space_ops(space, settings)]
        layer_pred += [learned.predict_op(op, 1) for op in ops]
        layer_m1 += [first.predict_op(op, 1) for op in ops]
        layer_m2 += [second.predict_op(op, 1) for op in ops]
        from autocompress.compress import bake, compress

        small = bake(compress(model, space, settings, x))
        with tempfile.TemporaryDirectory() as folder:
            export_model(small, x, Path(folder) / "m.pt2")
            program = torch.export.load(str(Path(folder) / "m.pt2")).module()
            whole_meas.append(statistics.median(measure_cpu_latency(program, x, repeats=args.repeats * 2)
                                                for _ in range(3)))
        whole_pred.append(sum(learned.predict_op(op, 1) for op in ops))
        whole_names.append(name)
    print(row("layers of compressed zoo models: learned", stats(layer_pred, layer_m1)))
    print(row("layers of compressed zoo models: noise floor", stats(layer_m2, layer_m1)))
    print(row("all held-out layers: learned", stats(everything["pred"] + layer_pred, everything["m1"] + layer_m1)))
    print(row("whole compressed models (sum of ops vs exported model)", stats(whole_pred, whole_meas)))
    print("\n| model | predicted ms (sum of ops) | measured ms (exported) | ratio |\n|---|---:|---:|---:|")
    for n, p, m in zip(whole_names, whole_pred, whole_meas):
        print(f"| {n} | {p:.3f} | {m:.3f} | {p / m:.2f} |")


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
    print(f"| compressed / base | {recipe.metrics['compressed']['latency@cpu'] / recipe.metrics['base']['latency@cpu']:.3f}"
          f" | {ratio:.3f} |")
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
    parser.add_argument("--samples", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--held-out", type=int, default=40)
    parser.add_argument("--models", type=int, default=10)
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
