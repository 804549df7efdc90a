"""Spaces: the knobs a search may turn, built automatically from a model."""
from __future__ import annotations

from .builder import build_space

__all__ = ["build_space"]
