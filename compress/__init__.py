"""Compression operators that turn layer settings into a real, smaller model."""
from __future__ import annotations

from .apply import OPERATORS, compress
from .base import Operator
from .channels import ChannelPruning
from .sparsity import MagnitudeSparsity

__all__ = ["Operator", "ChannelPruning", "MagnitudeSparsity", "OPERATORS", "compress"]
