"""The Operator base class: one kind of compression applied to a model copy."""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
import torch.nn as nn

from ..core.space import Space
from ..evaluators.recovery import Constraint


class Operator(ABC):
    """Turns layer settings into a real change of a model, in place: the operator of one
    compression kind (``core.kinds.Kind.operator``).

    Contract: ``needed(settings, space)`` is true exactly when some layer's settings ask
    the operator for a change; ``apply(model, space, settings, example_input)`` changes
    ``model`` (a copy the caller owns) so that it really executes those settings (the
    costs ``Space.cost`` predicts for them) and leaves layers whose settings ask for no
    change untouched.  ``compress`` calls ``apply`` only where ``needed``, after the
    operators of the kinds registered before this one.  Implementations keep no state
    between calls.

    ``structural`` operators change shapes (channels, heads): they run before a recovery
    regime trains (``restructure``).  The others constrain weights: ``constraints`` gives,
    per weight they will constrain in ``apply``, a ``Constraint`` whose projection maps a
    weight to what ``apply`` would make of it (computed by the same code), for the regimes
    that train towards the constraints (``evaluators.recovery``) before ``apply`` freezes
    them.
    """

    structural: ClassVar[bool] = False

    def constraints(self, model: nn.Module, space: Space,
                    settings: Mapping[str, Mapping[str, Any]]) -> list[Constraint]:
        """A Constraint (its ``kinds`` this operator's kind) for every weight of ``model``
        (structure already applied, Hugging Face ``Conv1D`` as Linear, no parametrization
        attached) that ``apply`` would constrain; none by default (a kind without them is
        applied after the regime without being trained towards)."""
        return []

    @abstractmethod
    def needed(self, settings: Mapping[str, Mapping[str, Any]], space: Space) -> bool:
        """Whether any layer asks this operator for a change."""

    @abstractmethod
    def apply(
        self,
        model: nn.Module,
        space: Space,
        settings: Mapping[str, Mapping[str, Any]],
        example_input: torch.Tensor,
    ) -> None:
        """Compress ``model`` in place."""
