"""``--device`` and ``--precision``: resolution, the errors for a GPU that is not there, and
fine-tunes at reduced precision (on the CPU here; the CUDA paths need a GPU)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from autocompress.core.errors import AutocompressError
from autocompress.evaluators import distill, evaluate
from autocompress.evaluators.device import CPU, Runtime, resolve_device, resolve_precision, runtime


def test_auto_is_the_cpu_without_a_gpu_and_cuda_with_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == resolve_device(None) == torch.device("cpu")
    assert runtime("auto") == Runtime(torch.device("cpu"), "fp32")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"


@pytest.mark.parametrize("option", ["cuda", "cuda:0", "CUDA:1"])
def test_cuda_without_a_gpu_is_one_clear_error(option, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(AutocompressError, match=f"--device {option} needs a CUDA GPU, and torch sees none"):
        resolve_device(option)


def test_a_gpu_index_the_machine_lacks_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(AutocompressError, match="names GPU 2, and this machine has 1"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("option", ["gpu", "mps", "cuda:x", "cuda:-1"])
def test_unknown_devices_name_the_choices(option):
    with pytest.raises(AutocompressError, match="use one of auto, cpu, cuda, cuda:N"):
        resolve_device(option)


def test_precision_defaults_to_fp32_on_the_cpu_and_bf16_on_a_gpu_that_has_it(monkeypatch):
    assert resolve_precision(None, torch.device("cpu")) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    assert resolve_precision(None, torch.device("cuda", 0)) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_precision("auto", torch.device("cuda", 0)) == "fp32"
    with pytest.raises(AutocompressError, match="bf16 is not supported by the GPU"):
        resolve_precision("bf16", torch.device("cuda", 0))
    with pytest.raises(AutocompressError, match="'fp8' is not a precision; use one of fp32, bf16, fp16"):
        resolve_precision("fp8", torch.device("cpu"))


def test_the_base_model_is_not_copied_on_the_cpu():
    model = nn.Linear(2, 2)
    assert CPU.place(model) is model


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_fine_tunes_run_and_learn(precision):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(128, 4, generator=g)
    data = [(x[i:i + 32], (x[i:i + 32, 0] > 0).long()) for i in range(0, 128, 32)]
    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    distill(teacher, copy.deepcopy(teacher), data, steps=150, lr=1e-2)
    student = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    before = evaluate(student, data)
    distill(student, teacher, data, steps=150, lr=1e-2, runtime=runtime("cpu", precision))
    assert student[0].weight.dtype == torch.float32  # autocast computes in low precision; weights stay fp32
    assert evaluate(student, data) > max(before, 80.0)
