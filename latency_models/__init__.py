"""Latency models per target device (measured for now; learned and analytic ones follow)."""
from __future__ import annotations

from .measured import measure_cpu_latency

__all__ = ["measure_cpu_latency"]
