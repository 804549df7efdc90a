"""Apply layer settings to a copy of a model, giving a real, smaller nn.Module."""
from __future__ import annotations

import copy
from typing import Mapping

import torch
import torch.nn as nn

from ..errors import RecipeError
from ..space import Space
from .base import Operator
from .channels import ChannelPruning
from .sparsity import MagnitudeSparsity

OPERATORS: tuple[Operator, ...] = (ChannelPruning(), MagnitudeSparsity())
"""Applied in this order: structure first, then masks on what remains."""


def compress(model: nn.Module, space: Space, settings: Mapping[str, Mapping[str, float]],
             example_input: torch.Tensor) -> nn.Module:
    """A compressed copy of ``model``; the original is left untouched.

    Raises RecipeError if ``settings`` names a layer the space does not know.
    """
    known = {layer.name for layer in space.layers}
    for name in settings:
        if name not in known:
            raise RecipeError(f"layer {name!r} is not a compressible layer of this model")
    compressed = copy.deepcopy(model).eval()
    for operator in OPERATORS:
        if operator.needed(settings, space):
            operator.apply(compressed, space, settings, example_input)
    return compressed
