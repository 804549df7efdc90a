"""Unstructured magnitude pruning, baked into the weights."""
from __future__ import annotations

from typing import Mapping

import torch
import torch.nn as nn

from ..space import Space, pruned_weights
from .base import Operator


class MagnitudeSparsity(Operator):
    """Zero the ``sparsity`` fraction of each layer's weights with the smallest magnitude.

    The zeros are written into the weight tensors (no masks or hooks remain), so the
    result is a plain module; dense FLOPs are unchanged, non-zero params and size fall.
    """

    setting_key = "sparsity"
    neutral = 0.0

    def apply(self, model: nn.Module, space: Space, settings: Mapping[str, Mapping[str, float]],
              example_input: torch.Tensor) -> None:
        for name, layer_settings in settings.items():
            sparsity = float(layer_settings.get("sparsity", 0.0))
            if sparsity <= 0:
                continue
            weight = model.get_submodule(name).weight
            drop = pruned_weights(weight.numel(), sparsity)
            if drop == 0:
                continue
            with torch.no_grad():
                order = torch.argsort(weight.detach().abs().flatten(), stable=True)
                weight.view(-1)[order[:drop]] = 0.0
