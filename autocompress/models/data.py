"""Small in-memory datasets as re-iterable batch streams."""
from __future__ import annotations

from collections.abc import Iterator

import torch


class TensorBatches:
    """Batches ``(x, y)`` of a tensor dataset.  Iterating is repeatable: with ``shuffle``
    every pass uses the same seeded order, so fine-tunes replay exactly."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int = 64, shuffle: bool = False, seed: int = 0):
        if len(x) != len(y):
            raise ValueError(f"x has {len(x)} samples but y has {len(y)}")
        self.x, self.y, self.batch_size, self.shuffle, self.seed = x, y, batch_size, shuffle, seed

    def __len__(self) -> int:
        return (len(self.x) + self.batch_size - 1) // self.batch_size

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.shuffle:
            order = torch.randperm(len(self.x), generator=torch.Generator().manual_seed(self.seed))
        else:
            order = torch.arange(len(self.x))
        for start in range(0, len(order), self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.x[idx], self.y[idx]
