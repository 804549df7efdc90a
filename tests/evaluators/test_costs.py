from __future__ import annotations

import torch
import torch.nn as nn

from autocompress.evaluators import count_flops, count_params, size_bytes


def _tiny():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10)).eval()


def test_flops_match_a_hand_count():
    # conv: 2 * (8 out * 3 in * 3*3 kernel) MACs per output pixel * 64 pixels; linear: 2 * 512 * 10
    expected = 2 * 8 * 3 * 9 * 64 + 2 * 512 * 10
    assert count_flops(_tiny(), torch.randn(1, 3, 8, 8)) == expected


def test_masks_lower_params_and_size_but_not_flops():
    model = _tiny()
    x = torch.randn(1, 3, 8, 8)
    dense_flops, dense_params, dense_size = count_flops(model, x), count_params(model), size_bytes(model)
    assert dense_params == 8 * 3 * 9 + 8 + 512 * 10 + 10
    assert dense_size == 4 * dense_params
    with torch.no_grad():
        model[3].weight[:, : 256] = 0  # half the linear weights
    assert count_flops(model, x) == dense_flops
    assert count_params(model) == dense_params - 2560
    # non-zeros at 32 bits plus a 1-bit mask per weight
    linear_bits = 2560 * 32 + 5120
    assert size_bytes(model) == (dense_size * 8 - 5120 * 32 + linear_bits) // 8
