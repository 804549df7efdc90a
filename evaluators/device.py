"""Where and at what precision models run: ``--device`` and ``--precision`` resolved into a
``Runtime``.

Base metrics, BatchNorm calibration, the proxy fine-tunes, scoring and the final
fine-tune run on ``Runtime.device`` (the caller moves the model there; these functions
move the batches, ``non_blocking`` on a GPU).  Counting FLOPs and parameters and timing
CPU latency stay on the CPU.  A runtime is how a search runs, not what it searches: it is
never stored in a study or a recipe, so a study resumes on another machine's device.
"""
from __future__ import annotations

import contextlib
import copy
import gc
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ..core.errors import AutocompressError
from . import batches as _batches

DEVICES = ("auto", "cpu", "cuda", "cuda:N")
PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    """A resolved device and the precision of fine-tunes (``fp32``, ``bf16`` or ``fp16``:
    autocast on the device, fp16 with a gradient scaler).  Scoring is always fp32."""

    device: torch.device = torch.device("cpu")
    precision: str = "fp32"

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def batch(self, data: Any) -> Any:
        """``data`` (a batch, inputs or a target) on the device; copied asynchronously to a
        GPU (from pinned memory a loader with ``pin_memory=True`` gives, that overlaps)."""
        return _batches.to_device(data, self.device, non_blocking=self.cuda)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast for fine-tune steps at this precision (nothing at fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=_DTYPES[self.precision])

    def scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled for fp16 only (a pass-through otherwise)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")

    def place(self, model: nn.Module) -> nn.Module:
        """``model`` itself on the CPU, else a copy of it on the device (the base model
        stays on the CPU, where FLOPs are counted and candidates compressed)."""
        if self.device.type == "cpu" and all(p.device.type == "cpu" for p in model.parameters()):
            return model
        return copy.deepcopy(model).to(self.device)

    def release(self) -> None:
        """Give back cached GPU memory (after a trial ran out of it); nothing on the CPU."""
        gc.collect()
        if self.cuda:
            torch.cuda.empty_cache()

    def __str__(self) -> str:
        return f"{self.device} ({self.precision})"


CPU = Runtime()


def resolve_device(option: str | torch.device | None = "auto") -> torch.device:
    """The device ``--device`` names: ``auto`` (None) is ``cuda`` when torch sees a GPU,
    else ``cpu``; ``cpu``; ``cuda`` or ``cuda:N``.  AutocompressError for another name, and
    for a GPU this machine does not have."""
    if isinstance(option, torch.device):
        option = str(option)
    name = (option or "auto").strip().lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    index: int | None = None
    if name.startswith("cuda:"):
        try:
            index = int(name.removeprefix("cuda:"))
        except ValueError:
            index = -1
        if index < 0:
            raise AutocompressError(f"--device {option!r} is not a device; use one of auto, cpu, cuda, cuda:N")
    elif name != "cuda":
        raise AutocompressError(f"--device {option!r} is not a device; use one of auto, cpu, cuda, cuda:N")
    if not torch.cuda.is_available():
        raise AutocompressError(f"--device {option} needs a CUDA GPU, and torch sees none on this machine; "
                                "use --device cpu (or auto)")
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise AutocompressError(f"--device {option} names GPU {index}, and this machine has {count} "
                                f"(cuda:0 to cuda:{count - 1})")
    return torch.device("cuda", index if index is not None else torch.cuda.current_device())


def resolve_precision(option: str | None, device: torch.device) -> str:
    """The fine-tune precision ``--precision`` names on ``device``: by default (None or
    ``auto``) ``bf16`` on a GPU that supports it, else ``fp32``.  AutocompressError for an
    unknown name and for bf16 on a GPU without it."""
    name = (option or "auto").strip().lower()
    if name == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    if name not in PRECISIONS:
        raise AutocompressError(f"--precision {option!r} is not a precision; use one of {', '.join(PRECISIONS)}")
    if name == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise AutocompressError(f"--precision bf16 is not supported by the GPU {device}; use fp16 or fp32")
    return name


def runtime(device: str | torch.device | None = "auto", precision: str | None = None) -> Runtime:
    """The Runtime for ``--device`` and ``--precision`` options (see ``resolve_device`` and
    ``resolve_precision``); AutocompressError for bad values."""
    resolved = resolve_device(device)
    return Runtime(resolved, resolve_precision(precision, resolved))


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is torch running out of GPU memory."""
    return isinstance(exc, torch.cuda.OutOfMemoryError)
