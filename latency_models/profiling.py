"""``autocompress profile``: fit this machine's learned latency model.

Random ops are timed one by one (``latency_models.learned.profile``, adaptive sampling),
then the zoo's models, compressed at random channel settings and exported as ``apply``
exports them, are timed whole so the model learns what runs between the layers
(``fit_glue``).  The same steps serve ``benchmarks/latency_models.py``, which holds out
other compressions and models never profiled.
"""
from __future__ import annotations

import statistics
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from ..core.ops import Op, space_ops
from .learned import BATCHES, SAMPLES_PER_KIND, LearnedLatency, fit_glue, profile
from .measured import MeasuredLatency, device_key, measure_cpu_latency


def compressed_models(models: Sequence[tuple[str, torch.nn.Module, torch.Tensor]], per_model: int,
                      rng: np.random.Generator, base: bool = True) -> list[tuple]:
    """``(name, model, example input, ops per sample)`` for each ``(name, model, example
    input)``: the model itself (``base``), then ``per_model`` copies with every channel
    group kept at a random 20-100%.  Models are compressed and baked as ``apply`` builds
    them."""
    from ..compress import bake, compress
    from ..spaces import build_space

    out = []
    for name, model, x in models:
        model = model.eval()
        space = build_space(model, x)
        for copy in range(0 if base else 1, per_model + 1):
            candidate = {} if copy == 0 else {k.name: float(rng.uniform(0.2, 1.0)) for k in space.knobs
                                              if k.kind == "channels"}
            settings = space.resolve(candidate)
            small = bake(compress(model, space, settings, x)) if candidate else model
            out.append((name, small, x, space_ops(space, settings)))
    return out


def measure_exported(model: torch.nn.Module, x: torch.Tensor, batches: Sequence[int] = BATCHES,
                     repeats: int = 20) -> dict[int, float]:
    """Milliseconds per batch size of ``model`` exported as ``apply`` exports it (BN folded,
    channels-last) and loaded back: the median of three medians of ``repeats`` runs."""
    from ..compress.export import export_model

    with tempfile.TemporaryDirectory() as folder:
        export_model(model, x, Path(folder) / "m.pt2")
        program = torch.export.load(str(Path(folder) / "m.pt2")).module()
    out = {}
    for batch in batches:
        xb = x.expand(batch, *x.shape[1:]).contiguous()
        out[batch] = statistics.median(measure_cpu_latency(program, xb, repeats=repeats) for _ in range(3))
    return out


def whole_model_samples(items: Sequence[tuple], batches: Sequence[int] = BATCHES, repeats: int = 20,
                        progress: Callable[[str], None] | None = None) -> list[tuple[list[Op], int, float]]:
    """``(ops, batch, measured ms)`` for every model of ``compressed_models`` at every batch."""
    samples = []
    for i, (name, model, x, ops) in enumerate(items):
        for batch, ms in measure_exported(model, x, batches, repeats).items():
            samples.append((ops, batch, ms))
        if progress:
            progress(f"whole models: {i + 1}/{len(items)} ({name})")
    return samples


def profile_device(target: str = "cpu", samples_per_kind: int = SAMPLES_PER_KIND, rounds: int = 2, seed: int = 0,
                   measured: MeasuredLatency | None = None,
                   models: Sequence[tuple[str, torch.nn.Module, torch.Tensor]] = (),
                   per_model: int = 2, progress: Callable[[str], None] | None = None) -> LearnedLatency:
    """This machine's learned latency model for ``target``: random ops and the layers of
    ``models``, ``(name, model, example input)`` each (the zoo's ``PROFILED`` and the
    user's own; compressed at random) profiled with ``measured`` (its disk cache), then the
    between-the-layers term fitted on those models measured whole (no models skips both;
    ``target`` ``cuda`` times its ops only)."""
    measured = measured or MeasuredLatency(target, device=target)
    rng = np.random.default_rng(seed)
    items = compressed_models(models, per_model, rng)
    layers = {(op.signature(), batch): (op, batch) for *_, ops in items for op in ops
              for batch in [int(rng.choice(BATCHES))]}  # each layer of real models once, at a random batch
    model = profile(measured.predict_op, f"learned-{target}", device_key(target), samples_per_kind, rounds,
                    seed=seed, progress=progress, extra=list(layers.values()), remeasure=measured.remeasure)
    if items and target == "cpu":
        model.glue = fit_glue(model, whole_model_samples(items, progress=progress))
    return model
