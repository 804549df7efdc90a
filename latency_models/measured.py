"""Measured latency: wall-clock timing of a model on this machine's CPU."""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn as nn


def measure_cpu_latency(model: nn.Module, example_input: torch.Tensor, repeats: int = 50,
                        warmup: int = 10, threads: int | None = None) -> float:
    """Median latency in milliseconds of ``model(example_input)`` after ``warmup`` runs.

    ``threads`` fixes torch's intra-op thread count for the measurement (restored after).
    """
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        model.eval()
        times = []
        with torch.inference_mode():
            for _ in range(warmup):
                model(example_input)
            for _ in range(repeats):
                start = time.perf_counter()
                model(example_input)
                times.append(time.perf_counter() - start)
        return 1e3 * statistics.median(times)
    finally:
        torch.set_num_threads(previous)
