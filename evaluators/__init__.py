"""Evaluators: score a compressed model by quality and costs."""
from __future__ import annotations

from .accuracy import accuracy, distill, recalibrate_batchnorm
from .costs import count_flops, count_params, measure_costs, size_bytes

__all__ = ["accuracy", "distill", "recalibrate_batchnorm", "count_flops", "count_params", "measure_costs", "size_bytes"]
