"""Measured latency on this machine's CPU (or a CUDA GPU where present).

``measure_cpu_latency`` times a whole model.  ``MeasuredLatency`` is a LatencyModel that
times each op as a real module (a Conv2d with the op's kernel, stride, padding and
groups, channels-last, or a Linear) on this device: warm-up, the fastest of the repeats,
fixed threads, and every measurement cached on disk keyed by the op's signature, the
batch and the device, so repeated searches do not re-measure.
"""
from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..core.ops import Op
from ..evaluators import batches
from .base import LatencyModel


def run_times(model: nn.Module, example_input: batches.Inputs, repeats: int, warmup: int,
              threads: int | None = None, cuda: bool = False) -> list[float]:
    """Seconds of each of ``repeats`` runs of the model on ``example_input`` (a tensor, a
    tuple or a dict: ``batches.call``) after ``warmup``
    runs, under inference mode, with torch's intra-op threads fixed at ``threads`` for
    the measurement (restored after); ``cuda`` synchronises around every run."""
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        times = []
        with torch.inference_mode():
            for _ in range(warmup):
                batches.call(model, example_input)
            for _ in range(repeats):
                if cuda:
                    torch.cuda.synchronize()
                start = time.perf_counter()
                batches.call(model, example_input)
                if cuda:
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - start)
        return times
    finally:
        torch.set_num_threads(previous)


def measure_cpu_latency(model: nn.Module, example_input: batches.Inputs, repeats: int = 50,
                        warmup: int = 10, threads: int | None = None) -> float:
    """Median latency in milliseconds of the model on ``example_input`` after ``warmup``
    runs, on the CPU (model and input are expected there).

    ``threads`` fixes torch's intra-op thread count for the measurement (restored after).
    """
    try:
        model.eval()
    except NotImplementedError:  # a loaded torch.export program: already in eval mode
        pass
    return 1e3 * statistics.median(run_times(model, example_input, repeats, warmup, threads))


class _Attention(nn.Module):
    """Fused attention (``scaled_dot_product_attention``) of queries over fixed keys and
    values, laid out (batch, heads, positions, head_dim) as views of (batch, positions,
    heads x head_dim), as multi-head attention splits its projections."""

    def __init__(self, batch: int, keys: int, heads: int, head_dim: int):
        super().__init__()
        self.register_buffer("keys", torch.randn(batch, keys, heads, head_dim).transpose(1, 2))
        self.register_buffer("values", torch.randn(batch, keys, heads, head_dim).transpose(1, 2))

    def forward(self, queries: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.scaled_dot_product_attention(queries, self.keys, self.values)


def op_module(op: Op, batch: int, device: str = "cpu") -> tuple[nn.Module, torch.Tensor]:
    """A module running ``op`` and an input for it (random weights: only time matters;
    convolutions with channels-last weights, as ``export_model`` writes them)."""
    if op.kind == "attention":
        module = _Attention(batch, op.n, op.groups, op.k)
        x = torch.randn(batch, op.m, op.groups, op.k).transpose(1, 2)
    elif op.geometry:
        h, w, sh, sw, ph, pw, dh, dw = op.geometry
        module = nn.Conv2d(op.in_channels, op.n * op.groups, op.kernel, (sh, sw), (ph, pw), (dh, dw), op.groups)
        module = module.to(memory_format=torch.channels_last)  # as export_model ships convolutions
        # in a shipped model every convolution after the first gets its input channels-last
        x = torch.randn(batch, op.in_channels, h, w).contiguous(memory_format=torch.channels_last)
    else:
        module = nn.Linear(op.k, op.n)
        x = torch.randn(batch * op.m, op.k)
    return module.to(device).eval(), x.to(device)


TIMING = 2  # how ops are timed (channels-last inputs, fastest of the repeats); older caches do not mix in


def device_key(device: str = "cpu", threads: int | None = None) -> str:
    """What a measurement depends on besides the op: processor, threads, torch version."""
    if device == "cuda":
        name = torch.cuda.get_device_name()
    else:
        name = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
    return (f"{device}|{name}|threads={threads or torch.get_num_threads()}|torch={torch.__version__.split('+')[0]}"
            f"|timing={TIMING}")


def cache_file(device: str = "cpu") -> Path:
    from ..core.paths import cache_dir

    return cache_dir() / "latency" / f"measured-{device}.json"


class MeasuredLatency(LatencyModel):
    """Times each op on this machine (``cpu``, or ``cuda`` where a GPU is present)."""

    kind = "measured"

    def __init__(self, name: str = "cpu", device: str = "cpu", threads: int | None = None, repeats: int = 20,
                 warmup: int = 5, cache: str | None = None):
        super().__init__(name)
        if device == "cuda" and not torch.cuda.is_available():
            from ..core.errors import BudgetError

            raise BudgetError("target 'cuda' needs a CUDA GPU, and torch sees none on this machine")
        self.device, self.threads = device, threads or torch.get_num_threads()
        self.repeats, self.warmup = repeats, warmup
        self.cache_path = Path(cache) if cache else cache_file(device)
        self._key = device_key(device, self.threads)
        self._cache: dict[str, float] | None = None

    def _load(self) -> dict[str, float]:
        if self._cache is None:
            try:
                self._cache = dict(json.loads(self.cache_path.read_text()).get(self._key, {}))
            except (OSError, ValueError):
                self._cache = {}
        return self._cache

    def _store(self) -> None:
        try:
            data = json.loads(self.cache_path.read_text()) if self.cache_path.exists() else {}
        except ValueError:
            data = {}
        data[self._key] = self._load()
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.cache_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.cache_path)

    def measure(self, op: Op, batch: int = 1) -> float:
        """Time ``op`` now (no cache)."""
        module, x = op_module(op, batch, self.device)
        times = run_times(module, x, self.repeats, self.warmup, self.threads, cuda=self.device == "cuda")
        # the fastest repeat: other processes only ever add time, so on a shared machine the
        # minimum repeats best from one measurement to the next (BENCHMARKS.md, latency models)
        return 1e3 * min(times)

    @staticmethod
    def _cache_key(op: Op, batch: int) -> str:
        return f"{op.signature()}|b={batch}"

    def predict_op(self, op: Op, batch: int = 1) -> float:
        cache = self._load()
        key = self._cache_key(op, batch)
        if key not in cache:
            cache[key] = self.measure(op, batch)
            self._store()
        return cache[key]

    def remeasure(self, op: Op, batch: int = 1) -> float:
        """Time ``op`` again and keep the faster of this and the cached time (a first
        timing taken while other processes were busy is replaced)."""
        cache = self._load()
        key = self._cache_key(op, batch)
        cache[key] = min(cache.get(key, math.inf), self.measure(op, batch))
        self._store()
        return cache[key]

    def params(self) -> dict[str, Any]:
        return {"device": self.device, "threads": self.threads, "repeats": self.repeats, "warmup": self.warmup,
                "cache": str(self.cache_path)}


def measure_pair(base: nn.Module, compressed: nn.Module, example_input: batches.Inputs,
                 rounds: int = 3) -> tuple[float, float]:
    """CPU latency (ms, median) of two models at the example's batch size, timed in
    alternating rounds so machine noise hits both alike."""
    a, b = [], []
    for _ in range(rounds):
        a.append(measure_cpu_latency(base, example_input, repeats=30))
        b.append(measure_cpu_latency(compressed, example_input, repeats=30))
    return sorted(a)[len(a) // 2], sorted(b)[len(b) // 2]
