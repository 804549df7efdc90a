"""Evaluators: score a compressed model by quality and costs."""
from __future__ import annotations

from .accuracy import accuracy, distill, evaluate, recalibrate_batchnorm
from .costs import count_flops, count_params, measure_costs, size_bytes
from .device import CPU, Runtime, runtime
from .metrics import METRICS, Metric, get_metric

__all__ = ["accuracy", "evaluate", "distill", "recalibrate_batchnorm", "count_flops", "count_params", "measure_costs",
           "size_bytes", "Runtime", "CPU", "runtime", "Metric", "METRICS", "get_metric"]
