"""Proxy quality: BatchNorm recalibration, a short distillation fine-tune, and a metric
(top-1 accuracy by default) over a model's batches.

Batches are whatever ``batches.split`` reads (``(x, y)`` pairs or Hugging Face dicts), the
model's output whatever ``batches.logits`` reads.  Each function runs on ``runtime.device``
(the model must be there already; batches are moved here) and defaults to the CPU.
"""
from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Collection, Iterable
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import batches as _batches
from .device import CPU, Runtime
from .metrics import Accuracy, Metric, get_metric

Batches = Iterable[Any]


def evaluate(model: nn.Module, batches: Batches, metric: str | Metric | None = None,
             runtime: Runtime = CPU) -> float:
    """The value of ``metric`` (default top-1 accuracy in percent) over all batches, in
    eval mode and fp32.  ValueError when the batches hold no sample; ModelError for an
    output the metric cannot read (``batches.logits``)."""
    metric = get_metric(metric)
    metric.reset()
    model.eval()
    with torch.no_grad():
        for batch in batches:
            inputs, target = runtime.batch(_batches.split(batch))
            metric.update(_batches.call(model, inputs), target)
    return metric.result()


def accuracy(model: nn.Module, batches: Batches, runtime: Runtime = CPU) -> float:
    """Top-1 accuracy in percent over all batches."""
    return evaluate(model, batches, Accuracy(), runtime)


def recalibrate_batchnorm(model: nn.Module, batches: Batches, steps: int, runtime: Runtime = CPU) -> None:
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
        for batch in itertools.islice(_cycle(batches), steps):
            inputs, _ = _batches.split(batch)
            _batches.call(model, runtime.batch(inputs))
    for bn, momentum in zip(norms, saved):
        bn.momentum = momentum
    model.eval()


def distill(student: nn.Module, teacher: nn.Module, batches: Batches, steps: int,
            lr: float = 1e-3, temperature: float = 4.0, seed: int = 0, runtime: Runtime = CPU,
            metric: str | Metric | None = None, penalty: Callable[[], torch.Tensor] | None = None,
            after_step: Callable[[int], None] | None = None, rungs: Collection[int] = (),
            at_rung: Callable[[int], None] | None = None) -> None:
    """Fine-tune ``student`` for ``steps`` batches with knowledge distillation from
    ``teacher``: loss = task loss + T^2 * KL(student_T || teacher_T), the task loss being
    the metric's (``Metric.loss``: cross entropy; shifted next-token cross entropy for
    perplexity) and the KL term taken over the last dimension of the logits (per token
    for language models).  Runs at ``runtime.precision`` (autocast; fp16 with a gradient
    scaler).  Deterministic for a seed on the CPU.

    Weight constraints attached as parametrizations (masks, fake quantisation) hold
    throughout: only the underlying weights are trained.  A recovery regime adds
    ``penalty()`` (a scalar tensor) to every step's loss and has ``after_step(step)``
    called after every optimiser step (steps counted from 0).  FloatingPointError when
    the loss stops being finite.

    Multi-fidelity reports: after ``n`` steps for each ``n`` in ``rungs``, ``at_rung(n)``
    is called with the student in eval mode (to score it on a few batches and report);
    the random state is restored afterwards, so the fine-tune goes on exactly as without
    the call.  What ``at_rung`` raises (the trial was pruned) stops the fine-tune.
    Without ``at_rung`` nothing extra runs.
    """
    if steps <= 0:
        return
    metric = get_metric(metric)
    torch.manual_seed(seed)
    teacher.eval()
    student.train()
    params = [p for p in student.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=steps)
    scaler = runtime.scaler()
    for step, batch in enumerate(itertools.islice(_cycle(batches), steps)):
        inputs, target = runtime.batch(_batches.split(batch))
        with runtime.autocast():
            with torch.no_grad():
                soft_teacher = _batches.logits(_batches.call(teacher, inputs)).float()
            logits = _batches.logits(_batches.call(student, inputs)).float()
        soft_teacher = F.log_softmax(soft_teacher.flatten(0, -2) / temperature, dim=-1)
        loss = temperature**2 * F.kl_div(F.log_softmax(logits.flatten(0, -2) / temperature, dim=-1), soft_teacher,
                                         reduction="batchmean", log_target=True)
        if target is not None:
            loss = loss + metric.loss(logits, target)
        if penalty is not None:
            loss = loss + penalty()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"fine-tune loss became {loss.item()}")
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        schedule.step()
        if after_step is not None:
            after_step(step)
        if at_rung is not None and step + 1 in rungs:
            with torch.random.fork_rng(devices=[]):
                student.eval()
                at_rung(step + 1)
            student.train()
    student.eval()


def spread_batches(batches: Batches, count: int) -> list[Any]:
    """Up to ``count`` of ``batches`` spread evenly over them (every k-th, so a split
    ordered by class is still sampled across its classes); all of them when there are no
    more, or when ``batches`` has no length (then the first ``count``)."""
    try:
        total = len(batches)  # type: ignore[arg-type]
    except TypeError:
        return list(itertools.islice(batches, count))
    stride = max(1, math.ceil(total / max(count, 1)))
    return list(itertools.islice(batches, 0, None, stride))[:count]


def _cycle(batches: Batches):
    while True:
        empty = True
        for batch in batches:
            empty = False
            yield batch
        if empty:
            raise ValueError("the training data yielded no batches")
