"""benchmarks/gpu_check.py up to where it needs CUDA (its full run on a CPU stand-in takes
about two minutes: ``python benchmarks/gpu_check.py --device cpu --size 32 --trials 1``)."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).parents[2] / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("name", "preset"), [("NVIDIA H200", "h100"), ("NVIDIA H100 80GB HBM3", "h100"),
                                              ("NVIDIA A100-SXM4-40GB", "a100"), ("NVIDIA GeForce RTX 4090", "rtx4090"),
                                              ("Orin Nano", "jetson-orin-nano"), ("Tesla T4", "h100")])
def test_the_nearest_preset_is_chosen_by_the_device_name(name, preset):
    assert _module().nearest_preset(name) == preset


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_without_a_gpu_it_says_so_in_one_line():
    done = subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, check=False)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == ["gpu_check: torch sees no CUDA GPU on this machine; run it where "
                                                "one is, or --device cpu for a smoke test"]
