"""The FLOP counter every cost in autocompress is measured with.

``torch.utils.flop_counter.FlopCounterMode`` has no formula for the scaled-dot-product
attention kernels PyTorch picks on a CPU (``_scaled_dot_product_flash_attention_for_cpu``)
or on out-of-tree backends (``..._fused_attention_overrideable``), so attention's two
matrix products would go uncounted; they are registered here with PyTorch's own SDPA
formulas (2 FLOPs per multiply-accumulate of ``Q K^T`` and of ``softmax(.) V``).
"""
from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_backward_flop_count, sdpa_flop_count

_aten = torch.ops.aten


def _forward(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_flop_count(query, key, value)


def _backward(grad_out, query, key, value, *args, out_shape=None, **kwargs) -> int:
    return sdpa_backward_flop_count(grad_out, query, key, value)


ATTENTION_FORMULAS = {
    _aten._scaled_dot_product_flash_attention_for_cpu: _forward,
    _aten._scaled_dot_product_flash_attention_for_cpu_backward: _backward,
    _aten._scaled_dot_product_fused_attention_overrideable: _forward,
    _aten._scaled_dot_product_fused_attention_overrideable_backward: _backward,
}
"""SDPA kernels ``FlopCounterMode`` does not count by itself, with their formulas (which
receive shapes: ``FlopCounterMode`` passes custom formulas tensor shapes, not tensors)."""


def flop_counter() -> FlopCounterMode:
    """A silent ``FlopCounterMode`` that also counts the attention kernels above."""
    return FlopCounterMode(display=False, custom_mapping=ATTENTION_FORMULAS)
