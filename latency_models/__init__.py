"""Latency models per target device: measured (this machine's CPU) and analytic (GPU
roofline, embedded GPUs, systolic-array ASICs), behind one base class."""
from __future__ import annotations

from .analytic import GPURoofline, SystolicArray, presets
from .base import LatencyModel, LatencyReport
from .measured import measure_cpu_latency
from .registry import get_latency_model, load_latency_model, target_names

__all__ = ["LatencyModel", "LatencyReport", "GPURoofline", "SystolicArray", "presets", "get_latency_model",
           "load_latency_model", "target_names", "measure_cpu_latency"]
