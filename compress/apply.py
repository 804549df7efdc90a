"""Apply layer settings to a copy of a model, giving a real, smaller nn.Module: in one go
(``compress``) or in the two steps a recovery regime trains between (``restructure``, then
``constrain``), with the projections it trains towards (``weight_constraints``)."""
from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
import torch.nn as nn
from torch.nn.utils import parametrize

from ..core.errors import RecipeError
from ..core.kinds import kinds
from ..core.space import Space
from ..evaluators.recovery import Constraint
from .conv1d import linearise


def compress(model: nn.Module, space: Space, settings: Mapping[str, Mapping], example_input: torch.Tensor) -> nn.Module:
    """A compressed copy of ``model`` with its weight constraints attached as
    parametrizations (ready to fine-tune and to measure); ``bake`` makes it plain.
    The original is left untouched.  The operators of the registered kinds
    (``core.kinds``) run in registration order, each where it is ``needed``: the built-in
    ones apply structure first (channels and attention heads), then the weight constraints
    (masks; factorisation of other layers) and quantisation on what remains.  Raises
    RecipeError if ``settings`` names a layer the space does not know.
    """
    return constrain(restructure(model, space, settings, example_input), space, settings, example_input)


def restructure(model: nn.Module, space: Space, settings: Mapping[str, Mapping],
                example_input: torch.Tensor) -> nn.Module:
    """A copy of ``model`` with only the structural operators applied (channels, heads:
    ``Operator.structural``): the dense model a recovery regime trains.  RecipeError as
    ``compress``."""
    known = {layer.name for layer in space.layers}
    for name in settings:
        if name not in known:
            raise RecipeError(f"layer {name!r} is not a compressible layer of this model")
    space.shapes(settings)  # raises for settings this model cannot take
    restructured = copy.deepcopy(model).eval()
    for kind in kinds():
        if kind.operator is not None and kind.operator.structural and kind.operator.needed(settings, space):
            kind.operator.apply(restructured, space, settings, example_input)
    return restructured


def constrain(model: nn.Module, space: Space, settings: Mapping[str, Mapping],
              example_input: torch.Tensor) -> nn.Module:
    """Apply the weight operators (all but the structural ones) to ``model`` in place,
    computed from its current weights: masks, factorisation, quantisation attached as
    parametrizations.  ``model`` is a ``restructure`` result; returns it."""
    for kind in kinds():
        if kind.operator is not None and not kind.operator.structural and kind.operator.needed(settings, space):
            kind.operator.apply(model, space, settings, example_input)
    return model


def weight_constraints(model: nn.Module, space: Space, settings: Mapping[str, Mapping]) -> list[Constraint]:
    """The weights of ``model`` (a ``restructure`` result) that ``constrain`` would
    constrain, each with the composition, in operator order, of the projections of the
    kinds constraining it (``Operator.projections``)."""
    linearise(model)  # as the weight operators see the model
    found: dict[int, Constraint] = {}
    for kind in kinds():
        operator = kind.operator
        if operator is None or operator.structural or not operator.needed(settings, space):
            continue
        for constraint in operator.constraints(model, space, settings):
            entry = found.setdefault(id(constraint.weight), constraint)
            if entry is not constraint:
                entry.project = _then(entry.project, constraint.project)
                entry.kinds += constraint.kinds
                if constraint.sparsity:
                    entry.sparsity, entry.pattern = constraint.sparsity, constraint.pattern
    return list(found.values())


def _then(first, second):
    return lambda w: second(first(w))


def bake(model: nn.Module) -> nn.Module:
    """Write every parametrization's value into a plain weight, in place; returns ``model``."""
    for module in list(model.modules()):
        if parametrize.is_parametrized(module):
            for name in list(module.parametrizations.keys()):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return model
