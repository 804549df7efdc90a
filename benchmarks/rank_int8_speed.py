"""Real CPU speed of low-rank and int8 compression on ResNet-20 (random weights).

Rows, each timed side by side in one run (interleaved rounds, median of repeats, 2 threads):
- Tucker-2 low rank at flops=0.5 (``--knobs rank``, uniform allocation) against the base,
  both exported with ``torch.export``;
- int8 (every Conv/Linear at 8 bits, ``apply --int8`` path) against the same float model,
  both as TorchScript (int8 packed weights cannot go through ``torch.export``).
Speedup = base latency / compressed latency; ideal = base FLOPs / compressed FLOPs (1.0 for
int8, whose FLOPs are unchanged: its gain is cheaper arithmetic and memory, not less work).

    python benchmarks/rank_int8_speed.py [--repeats 30] [--rounds 5]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import torch

from autocompress.api import apply, search
from autocompress.compress.export import export_model
from autocompress.compress.int8 import to_int8
from autocompress.core.recipe import Recipe
from autocompress.evaluators import count_flops
from autocompress.latency_models.measured import run_times
from autocompress.models import zoo


def latency_ms(model, x: torch.Tensor, repeats: int) -> float:
    return 1e3 * statistics.median(run_times(model, x, repeats, warmup=3))


def side_by_side(models: dict, x: torch.Tensor, repeats: int, rounds: int) -> dict[str, float]:
    results: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            results[name].append(latency_ms(model, x, repeats))
    return {name: statistics.median(v) for name, v in results.items()}


def exported(model, example, folder: Path, name: str):
    path = folder / f"{name}.pt2"
    export_model(model, example, path)
    return torch.export.load(str(path)).module()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(2)
    base = zoo.resnet20()
    data = zoo.resnet20_data()
    example = zoo.example_input("resnet20")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        common = dict(model=base, data=data, progress=False, trials=1, strategy="uniform", finetune_steps=0,
                      final_finetune_steps=0)
        ranked = search("flops=0.5", out=folder / "rank", knobs=("rank",), **common)
        rank_model, _ = apply(ranked.recipe_path, model=base, data=data)
        quant = search("size=0.3", out=folder / "bits", knobs=("bits",), **common)
        recipe = Recipe.load(quant.recipe_path)
        for layer in recipe.layers.values():
            layer["bits"] = 8
        float8, _ = apply(recipe, model=base, data=data)
        int8 = to_int8(float8, example, list(recipe.layers), data[0])
        float_ts = torch.jit.trace(float8.eval(), example)
        for batch in (1, 32):
            x = example.expand(batch, *example.shape[1:]).contiguous()
            pair = side_by_side({"base": exported(base, example, folder, "base"),
                                 "rank": exported(rank_model, example, folder, "rank")}, x, args.repeats, args.rounds)
            ideal = count_flops(base, x) / count_flops(rank_model, x)
            rows.append(("Tucker-2 rank, flops=0.5 (torch.export)", batch, pair["base"], pair["rank"], ideal))
            pair = side_by_side({"float": float_ts, "int8": int8}, x, args.repeats, args.rounds)
            rows.append(("int8, all layers (TorchScript)", batch, pair["float"], pair["int8"], 1.0))
    print("| model | batch | base ms | compressed ms | speedup | ideal (FLOPs ratio) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, batch, b, c, ideal in rows:
        print(f"| {name} | {batch} | {b:.3f} | {c:.3f} | {b / c:.2f}x | {ideal:.2f}x |")


if __name__ == "__main__":
    main()
