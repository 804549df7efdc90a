"""The Operator base class: one kind of compression applied to a model copy."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Mapping

import torch
import torch.nn as nn

from ..space import Space


class Operator(ABC):
    """Turns layer settings into a real change of a model, in place.

    Contract: ``apply(model, space, settings, example_input)`` changes ``model`` (a copy
    the caller owns) so that it really executes the settings of ``setting_key`` for every
    layer in ``settings``; settings at their neutral value leave the model's outputs
    identical.  Implementations keep no state between calls.
    """

    setting_key: str
    neutral: float

    def needed(self, settings: Mapping[str, Mapping[str, float]], space: Space) -> bool:
        """Whether any layer asks this operator for a non-neutral setting."""
        return any(s.get(self.setting_key, self.neutral) != self.neutral for s in settings.values())

    @abstractmethod
    def apply(
        self,
        model: nn.Module,
        space: Space,
        settings: Mapping[str, Mapping[str, float]],
        example_input: torch.Tensor,
    ) -> None:
        """Compress ``model`` in place."""
