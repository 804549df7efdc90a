"""GPU check: one command, a few minutes on one GPU, a markdown table for BENCHMARKS.md.

1. A torchvision ResNet-18 (224x224, random weights, 10 classes, self-labelled random
   images) searched at ``flops=0.5``: seconds per trial on CUDA against this machine's
   CPU (same settings, same trial count; BatchNorm recalibration + a 20-step distillation
   fine-tune + scoring per trial).
2. The chosen recipe's model exported (``export_model``, a CPU program), loaded back and
   timed on CUDA against the base model exported the same way (batch 1 and 32).
3. The analytic preset nearest the GPU present (``h100`` for an H100 or H200) against
   per-layer CUDA latency measured by ``MeasuredLatency`` on the base model's ops: mean
   absolute percentage error per batch size.

    python benchmarks/gpu_check.py              # on a machine with a CUDA GPU
    python benchmarks/gpu_check.py --device cpu --size 32 --trials 1   # the same steps on a CPU (a smoke test)

With ``--device cpu`` every step runs on the CPU in place of CUDA (the preset comparison
then uses the h100 preset against CPU timings, which says nothing about either: it only
checks the script runs).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

PRESET_FOR = (("h100", "h100"), ("h200", "h100"), ("a100", "a100"), ("4090", "rtx4090"),
              ("orin nano", "jetson-orin-nano"), ("orin", "jetson-agx-orin"), ("xavier", "xavier-nx"))


def nearest_preset(device_name: str) -> str:
    """The analytic GPU preset nearest a CUDA device name (h100 when none is closer)."""
    lowered = device_name.lower()
    return next((preset for key, preset in PRESET_FOR if key in lowered), "h100")


def workload(size: int, device: str):
    """ResNet-18 with random weights and self-labelled random images (train, val, test)."""
    import torch

    from autocompress.models.thirdparty import import_torchvision

    torch.manual_seed(0)
    model = import_torchvision().models.resnet18(num_classes=10).eval()
    runner = model.to(device)

    def batches(n: int, seed: int):
        generator = torch.Generator().manual_seed(seed)
        out = []
        with torch.no_grad():
            for _ in range(n):
                x = torch.randn(32, 3, size, size, generator=generator)
                out.append((x, runner(x.to(device)).argmax(dim=1).cpu()))
        return out

    data = (batches(20, 1), batches(4, 2), batches(4, 3))
    return model.cpu(), data


def search_seconds(device: str, size: int, trials: int):
    """(mean seconds per search trial, the search's result) on ``device``."""
    import autocompress.engine.trials as trials_module
    from autocompress.api import search

    model, data = workload(size, device)
    seconds: list[float] = []
    evaluate = trials_module.evaluate_trial

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return evaluate(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    trials_module.evaluate_trial = timed
    try:
        with tempfile.TemporaryDirectory() as out:
            result = search("flops=0.5", model=model, data=data, out=out, progress=False, trials=trials,
                            strategy="random", final_finetune_steps=0, device=device)
    finally:
        trials_module.evaluate_trial = evaluate
    return statistics.mean(seconds), result, model, data


def exported_latency(model, example, device: str, batch: int) -> float:
    """Median ms of the exported (``export_model``) program of ``model``, loaded back and
    run on ``device`` at ``batch``."""
    import torch

    from autocompress.compress.export import export_model
    from autocompress.latency_models.measured import run_times

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.pt2"
        export_model(model, example, path)
        program = torch.export.load(str(path)).module().to(device)
    x = example.expand(batch, *example.shape[1:]).contiguous().to(device)
    return 1e3 * statistics.median(run_times(program, x, repeats=30, warmup=10, cuda=device.startswith("cuda")))


def preset_mape(model, example, device: str, preset: str, batch: int) -> tuple[float, int]:
    """MAPE (%) of the preset's per-op predictions against ops timed on ``device``, over
    the base model's ops at ``batch``; and the number of ops."""
    from autocompress.core.ops import space_ops
    from autocompress.latency_models import get_latency_model
    from autocompress.latency_models.measured import MeasuredLatency
    from autocompress.spaces import build_space

    space = build_space(model, example)
    ops = space_ops(space, space.resolve(space.neutral()))
    measured = MeasuredLatency("check", device="cuda" if device.startswith("cuda") else "cpu", repeats=20, warmup=5,
                               cache=str(Path(tempfile.gettempdir()) / "autocompress-gpu-check.json"))
    analytic = get_latency_model(preset)
    errors = []
    for op in ops:
        real = measured.measure(op, batch)
        errors.append(abs(analytic.predict_op(op, batch) - real) / real)
    return 100 * statistics.mean(errors), len(ops)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu for a smoke test")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--cpu-trials", type=int, default=1, help="trials of the CPU search it is compared with")
    args = parser.parse_args()
    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("gpu_check: torch sees no CUDA GPU on this machine; run it where one is, or --device cpu for a "
                 "smoke test")
    name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "cpu (smoke test)"
    preset = nearest_preset(name)
    start = time.perf_counter()
    dev_s, result, model, data = search_seconds(args.device, args.size, args.trials)
    cpu_s, *_ = search_seconds("cpu", args.size, args.cpu_trials)
    example = data[0][0][0][:1]
    rows = [("ResNet-18 search, s/trial", f"{cpu_s:.2f}", f"{dev_s:.2f}", f"{cpu_s / dev_s:.1f}x faster")]
    compressed = result.model.cpu()
    for batch in (1, 32):
        base_ms = exported_latency(model, example, args.device, batch)
        small_ms = exported_latency(compressed, example, args.device, batch)
        rows.append((f"exported ResNet-18 on {args.device}, batch {batch}, ms", f"base {base_ms:.3f}",
                     f"flops=0.5 recipe {small_ms:.3f}", f"{base_ms / small_ms:.2f}x faster"))
    for batch in (1, 32):
        mape, count = preset_mape(model, example, args.device, preset, batch)
        rows.append((f"preset {preset} vs measured per-layer latency, batch {batch}", f"{count} ops",
                     f"MAPE {mape:.0f}%", ""))
    print(f"\n{name}, torch {torch.__version__}, {args.size}x{args.size}, {args.trials} trials on {args.device}, "
          f"{args.cpu_trials} on cpu ({torch.get_num_threads()} threads); {time.perf_counter() - start:.0f} s\n")
    print("| check | CPU (search) or base model | device (search) or compressed model | ratio |")
    print("|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
