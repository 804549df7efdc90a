"""Apply layer settings to a copy of a model, giving a real, smaller nn.Module."""
from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from ..core.errors import RecipeError
from ..core.kinds import kinds
from ..core.space import Space


def compress(model: nn.Module, space: Space, settings: Mapping[str, Mapping], example_input: torch.Tensor) -> nn.Module:
    """A compressed copy of ``model`` with its weight constraints attached as
    parametrizations (ready to fine-tune and to measure); ``bake`` makes it plain.
    The original is left untouched.  The operators of the registered kinds
    (``core.kinds``) run in registration order, each where it is ``needed``: the built-in
    ones apply structure first (channels and attention heads), then the weight constraints
    (masks; factorisation of other layers) and quantisation on what remains.  Raises
    RecipeError if ``settings`` names a layer the space does not know.
    """
    known = {layer.name for layer in space.layers}
    for name in settings:
        if name not in known:
            raise RecipeError(f"layer {name!r} is not a compressible layer of this model")
    space.shapes(settings)  # raises for settings this model cannot take
    compressed = copy.deepcopy(model).eval()
    for kind in kinds():
        if kind.operator is not None and kind.operator.needed(settings, space):
            kind.operator.apply(compressed, space, settings, example_input)
    return compressed


def bake(model: nn.Module) -> nn.Module:
    """Write every parametrization's value into a plain weight, in place; returns ``model``."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return model
