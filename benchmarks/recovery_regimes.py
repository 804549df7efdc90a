"""Recovery regimes against the distillation fine-tune at the seeds' compression, on MNIST.

Every row recovers the same recipe two or more ways, each given the same number of
training epochs in all (a regime's share plus the masked fine-tune; ``distill`` spends
them all on the fine-tune), through ``engine.evaluation.compress_and_recover`` as
``apply`` does, and reports the test accuracy, the accuracy right after the constraints
are applied (before the masked fine-tune: "hard"), the wall time, and the weights kept.

Rows (``--rows``; the models are trained on first use and cached, see
``autocompress.models.datasets``):

- ``lenet5-admm71``: Caffe LeNet-5 at ADMM pruning's per-layer densities (conv1 20%,
  conv2 8%, fc1 0.9%, fc2 7%: 71x), admm vs distill.
- ``lenet5-search80``: Caffe LeNet-5 searched at ``params=0.0125`` (80x, sparsity knobs,
  default strategy) with ``--final-recovery admm``.
- ``mlp-uniform``: LeNet-300-100, uniform 16.7x unstructured (sparsity 0.94), admm vs distill.
- ``mlp-hoyer``: LeNet-300-100 keeping 2.5% of the weights (fc1 1.5%, fc2 7%, the 10-class
  head dense: a uniform 2.5% leaves the head 25 weights and starts every regime at
  chance), hoyer vs distill, at twice ``--epochs``.
- ``mlp-blocks``: LeNet-300-100 keeping 10% of fc1 and fc2 in 4x4 blocks (the head dense),
  group-hoyer, hspg and admm vs distill.
- ``lenet5-admm4bit``: the 71x allocation plus 4-bit weights, admm vs distill; the size
  ratio under the bitmap and the relative-index storage models.
- ``mlp-slr``: LeNet-300-100 at 16.7x, slr vs admm: the hard-pruned accuracy.

    python benchmarks/recovery_regimes.py [--rows ...] [--epochs 4] [--seeds 0]
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

ROWS = ("mlp-uniform", "mlp-slr", "mlp-hoyer", "mlp-blocks", "lenet5-admm71", "lenet5-admm4bit", "lenet5-search80")
ADMM71 = {"conv1": 0.20, "conv2": 0.08, "fc1": 0.009, "head": 0.07}
"""Kept fraction per layer of the Caffe LeNet-5 in ADMM pruning (Zhang et al. 2018), 71x."""


def workload_for(name: str):
    from autocompress.core.workload import Workload
    from autocompress.models import datasets

    model, accuracy = (datasets.load_mnist_lenet5_caffe if name == "lenet5" else datasets.load_mnist_lenet300_100)()
    train, val, test = datasets.mnist_data()
    example = next(iter(train))[0][:1]
    return Workload(name, model, example, train, val, test), accuracy


def layers_for(workload, densities: dict[str, float], bits: int = 32, pattern: str = "unstructured"):
    from autocompress.spaces import build_space

    kinds = ("sparsity", "bits") if bits < 32 else ("sparsity",)
    space = build_space(workload.model, workload.example_input, sparsity_pattern=pattern).restrict(kinds)
    candidate = {k.name: densities[k.target] if k.kind == "sparsity" else bits / 32 for k in space.knobs}
    return space, space.resolve(candidate)


def storage(model) -> dict[str, float]:
    """Bytes of the model's Conv/Linear weights under each storage model of sparse weights
    (each no more than dense at the layer's bit-width; ``dense``: every weight at 32 bits,
    the base model's storage), other parameters left out."""
    from autocompress.core.patterns import relative_index_bits
    from autocompress.evaluators.costs import _weights

    totals = {"bitmap": 0, "relative-index": 0, "dense": 0}
    for rows, cols, nnz, bits, _, _ in _weights(model):
        numel = rows * cols
        totals["dense"] += 32 * numel
        totals["bitmap"] += min(numel * bits, nnz * bits + numel)
        totals["relative-index"] += min(numel * bits, relative_index_bits(numel, nnz, bits))
    return {kind: math.ceil(b / 8) for kind, b in totals.items()}


def recover(workload, space, layers, method: str, epochs: float, seed: int, params: dict | None = None,
            lr: float = 1e-3) -> dict:
    from autocompress.compress import bake
    from autocompress.engine.evaluation import compress_and_recover
    from autocompress.evaluators import accuracy, count_params

    recovery = {"calibration_batches": 20, "finetune_steps": int(round(epochs * len(workload.train))), "lr": lr,
                "temperature": 4.0, "seed": seed, "method": method, "params": dict(params or {})}
    hard = {}

    def constrained(model):
        hard["accuracy"] = accuracy(model, workload.test)

    start = time.perf_counter()
    model = compress_and_recover(workload, space, layers, recovery, constrained=constrained)
    seconds = time.perf_counter() - start
    result = {"method": method, "seed": seed, "epochs": epochs, "lr": lr, "accuracy": accuracy(model, workload.test),
              "hard_accuracy": hard["accuracy"], "seconds": round(seconds, 1),
              "params": count_params(model)}
    result["storage"] = storage(model)
    bake(model)
    return result


def compare(name: str, workload_name: str, densities, methods, epochs: float, seeds, bits: int = 32,
            params: dict | None = None, lr: float = 1e-3, pattern: str = "unstructured") -> dict:
    workload, base = workload_for(workload_name)
    from autocompress.evaluators import count_params

    space, layers = layers_for(workload, densities, bits, pattern)
    runs = [recover(workload, space, layers, m, epochs, s, (params or {}).get(m), lr) for m in methods for s in seeds]
    base_params = count_params(workload.model)
    return {"row": name, "model": workload_name, "base_accuracy": base, "base_params": base_params,
            "base_storage": storage(workload.model), "bits": bits, "runs": runs}


def search_row(epochs: float, seeds, trials: int, lr: float = 1e-3) -> dict:
    import tempfile

    from autocompress.api import search

    workload, base = workload_for("lenet5")
    runs = []
    for seed in seeds:
        start = time.perf_counter()
        result = search(model=workload.model, data=(workload.train, workload.val, workload.test),
                        budget="params=0.0125", knobs=("sparsity",), trials=trials, seed=seed,
                        final_recovery="admm", final_finetune_steps=int(round(epochs * len(workload.train))), lr=lr,
                        out=tempfile.mkdtemp(), progress=False)
        compressed = result.recipe.metrics["compressed"]
        runs.append({"method": "admm (searched)", "seed": seed, "epochs": epochs, "accuracy": compressed["accuracy"],
                     "hard_accuracy": None, "lr": lr, "seconds": round(time.perf_counter() - start, 1),
                     "params": compressed["params"], "trials": trials})
    return {"row": "lenet5-search80", "model": "lenet5", "base_accuracy": base,
            "base_params": result.recipe.metrics["base"]["params"], "runs": runs}


def run_row(row: str, epochs: float, seeds, trials: int, lr: float = 1e-3) -> dict:
    uniform = {"fc1": 0.06, "fc2": 0.06, "head": 0.06}
    if row == "mlp-uniform":
        return compare(row, "mlp", uniform, ("distill", "admm"), epochs, seeds, lr=lr)
    if row == "mlp-slr":
        return compare(row, "mlp", uniform, ("admm", "slr"), epochs, seeds, lr=lr)
    if row == "mlp-hoyer":
        sparse = {"fc1": 0.015, "fc2": 0.07, "head": 1.0}
        return compare(row, "mlp", sparse, ("distill", "hoyer"), 2 * epochs, seeds, lr=lr)
    if row == "mlp-blocks":
        blocks = {"fc1": 0.1, "fc2": 0.1, "head": 1.0}
        methods = ("distill", "group-hoyer", "hspg", "admm")
        return compare(row, "mlp", blocks, methods, epochs, seeds, lr=lr, pattern="4x4")
    if row == "lenet5-admm71":
        return compare(row, "lenet5", ADMM71, ("distill", "admm"), epochs, seeds, lr=lr)
    if row == "lenet5-admm4bit":
        return compare(row, "lenet5", ADMM71, ("distill", "admm"), epochs, seeds, bits=4, lr=lr)
    if row == "lenet5-search80":
        return search_row(epochs, seeds, trials, lr)
    raise SystemExit(f"unknown row {row!r}; choose from {', '.join(ROWS)}")


def table(results: list[dict]) -> str:
    lines = ["| row | method | seed | epochs | lr | weights kept | accuracy (base) | loss (pt) | hard-pruned | "
             "size ratio (bitmap / rel-index) | wall s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for result in results:
        for run in result["runs"]:
            ratio = ""
            if "storage" in run and "base_storage" in result:
                dense = result["base_storage"]["dense"]
                ratio = " / ".join(f"{dense / run['storage'][k]:.0f}x" for k in ("bitmap", "relative-index"))
            hard = "" if run["hard_accuracy"] is None else f"{run['hard_accuracy']:.2f}"
            lines.append(
                f"| {result['row']} | {run['method']} | {run['seed']} | {run['epochs']:g} | {run.get('lr', 1e-3):g} | "
                f"{result['base_params'] / run['params']:.1f}x | {run['accuracy']:.2f} ({result['base_accuracy']:.2f})"
                f" | {result['base_accuracy'] - run['accuracy']:.2f} | {hard} | {ratio} | {run['seconds']:.0f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--epochs", type=float, default=4.0, help="training epochs per recovery, all in (default 4)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--lr", type=float, default=1e-3,
                        help="peak lr of every recovery, regime and fine-tune (lenet5-search80: the proxy's too)")
    parser.add_argument("--trials", type=int, default=20, help="search trials of lenet5-search80 (default 20)")
    parser.add_argument("--out", default="benchmarks/results/recovery_regimes.json")
    args = parser.parse_args()
    results = []
    for row in args.rows:
        results.append(run_row(row, args.epochs, args.seeds, args.trials, args.lr))
        Path(args.out).write_text(json.dumps(results, indent=1))
        print(table(results[-1:]), flush=True)
    print("\n" + table(results))


if __name__ == "__main__":
    main()
