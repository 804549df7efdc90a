"""How data reaches a model and what comes back: the one place that knows the shapes of
batches, inputs and outputs the tool accepts.

- A **batch** is ``(inputs, target)`` (a tuple or list of two), or a dict as Hugging Face
  collators give it: ``labels`` is the target, every other entry a keyword input.
- **Inputs** are a tensor (``model(x)``), a tuple of tensors (``model(*x)``) or a dict of
  tensors (``model(**x)``).  The example input a search traces, counts and exports with
  is inputs of batch 1.
- An **output** is a tensor of logits, or carries them: a ``ModelOutput`` or any object
  with ``.logits``, a dict with ``"logits"``, or a tuple/list whose first element is the
  logits.

Everything that runs a model goes through ``call`` and ``logits``; everything that moves
data goes through ``to_device``.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn as nn

from ..core.errors import ModelError

Inputs = Any  # torch.Tensor | tuple[torch.Tensor, ...] | dict[str, torch.Tensor]


def split(batch: Any) -> tuple[Inputs, Any]:
    """``(inputs, target)`` of a batch: an ``(x, y)`` pair, or a dict whose ``labels`` is
    the target (None without one).  ModelError for anything else."""
    if isinstance(batch, Mapping):
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        return inputs, batch.get("labels")
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch[0], batch[1]
    raise ModelError(f"a batch is a {type(batch).__name__}; batches must be (inputs, target) pairs or dicts "
                     "with 'labels' and the model's keyword inputs")


def call(model: nn.Module | Callable, inputs: Inputs) -> Any:
    """Run ``model`` on ``inputs`` (a tensor, a tuple of positional inputs or a dict of
    keyword inputs)."""
    if isinstance(inputs, Mapping):
        return model(**inputs)
    if isinstance(inputs, tuple):
        return model(*inputs)
    return model(inputs)


def logits(output: Any) -> torch.Tensor:
    """The logits tensor of a model's output (see the module docstring).  ModelError naming
    the output's type and ``--metric`` for an output that carries none."""
    if isinstance(output, torch.Tensor):
        return output
    found = getattr(output, "logits", None)
    if found is None and isinstance(output, Mapping):
        found = output.get("logits")
    if found is None and isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        found = output[0]
    if not isinstance(found, torch.Tensor):
        raise ModelError(f"the model returns a {type(output).__module__}.{type(output).__qualname__}, which is neither "
                         "a tensor nor carries .logits; give --metric pkg.module:fn(output, target) -> float that "
                         "scores it")
    return found


def to_device(data: Any, device: torch.device | str, non_blocking: bool = False) -> Any:
    """``data`` (a tensor, or tuples, lists and dicts of them) on ``device``; other values
    as they are.  ``non_blocking`` copies from pinned memory asynchronously."""
    if isinstance(data, torch.Tensor):
        return data.to(device, non_blocking=non_blocking)
    if isinstance(data, Mapping):
        return {k: to_device(v, device, non_blocking) for k, v in data.items()}
    if isinstance(data, (tuple, list)):
        return type(data)(to_device(v, device, non_blocking) for v in data)
    return data


def _map(inputs: Inputs, fn: Callable[[torch.Tensor], torch.Tensor]) -> Inputs:
    if isinstance(inputs, Mapping):
        return {k: fn(v) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
    if isinstance(inputs, tuple):
        return tuple(fn(v) if isinstance(v, torch.Tensor) else v for v in inputs)
    return fn(inputs)


def tensors(inputs: Inputs) -> list[torch.Tensor]:
    """The tensors of ``inputs``, in order."""
    if isinstance(inputs, Mapping):
        return [v for v in inputs.values() if isinstance(v, torch.Tensor)]
    if isinstance(inputs, tuple):
        return [v for v in inputs if isinstance(v, torch.Tensor)]
    return [inputs]


def batch_size(inputs: Inputs) -> int:
    """The batch size of ``inputs`` (the first dimension of their first tensor)."""
    found = tensors(inputs)
    return int(found[0].shape[0]) if found and found[0].dim() else 1


def first(inputs: Inputs, n: int = 1) -> Inputs:
    """The first ``n`` samples of ``inputs``."""
    return _map(inputs, lambda t: t[:n] if t.dim() else t)


def expand(inputs: Inputs, n: int) -> Inputs:
    """A batch of ``n`` copies of the batch-1 ``inputs``, contiguous."""
    return _map(inputs, lambda t: t.expand(n, *t.shape[1:]).contiguous() if t.dim() else t)


def for_grad(inputs: Inputs) -> Inputs:
    """A copy of ``inputs`` whose floating-point tensors require grad (counting FLOPs with
    autograd on sees the decomposed kernels of fused inference paths)."""
    return _map(inputs, lambda t: t.detach().clone().requires_grad_(t.is_floating_point()))


def describe(inputs: Inputs) -> str:
    """The shapes of ``inputs`` for messages: ``(1, 3, 32, 32)`` or ``{input_ids: (1, 16), ...}``."""
    if isinstance(inputs, Mapping):
        return "{" + ", ".join(f"{k}: {tuple(v.shape)}" for k, v in inputs.items() if isinstance(v, torch.Tensor)) + "}"
    if isinstance(inputs, tuple):
        return "(" + ", ".join(str(tuple(v.shape)) for v in tensors(inputs)) + ")"
    return str(tuple(inputs.shape))


def export_args(inputs: Inputs) -> tuple[tuple, dict]:
    """``(args, kwargs)`` for ``torch.export.export`` of a model called on ``inputs``."""
    if isinstance(inputs, Mapping):
        return (), dict(inputs)
    if isinstance(inputs, tuple):
        return inputs, {}
    return (inputs,), {}
