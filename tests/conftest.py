from __future__ import annotations

import importlib.util
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


@pytest.fixture(scope="session")
def torchvision():
    """torchvision, imported as ``autocompress.models.thirdparty`` does it: PyPI's wheel is
    built for CUDA torch, and on the CPU torch pinned here ``import torchvision`` fails in
    its fake-kernel registrations for detection ops (``operator torchvision::nms does not
    exist``); the model builders need none of them, so they are skipped.  Skips the test
    where torchvision is not installed."""
    if importlib.util.find_spec("torchvision") is None:
        pytest.skip("torchvision is not installed")
    from autocompress.models.thirdparty import import_torchvision

    return import_torchvision()


@pytest.fixture(scope="session")
def transformers():
    """transformers (it imports torchvision, so that goes through the fixture above first).
    Skips the test where transformers is not installed."""
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("transformers is not installed")
    from autocompress.models.thirdparty import import_transformers

    return import_transformers()
