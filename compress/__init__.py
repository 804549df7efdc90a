"""Compression operators that turn layer settings into a real, smaller model, and the
built-in compression kinds (``core.kinds.Kind``), each next to its operator and all
registered here, in the order knobs, costs and operators follow."""
from __future__ import annotations

from ..core.kinds import kind_names, register_kind
from .apply import bake, compress, constrain, restructure, weight_constraints
from .attention import HeadPrunedAttention, HeadPruning, head_scores
from .base import Operator
from .channels import ChannelKind, ChannelPruning
from .lowrank import LowRank, RankKind, factorise
from .masks import MagnitudeSparsity, SparsityKind, WeightMask, magnitude_mask
from .quantize import BitsKind, BitWidth, FakeQuantize, quantize

BUILTIN_KINDS = (ChannelKind(), SparsityKind(), RankKind(), BitsKind())
"""Registered in this order: channels, sparsity, rank, bits."""

for _kind in BUILTIN_KINDS:
    if _kind.name not in kind_names():
        register_kind(_kind)

__all__ = ["Operator", "ChannelPruning", "HeadPruning", "HeadPrunedAttention", "head_scores", "LowRank",
           "MagnitudeSparsity", "BitWidth", "WeightMask", "FakeQuantize", "ChannelKind", "SparsityKind", "RankKind",
           "BitsKind", "BUILTIN_KINDS", "compress", "restructure", "constrain", "weight_constraints", "bake",
           "factorise", "magnitude_mask", "quantize"]
