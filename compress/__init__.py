"""Compression operators that turn layer settings into a real, smaller model."""
from __future__ import annotations

from .apply import OPERATORS, bake, compress
from .attention import HeadPrunedAttention, HeadPruning, head_scores
from .base import Operator
from .channels import ChannelPruning
from .lowrank import LowRank, factorise
from .masks import MagnitudeSparsity, WeightMask, magnitude_mask
from .quantize import BitWidth, FakeQuantize, quantize

__all__ = ["Operator", "ChannelPruning", "HeadPruning", "HeadPrunedAttention", "head_scores", "LowRank", "MagnitudeSparsity", "BitWidth", "WeightMask", "FakeQuantize",
           "OPERATORS", "compress", "bake", "factorise", "magnitude_mask", "quantize"]
