"""What a search works on: a trained model, one example input (batch 1) and its data splits.

Plain data: the model is a ``torch.nn.Module`` and the splits iterables of ``(x, y)``
batches, but nothing here imports torch (``models.workload`` loads one from options).
"""
from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass
class Workload:
    """A model to compress, one example input (batch 1) and its data splits."""

    name: str
    model: Any
    example_input: Any
    train: Iterable
    val: Iterable
    test: Iterable
    test_split: str = "test"

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.model)


def fingerprint(model: Any) -> str:
    """A short hash of the model's architecture (names, types and parameter shapes)."""
    digest = hashlib.sha256()
    for name, module in model.named_modules():
        digest.update(f"{name}:{type(module).__name__};".encode())
    for name, tensor in model.state_dict().items():
        digest.update(f"{name}:{tuple(tensor.shape)};".encode())
    return digest.hexdigest()[:16]
