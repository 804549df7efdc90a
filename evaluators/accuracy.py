"""Proxy accuracy: BatchNorm recalibration, a short distillation fine-tune, top-1 accuracy."""
from __future__ import annotations

import itertools
from collections.abc import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F

Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]


def accuracy(model: nn.Module, batches: Batches) -> float:
    """Top-1 accuracy in percent over all batches."""
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in batches:
            correct += int((model(x).argmax(dim=1) == y).sum())
            total += int(y.numel())
    if total == 0:
        raise ValueError("the evaluation data yielded no samples")
    return 100.0 * correct / total


def recalibrate_batchnorm(model: nn.Module, batches: Batches, steps: int) -> None:
    """Re-estimate BatchNorm running statistics on up to ``steps`` training batches
    (the adaptive-BN proxy of EagleEye); other layers stay in eval mode."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or steps <= 0:
        return
    model.eval()
    saved = []
    for bn in norms:
        bn.reset_running_stats()
        saved.append(bn.momentum)
        bn.momentum = None  # cumulative average over the calibration batches
        bn.train()
    with torch.no_grad():
        for x, _ in itertools.islice(_cycle(batches), steps):
            model(x)
    for bn, momentum in zip(norms, saved):
        bn.momentum = momentum
    model.eval()


def distill(student: nn.Module, teacher: nn.Module, batches: Batches, steps: int,
            lr: float = 1e-3, temperature: float = 4.0, seed: int = 0) -> None:
    """Fine-tune ``student`` for ``steps`` batches with knowledge distillation from
    ``teacher``: loss = CE + T^2 * KL(student_T || teacher_T).  Deterministic for a seed.

    Weight constraints attached as parametrizations (masks, fake quantisation) hold
    throughout: only the underlying weights are trained.
    """
    if steps <= 0:
        return
    torch.manual_seed(seed)
    teacher.eval()
    student.train()
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    for x, y in itertools.islice(_cycle(batches), steps):
        with torch.no_grad():
            soft_teacher = F.log_softmax(teacher(x) / temperature, dim=1)
        logits = student(x)
        loss = F.cross_entropy(logits, y) + temperature**2 * F.kl_div(
            F.log_softmax(logits / temperature, dim=1), soft_teacher, reduction="batchmean", log_target=True
        )
        if not torch.isfinite(loss):
            raise FloatingPointError(f"fine-tune loss became {loss.item()}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
    student.eval()


def _cycle(batches: Batches):
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("the training data yielded no batches")
