from __future__ import annotations

import os

import pytest
import torch
import torch.nn as nn


@pytest.fixture(scope="session", autouse=True)
def demo_cache(tmp_path_factory):
    """One demo model per test session, trained into a private cache folder."""
    folder = os.environ.get("AUTOCOMPRESS_TEST_CACHE") or str(tmp_path_factory.mktemp("cache"))
    os.environ["AUTOCOMPRESS_CACHE"] = folder
    return folder


class TinyResidual(nn.Module):
    """conv-bn -> residual (conv-bn + identity) -> DenseNet-style concat with a 1x1 branch
    -> bn -> flatten -> linear."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(8)
        self.conv = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.side = nn.Conv2d(8, 4, 1)
        self.bn2 = nn.BatchNorm2d(12)
        self.mix = nn.Conv2d(12, 6, 1)
        self.head = nn.Linear(6 * 4 * 4, 5)

    def forward(self, x):
        x = torch.relu(self.bn0(self.stem(x)))
        x = torch.relu(x + self.bn1(self.conv(x)))
        x = torch.relu(self.bn2(torch.cat([x, self.side(x)], dim=1)))
        return self.head(torch.flatten(self.mix(x), 1))


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    model = TinyResidual().eval()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.normal_()
    return model, torch.randn(1, 3, 4, 4)
