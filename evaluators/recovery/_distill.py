"""``distill``: no regime before the constraints; the masked distillation fine-tune does
all the recovery (the recovery of every recipe that names no ``method``)."""
from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn

from .base import Constraint, Recovery, TrainingRun


class Distill(Recovery):
    """The constraints are applied to the compressed weights as they are; BatchNorm
    recalibration and the distillation fine-tune (task loss plus T^2 x KL to the base
    model) then train the kept weights for all the recovery's steps."""

    name = "distill"

    def __init__(self):
        super().__init__(share=0.0)

    def get_params(self) -> dict:
        return {}

    def train(self, model: nn.Module, constraints: Sequence[Constraint], run: TrainingRun) -> None:
        """Nothing: distillation trains after the constraints are applied."""
