"""Real CPU speedup of channel pruning on ResNet-20: autocompress against Torch-Pruning.

Builds, in one process:

- the base CIFAR ResNet-20 (``autocompress.zoo.resnet20()``: random, trained-like weights;
  accuracy is not the point here, speed is);
- autocompress's channel pruning to ``flops=0.3`` through the public API (``search`` with
  ``strategy="uniform"``, one trial, no fine-tunes, then ``apply``);
- the peer: Torch-Pruning's uniform ``MetaPruner`` with ``MagnitudeImportance``, the final
  Linear ignored, its ``pruning_ratio`` bisected until its FLOPs come closest to ours;
- the same three with BatchNorm folded into the convolutions (``compress.fold``), and the
  same three as ``autocompress apply`` exports them (``export_model``'s defaults: BN folded
  and channels-last weights) -- the user's base model as they have it is the first row;
- investigation variants, all BN-folded and all within 0.3 of the base FLOPs: our recipe
  with its channel groups rounded to multiples of 8 and of 16 (``--multiples``) and
  re-applied; the allocations of ``strategy="random"`` searches (``--random-seeds``);
  hand-made per-stage allocations (``ALLOCATIONS``); Torch-Pruning with ``round_to=8``;
  and two models exported with channels-last weights.

Every model is written with ``torch.export`` (``autocompress.engine.export_model``) and timed
as the reloaded program, the artifact a user ships.  Timing: 2 threads, batch 1 and 32;
rounds in which every model runs ``--repeats`` timed calls after 3 warm-up calls, in an
order shuffled each round so machine noise hits all alike; a model's latency is the median
over rounds of its per-round medians, and its speedup the median over rounds of the
unfolded base's latency in that round over its own (so a slow spell of the whole machine
that spans a round cancels out).  A round during which other processes used more than
``--max-others`` of the CPUs (read from ``/proc/stat``, so Linux only) is rerun after a pause.
glibc's malloc thresholds are fixed first (``--default-malloc`` skips that): otherwise the
convolutions' scratch buffers are now and then returned to the OS and page-faulted afresh,
depending on the process's history, which shifts absolute batch-1 latencies between runs.
ideal = base FLOPs / model FLOPs (``evaluators.count_flops``); fraction of ideal =
speedup / ideal.

The last section times each convolution of three models alone (eager, on the input it gets
in the model, batch 32) and sums per stage: how much of the ideal each stage reaches, and
how much time is outside the convolutions.

Run from the project root on an otherwise idle machine (about 80 s on 2 cores):

    python benchmarks/speedup.py [--repeats 20] [--rounds 15] [--multiples 8,16] \
        [--random-seeds 0,1,2] [--max-others 0.05] [--default-malloc] [--output FILE]
"""
from __future__ import annotations

import argparse
import copy
import ctypes
import math
import random
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch_pruning as tp

from autocompress.api import apply, search
from autocompress.compress.export import export_model
from autocompress.compress.fold import fold_batchnorm
from autocompress.core.recipe import Recipe
from autocompress.core.space import Space
from autocompress.evaluators import count_flops
from autocompress.models import zoo
from autocompress.spaces import build_space

BUDGET = 0.3
THREADS = 2
BATCHES = (1, 32)
ALLOCATIONS: dict[str, tuple[tuple[int, int], ...]] = {
    # per stage (residual width, inner width); stage 0 includes the stem
    "hand: halved, stage 2 inner 48": ((8, 8), (16, 16), (32, 48)),
    "hand: stage 0 residual kept, stage 2 residual 16": ((16, 8), (16, 8), (16, 48)),
}
"""Hand-made ResNet-20 allocations in multiples of 8, each within the FLOPs limit."""

BASE = "base ResNet-20"
OURS = "autocompress uniform"
PEER = "Torch-Pruning uniform"
FOLD = " + BN fold"
SHIPPED = " as exported by apply (BN fold, channels-last)"


@dataclass
class Variant:
    """One thing to time: ``program(x)`` runs it on the batch ``x``."""

    name: str
    program: Callable[[torch.Tensor], torch.Tensor]
    flops: int = 0
    widths: str = ""


# ----- the models ---------------------------------------------------------------------------
def ours(base: nn.Module, data, folder: Path, strategy: str = "uniform", seed: int = 0) -> tuple[nn.Module, Recipe]:
    """autocompress's channel pruning to ``BUDGET`` of the base FLOPs, via the public API."""
    result = search(f"flops={BUDGET}", model=base, data=data, out=folder / f"{strategy}-{seed}", progress=False,
                    trials=1, strategy=strategy, seed=seed, finetune_steps=0, final_finetune_steps=0)
    model, _ = apply(result.recipe_path, model=base, data=data)
    return model, Recipe.load(result.recipe_path)


def torch_pruning_uniform(base: nn.Module, example: torch.Tensor, target: float, round_to: int | None = None,
                          steps: int = 20) -> nn.Module:
    """Torch-Pruning's uniform MetaPruner (L2 magnitude, head ignored) at the pruning ratio,
    found by bisection, whose FLOPs come closest to ``target``."""
    def pruned(ratio: float) -> nn.Module:
        model = copy.deepcopy(base)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            tp.pruner.MetaPruner(model, example, importance=tp.importance.MagnitudeImportance(p=2),
                                 pruning_ratio=ratio, ignored_layers=[model.head], round_to=round_to).step()
        return model.eval()

    low, high, best = 0.0, 0.95, (math.inf, base)
    for _ in range(steps):
        ratio = (low + high) / 2
        model = pruned(ratio)
        flops = count_flops(model, example)
        best = min(best, (abs(flops - target), model), key=lambda b: b[0])
        low, high = (ratio, high) if flops > target else (low, ratio)
    return best[1]


def layers_with(recipe: Recipe, space: Space, kept: dict[str, int]) -> dict[str, dict]:
    """The recipe's layer settings with each channel group's members set to ``kept[group]``."""
    layers = copy.deepcopy(recipe.layers)
    for group in space.groups:
        for member in group.members:
            layers[member]["out_channels"] = kept[group.name]
    return layers


def rounded(recipe: Recipe, space: Space, multiple: int, limit: float) -> dict[str, int] | None:
    """Kept channels per group rounded to a multiple of ``multiple``, or of half the group's
    size where that is smaller (so a 16-channel group can still keep 8), at least one such
    step and at most the group's size, within ``limit`` FLOPs: round to nearest; while over
    the limit, step down the group whose step saves the most FLOPs; then, while a step up
    fits, step up the group keeping the smallest share of its channels (the most FLOPs on a
    tie).  None where no such rounding meets the limit."""
    size = {g.name: g.size for g in space.groups}
    step = {g.name: max(1, min(multiple, g.size // 2)) for g in space.groups}
    kept = {name: min(size[name], max(step[name], step[name] * math.floor(count / step[name] + 0.5)))
            for name, count in space.group_channels(recipe.layers).items()}

    def flops(counts: dict[str, int]) -> float:
        return space.cost(layers_with(recipe, space, counts))["flops"]

    while flops(kept) > limit:
        lower = [g for g in kept if kept[g] - step[g] >= step[g]]
        if not lower:
            return None
        g = max(lower, key=lambda g: flops(kept) - flops({**kept, g: kept[g] - step[g]}))
        kept[g] -= step[g]
    while True:
        fits = [g for g in kept if kept[g] + step[g] <= size[g] and flops({**kept, g: kept[g] + step[g]}) <= limit]
        if not fits:
            return kept
        g = min(fits, key=lambda g: (kept[g] / size[g], -flops({**kept, g: kept[g] + step[g]})))
        kept[g] += step[g]


def stage_allocation(space: Space, widths: tuple[tuple[int, int], ...]) -> dict[str, int]:
    """Kept channels per ResNet-20 group from per-stage (residual, inner) widths."""
    kept = {}
    for group in space.groups:
        stage = 0 if group.name.startswith("stem") else int(group.name.split(".")[1])
        kept[group.name] = widths[stage][0 if len(group.members) > 1 else 1]
    return kept


def replayed(recipe: Recipe, space: Space, kept: dict[str, int], base: nn.Module, data) -> nn.Module:
    """The model ``apply`` builds from the recipe with its channel counts replaced by ``kept``."""
    edited = copy.deepcopy(recipe)
    edited.layers = layers_with(recipe, space, kept)
    model, _ = apply(edited, model=base, data=data)
    return model


def stage_widths(model: nn.Module) -> str:
    """ResNet-20 widths per stage as ``residual/inner`` (the inner widths of the blocks'
    first convs, joined by ``,`` where blocks differ)."""
    parts = []
    for stage in model.stages:
        inner = sorted({block.conv1.out_channels for block in stage}, reverse=True)
        parts.append(f"{stage[0].conv2.out_channels}/{','.join(map(str, inner))}")
    return " ".join(parts)


def exported(model: nn.Module, example: torch.Tensor, folder: Path, name: str, shipped: bool = False) -> nn.Module:
    """``model`` written with ``export_model`` to ``folder/name.pt2`` and loaded back.
    ``shipped``: with ``export_model``'s defaults (BatchNorm folded, channels-last weights),
    the program ``autocompress apply`` writes; else plain (folding is a variant of its own)."""
    path = folder / f"{name}.pt2"
    if shipped:
        export_model(model, example, path)
    else:
        export_model(model, example, path, fold=False, channels_last=False)
    return torch.export.load(str(path)).module()


# ----- timing ---------------------------------------------------------------------------------
def steady_malloc() -> None:
    """Keep freed buffers in glibc's heap (mmap threshold 32 MiB, no trimming below 1 GiB)."""
    libc = ctypes.CDLL("libc.so.6")
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    libc.mallopt(m_mmap_threshold, 32 << 20)
    libc.mallopt(m_trim_threshold, 1 << 30)
    libc.mallopt(m_top_pad, 64 << 20)


def _jiffies() -> tuple[int, int, int]:
    """(all CPUs' total time, their busy time, this process's CPU time), in clock ticks."""
    with open("/proc/stat") as stat:
        ticks = [int(v) for v in stat.readline().split()[1:]]
    with open("/proc/self/stat") as own:
        fields = own.read().rpartition(")")[2].split()
    return sum(ticks), sum(ticks) - ticks[3] - ticks[4], int(fields[11]) + int(fields[12])


def others_share(before: tuple[int, int, int], after: tuple[int, int, int]) -> float:
    """Share of the machine's CPU capacity used by other processes between two ``_jiffies``."""
    total, busy, own = (b - a for a, b in zip(before, after))
    return max(0.0, busy - own) / max(1, total)


@dataclass
class Timing:
    """Per-round median latencies (ms) per variant name, rounds rerun for noise, and the
    most other processes used in a round kept."""

    rounds: dict[str, list[float]]
    rerun: int
    worst_others: float

    def ms(self, name: str) -> float:
        """The median over rounds."""
        return statistics.median(self.rounds[name])

    def speedup(self, reference: str, name: str) -> float:
        """The median over rounds of the reference's latency over this one's in the same
        round: a slowdown of the whole machine that lasts a round cancels out."""
        return statistics.median(r / m for r, m in zip(self.rounds[reference], self.rounds[name]))


def latencies(variants: list[Variant], x: torch.Tensor, repeats: int, rounds: int, max_others: float,
              seed: int = 0) -> Timing:
    """Each variant's median latency (ms) on ``x`` in each of ``rounds`` interleaved rounds.  A round
    in which other processes used more than ``max_others`` of the CPUs is rerun after a
    10 s pause (at most ``4 * rounds`` times; after that every round is kept)."""
    order = list(variants)
    shuffle = random.Random(seed).shuffle
    per_round: dict[str, list[float]] = {v.name: [] for v in variants}
    rerun, worst = 0, 0.0
    with torch.inference_mode():
        while len(per_round[variants[0].name]) < rounds:
            shuffle(order)
            start_ticks, medians = _jiffies(), {}
            for variant in order:
                for _ in range(3):
                    variant.program(x)
                times = []
                for _ in range(repeats):
                    start = time.perf_counter()
                    variant.program(x)
                    times.append(time.perf_counter() - start)
                medians[variant.name] = 1e3 * statistics.median(times)
            others = others_share(start_ticks, _jiffies())
            if others > max_others and rerun < 4 * rounds:
                rerun += 1
                time.sleep(10)
                continue
            worst = max(worst, others)
            for name, ms in medians.items():
                per_round[name].append(ms)
    return Timing(per_round, rerun, worst)


def stage_of(name: str) -> str:
    """The ResNet-20 stage a layer belongs to, the stem counted with stage 0."""
    return "stage 0 + stem convs" if name.startswith(("stem", "stages.0")) else f"stage {name.split('.')[1]} convs"


def conv_variants(label: str, model: nn.Module, x: torch.Tensor) -> list[Variant]:
    """One variant per Conv2d of ``model``: the convolution alone on the input it gets in
    the model; named ``label|stage|layer``, with its FLOPs."""
    inputs: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda mod, args, out, name=name: inputs.__setitem__(name, args[0]))
             for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    with torch.inference_mode():
        model.eval()(x)
    for hook in hooks:
        hook.remove()
    variants = []
    for name, inp in inputs.items():
        conv = model.get_submodule(name)
        variants.append(Variant(f"{label}|{stage_of(name)}|{name}", lambda _, conv=conv, inp=inp: conv(inp),
                                count_flops(conv, inp)))
    return variants


# ----- report -------------------------------------------------------------------------------
def table(variants: list[Variant], timed: dict[int, Timing]) -> str:
    """Markdown rows of FLOPs, ideal, latency, speedup and fraction of ideal per batch size."""
    head = "| model | widths (stage residual/inner) | FLOPs (of base) | ideal |"
    rule = "|---|---|---:|---:|"
    for batch in timed:
        head += f" b={batch} ms | b={batch} speedup | b={batch} of ideal |"
        rule += "---:|---:|---:|"
    lines = [head, rule]
    base_flops = next(v.flops for v in variants if v.name == BASE)
    for v in variants:
        ideal = base_flops / v.flops
        row = f"| {v.name} | {v.widths} | {v.flops / 1e6:.2f}M ({v.flops / base_flops:.3f}) | {ideal:.2f}x |"
        for timing in timed.values():
            speedup = timing.speedup(BASE, v.name)
            row += f" {timing.ms(v.name):.3f} | {speedup:.2f}x | {speedup / ideal:.2f} |"
        lines.append(row)
    return "\n".join(lines)


def stage_table(timing: Timing, flops: dict[str, int], labels: list[str]) -> str:
    """Per stage: the summed latency (ms) of its convolutions timed alone for each model, the
    speedup over the first model and that stage's ideal; then the time outside the
    convolutions (the whole exported model, timed in the same rounds, minus its convolutions).
    ``timing`` and ``flops`` are keyed ``label|stage|layer``, the whole model ``label|model|``;
    times are medians over rounds and speedups medians of per-round ratios."""
    sums: dict[tuple[str, str], list[float]] = {}
    stage_flops: dict[tuple[str, str], int] = {}
    for name, rounds in timing.rounds.items():
        label, stage, _ = name.split("|")
        previous = sums.get((label, stage), [0.0] * len(rounds))
        sums[label, stage] = [p + t for p, t in zip(previous, rounds)]
        stage_flops[label, stage] = stage_flops.get((label, stage), 0) + flops[name]
    stages = sorted({stage for _, stage in sums} - {"model"})
    for label in labels:
        convs = [sum(values) for values in zip(*(sums[label, stage] for stage in stages))]
        sums[label, "outside convs (model - convs)"] = [m - c for m, c in zip(sums[label, "model"], convs)]
    first = labels[0]
    head = f"| stage (b=32) | {first} ms |" + "".join(f" {lab} ms | speedup | ideal |" for lab in labels[1:])
    lines = [head, "|---|---:|" + "---:|---:|---:|" * (len(labels) - 1)]
    for stage in [*stages, "outside convs (model - convs)"]:
        row = f"| {stage} | {statistics.median(sums[first, stage]):.3f} |"
        for lab in labels[1:]:
            ratio = statistics.median(f / m for f, m in zip(sums[first, stage], sums[lab, stage]))
            ideal = f"{stage_flops[first, stage] / stage_flops[lab, stage]:.2f}x" if stage in stages else ""
            row += f" {statistics.median(sums[lab, stage]):.3f} | {ratio:.2f}x | {ideal} |"
        lines.append(row)
    return "\n".join(lines)


def investigated(base: nn.Module, data, example: torch.Tensor, folder: Path, uniform: nn.Module, recipe: Recipe,
                 peer: nn.Module, args: argparse.Namespace,
                 report: list[str]) -> tuple[dict[str, nn.Module], list[str]]:
    """Every model to time by name (the main rows, then the investigation rows), and the
    names of the investigation rows; notes for the report are appended to ``report``."""
    base_flops = count_flops(base, example)
    limit, target = BUDGET * base_flops, count_flops(uniform, example)
    space = build_space(base, example)
    models: dict[str, nn.Module] = {BASE: base, OURS: uniform, PEER: peer}
    for name in (BASE, OURS, PEER):
        models[name + FOLD] = fold_batchnorm(models[name])
    extra = []
    for multiple in (int(m) for m in args.multiples.split(",") if m):
        kept = rounded(recipe, space, multiple, limit)
        if kept is None:
            report.append(f"rounding to multiples of {multiple} cannot meet flops={BUDGET}")
            continue
        extra.append(f"{OURS}, rounded to {multiple}{FOLD}")
        models[extra[-1]] = fold_batchnorm(replayed(recipe, space, kept, base, data))
    for seed in (int(s) for s in args.random_seeds.split(",") if s):
        extra.append(f"autocompress random (seed {seed}){FOLD}")
        models[extra[-1]] = fold_batchnorm(ours(base, data, folder, strategy="random", seed=seed)[0])
    for name, widths in ALLOCATIONS.items():
        extra.append(name + FOLD)
        models[extra[-1]] = fold_batchnorm(replayed(recipe, space, stage_allocation(space, widths), base, data))
    extra.append(f"{PEER}, round_to=8{FOLD}")
    models[extra[-1]] = fold_batchnorm(torch_pruning_uniform(base, example, target, round_to=8))
    return models, extra


def load() -> str:
    """The 1, 5 and 15 minute load averages."""
    with open("/proc/loadavg") as f:
        return "/".join(f.read().split()[:3])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20, help="timed calls per model per round (default 20)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--multiples", default="8,16", help="channel multiples to round our recipe to (default 8,16)")
    parser.add_argument("--random-seeds", default="0,1,2", help="seeds of the strategy=random searches (default 0,1,2)")
    parser.add_argument("--max-others", type=float, default=0.05,
                        help="rerun a round in which other processes used more than this share of the CPUs (0.05)")
    parser.add_argument("--default-malloc", action="store_true", help="leave glibc's malloc thresholds alone")
    parser.add_argument("--output", help="also write the report to this file")
    args = parser.parse_args(argv)
    if not args.default_malloc:
        steady_malloc()
    torch.set_num_threads(THREADS)
    report = [f"load average (1/5/15 min) at start: {load()}; torch {torch.__version__}, {THREADS} threads, "
              f"malloc {'default' if args.default_malloc else 'steady'}"]
    base, data, example = zoo.resnet20(), zoo.resnet20_data(), zoo.example_input("resnet20")
    base_flops = count_flops(base, example)
    limit = BUDGET * base_flops
    with tempfile.TemporaryDirectory(prefix="autocompress-speedup-") as tmp:
        folder = Path(tmp)
        uniform, recipe = ours(base, data, folder)
        target = count_flops(uniform, example)
        peer = torch_pruning_uniform(base, example, target)
        report.append(f"Torch-Pruning FLOPs / ours: {count_flops(peer, example) / target:.4f} (the closest a "
                      "uniform pruning_ratio gets)")
        models, extra = investigated(base, data, example, folder, uniform, recipe, peer, args, report)
        variants = []
        for name, model in models.items():
            flops = count_flops(model, example)
            if flops > limit and not name.startswith(BASE):
                raise SystemExit(f"{name} has {flops / base_flops:.4f} of the base FLOPs, above {BUDGET}")
            slug = "".join(c if c.isalnum() else "-" for c in name)
            variants.append(Variant(name, exported(model, example, folder, slug), flops, stage_widths(model)))
        for name in (BASE, OURS, PEER):  # as `autocompress apply` exports: folded, channels-last
            variants.append(Variant(name + SHIPPED, exported(models[name], example, folder, f"shipped{len(variants)}",
                                                             shipped=True), count_flops(models[name], example),
                                    stage_widths(models[name])))
        sixteen = f"{OURS}, rounded to 16{FOLD}"
        for name in (BASE + FOLD, sixteen):
            if name in models:
                cl = copy.deepcopy(models[name]).to(memory_format=torch.channels_last)
                extra.append(f"{name}, channels-last weights")
                variants.append(Variant(extra[-1], exported(cl, example, folder, f"cl{len(extra)}"),
                                        count_flops(cl, example), stage_widths(cl)))
        timed = {}
        for batch in BATCHES:
            x = example.expand(batch, *example.shape[1:]).contiguous()
            timed[batch] = latencies(variants, x, args.repeats, args.rounds, args.max_others)
        x32 = example.expand(32, *example.shape[1:]).contiguous()
        labels = [name for name in (BASE + FOLD, OURS + FOLD, sixteen) if name in models]
        programs = {v.name: v.program for v in variants}
        convs = [v for label in labels for v in conv_variants(label, models[label], x32)]
        convs += [Variant(f"{label}|model|", programs[label]) for label in labels]
        conv_timing = latencies(convs, x32, max(3, args.repeats // 2), args.rounds, args.max_others)
    for batch, timing in [*timed.items(), ("32, convs alone", conv_timing)]:
        report.append(f"batch {batch}: {timing.rerun} round(s) rerun because other processes used over "
                      f"{args.max_others:.0%} of the CPUs; at most {timing.worst_others:.1%} in a round kept")
    by_name = {v.name: v for v in variants}
    main_rows = [BASE, OURS, PEER, BASE + FOLD, OURS + FOLD, PEER + FOLD, BASE + SHIPPED, OURS + SHIPPED,
                 PEER + SHIPPED]
    report += ["", "### Main table", "", table([by_name[n] for n in main_rows], timed)]
    report += ["", "### Investigation (BN-folded; speedups against the unfolded base)", "",
               table([by_name[n] for n in [BASE, BASE + FOLD, OURS + FOLD, PEER + FOLD, *extra]], timed)]
    report += ["", "### Convolutions alone, per stage (BN-folded, eager convolutions, exported models, batch 32)", "",
               stage_table(conv_timing, {v.name: v.flops for v in convs}, labels)]
    report += ["", f"load average (1/5/15 min) at end: {load()}"]
    text = "\n".join(report)
    print(text)
    if args.output:
        Path(args.output).write_text(text + "\n")


if __name__ == "__main__":
    main()
