from __future__ import annotations

import copy

import torch
import torch.nn as nn

from autocompress.evaluators import accuracy, distill, recalibrate_batchnorm
from autocompress.models.data import TensorBatches


def _data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g) * 3 + 1
    y = (x[:, 0] > 1).long()
    return TensorBatches(x, y, 32, shuffle=True, seed=seed)


def test_accuracy_counts_correct_predictions():
    model = nn.Linear(4, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[-1.0, 0, 0, 0], [1.0, 0, 0, 0]]))
        model.bias.copy_(torch.tensor([1.0, -1.0]))
    assert accuracy(model, _data()) == 100.0


def test_batchnorm_recalibration_estimates_the_data_statistics():
    model = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 2)).eval()
    data = _data()
    recalibrate_batchnorm(model, data, steps=len(data))
    bn = model[0]
    assert torch.allclose(bn.running_mean, data.x.mean(0), atol=1e-4)
    assert not bn.training and bn.momentum == 0.1


def test_distillation_is_deterministic_and_learns():
    torch.manual_seed(1)
    teacher = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    distill(teacher, copy.deepcopy(teacher), _data(), steps=200, lr=1e-2)
    student = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    twin = copy.deepcopy(student)
    before = accuracy(student, _data())
    distill(student, teacher, _data(), steps=100, lr=1e-2, seed=3)
    distill(twin, teacher, _data(), steps=100, lr=1e-2, seed=3)
    assert all(torch.equal(a, b) for a, b in zip(student.state_dict().values(), twin.state_dict().values()))
    assert accuracy(student, _data()) > max(before, 80.0)


def test_distillation_keeps_attached_masks():
    from torch.nn.utils import parametrize

    from autocompress.compress import WeightMask

    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    student = copy.deepcopy(teacher)
    mask = torch.ones(16, 4)
    mask[:8] = 0
    parametrize.register_parametrization(student[0], "weight", WeightMask(mask, "unstructured"))
    distill(student, teacher, _data(), steps=20, lr=1e-2)
    assert int((student[0].weight == 0).sum()) == 32
