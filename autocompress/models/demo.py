"""The built-in demo: a small residual CNN on scikit-learn's 8x8 digits.

The base model is trained on first use (a few seconds) and cached in the user's cache
folder (``$AUTOCOMPRESS_CACHE``, else ``$XDG_CACHE_HOME/autocompress``, else
``~/.cache/autocompress``) together with its test accuracy.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..core.paths import cache_dir
from .data import TensorBatches

log = logging.getLogger(__name__)

DEMO_VERSION = "demo-resnet-digits-v1"
SPLIT_SEED = 0


class ResidualBlock(nn.Module):
    """conv-bn-relu-conv-bn plus the identity, then relu."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(x + self.bn2(self.conv2(out)))


class DemoNet(nn.Module):
    """Input (N, 1, 8, 8) -> 10 logits: stem, residual block, strided conv, residual block, head."""

    def __init__(self, width: int = 32, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.block1 = ResidualBlock(width)
        self.down = nn.Sequential(
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(2 * width), nn.ReLU()
        )
        self.block2 = ResidualBlock(2 * width)
        self.head = nn.Linear(2 * width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block2(self.down(self.block1(self.stem(x))))
        return self.head(x.mean(dim=(2, 3)))


def digits_splits(batch_size: int = 64) -> tuple[TensorBatches, TensorBatches, TensorBatches]:
    """scikit-learn's digits as float32 (N, 1, 8, 8) in [0, 1], split 60/20/20 with a fixed seed."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy((digits.images / 16.0).astype(np.float32)).unsqueeze(1)
    y = torch.from_numpy(digits.target.astype(np.int64))
    order = torch.from_numpy(np.random.default_rng(SPLIT_SEED).permutation(len(x)))
    n_train, n_val = int(0.6 * len(x)), int(0.2 * len(x))
    tr, va, te = order[:n_train], order[n_train : n_train + n_val], order[n_train + n_val :]
    return (
        TensorBatches(x[tr], y[tr], batch_size, shuffle=True, seed=SPLIT_SEED),
        TensorBatches(x[va], y[va], 256),
        TensorBatches(x[te], y[te], 256),
    )


def train_demo(epochs: int = 30, seed: int = 0) -> nn.Module:
    """Train DemoNet from scratch on the digits training split (seconds on a CPU)."""
    train, _, _ = digits_splits()
    torch.manual_seed(seed)
    model = DemoNet()
    return fit(model, train, epochs, seed, weight_decay=1e-4)


def fit(model: nn.Module, train: TensorBatches, epochs: int, seed: int, weight_decay: float = 0.0) -> nn.Module:
    """Train ``model`` on ``train`` with cross-entropy: Adam under a one-cycle schedule
    peaking at lr 3e-3, the batches reshuffled each epoch (seed ``seed + epoch``).
    Returns the model in eval mode."""
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=epochs * len(train))
    for epoch in range(epochs):
        model.train()
        shuffled = TensorBatches(train.x, train.y, train.batch_size, shuffle=True, seed=seed + epoch)
        for x, y in shuffled:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()


def cached_model(version: str, model: nn.Module,
                 train: Callable[[], tuple[nn.Module, float]]) -> tuple[nn.Module, float]:
    """A trained model and its test accuracy (percent), cached in ``cache_dir()`` as
    ``<version>.pt`` (weights, loaded into ``model``) and ``<version>.json``; on first use,
    or when the cache is unusable, ``train()`` gives them and they are cached."""
    folder = cache_dir()
    weights, meta = folder / f"{version}.pt", folder / f"{version}.json"
    if weights.exists() and meta.exists():
        try:
            model.load_state_dict(torch.load(weights, weights_only=True, map_location="cpu"))
            return model.eval(), float(json.loads(meta.read_text())["test_accuracy"])
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            log.warning("cached model %s in %s is unusable (%s); training a new one", version, folder, exc)
    model, test_accuracy = train()
    folder.mkdir(parents=True, exist_ok=True)
    tmp = weights.with_suffix(".tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(weights)
    meta.write_text(json.dumps({"schema": 1, "version": version, "test_accuracy": test_accuracy}))
    return model.eval(), test_accuracy


def load_demo() -> tuple[nn.Module, float]:
    """The trained demo model and its test accuracy (percent), training it on first use."""
    from ..evaluators import accuracy

    def train() -> tuple[nn.Module, float]:
        log.info("training the demo model on scikit-learn digits (first use only)")
        model = train_demo()
        return model, accuracy(model, digits_splits()[2])

    return cached_model(DEMO_VERSION, DemoNet(), train)
