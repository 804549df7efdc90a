"""Quality metrics a search scores trials with (``--metric``): the built-ins
``accuracy``, ``top5``, ``perplexity`` and ``neg_loss``, or a user's callable.

The engine always maximises a *score*: a metric's value, negated for a metric where lower
is better (perplexity), so strategies, "the best trial" and ``--max-accuracy-drop`` (in
the metric's own units) work alike for every metric; what users see is the value under
the metric's name (``Metric.value`` turns a score back).
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F

from ..core.errors import AutocompressError, ModelError
from . import batches

IGNORE_INDEX = -100  # label positions Hugging Face collators leave out of the loss


class Metric(ABC):
    """One quality metric, accumulated over batches.

    Contract: ``name`` (the key of the value in recipes and tables), ``higher_is_better``
    and ``percent`` (values in percent, shown with two decimals) are class attributes;
    ``reset()`` starts a new evaluation; ``update(output, target)`` adds one batch (the
    model's raw output, the batch's target on the same device); ``result()`` is the value
    over every batch since ``reset`` (ValueError when none carried a sample).
    ``loss(logits, target)`` is the task loss fine-tunes minimise (cross entropy by
    default).  ``spec`` is what a study and a recipe record: the built-in's name, or
    ``pkg.module:fn`` for a callable.
    """

    name: str = ""
    higher_is_better: bool = True
    percent: bool = False

    def __init__(self) -> None:
        self.reset()

    @property
    def spec(self) -> str:
        return self.name

    def reset(self) -> None:
        self._total, self._count = 0.0, 0

    @abstractmethod
    def update(self, output: Any, target: Any) -> None:
        """Add one batch."""

    def result(self) -> float:
        if self._count == 0:
            raise ValueError("the evaluation data yielded no samples")
        return self._total / self._count

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean cross entropy of ``logits`` ([N, C], or [N, T, C] per token) against
        ``target`` ([N] or [N, T]; ``-100`` ignored)."""
        return F.cross_entropy(logits.flatten(0, -2), target.flatten(), ignore_index=IGNORE_INDEX)

    def score(self, value: float) -> float:
        """The score the engine maximises for a value of this metric."""
        return value if self.higher_is_better else -value

    def value(self, score: float) -> float:
        """The metric's value for a score (``score``'s inverse)."""
        return score if self.higher_is_better else -score

    def format(self, value: float) -> str:
        """``97.50%``, ``12.34``."""
        return f"{value:.2f}%" if self.percent else f"{value:.4g}"


def _labels(target: Any, metric: str) -> torch.Tensor:
    if not isinstance(target, torch.Tensor):
        raise ModelError(f"--metric {metric} needs the batches' targets (a dict batch with 'labels', or (x, y) pairs); "
                         f"this batch carries {type(target).__name__}")
    return target


def _classes(output: Any, target: Any, metric: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits flattened to [N, C] and targets to [N], ignored positions dropped."""
    logits, target = batches.logits(output), _labels(target, metric)
    logits, target = logits.reshape(-1, logits.shape[-1]), target.reshape(-1)
    keep = target != IGNORE_INDEX
    return logits[keep], target[keep]


class Accuracy(Metric):
    """Top-1 accuracy in percent (per sample; per token for [N, T, C] logits)."""

    name, percent = "accuracy", True
    k = 1

    def update(self, output: Any, target: Any) -> None:
        logits, target = _classes(output, target, self.name)
        top = logits.topk(min(self.k, logits.shape[-1]), dim=-1).indices
        self._total += 100.0 * float((top == target[:, None]).any(dim=-1).sum())
        self._count += int(target.numel())


class TopFive(Accuracy):
    """Top-5 accuracy in percent."""

    name, k = "top5", 5


class Perplexity(Metric):
    """Perplexity of a causal language model: exp of the mean next-token cross entropy of
    ``.logits`` [B, T, V] against the labels [B, T] shifted by one (``-100`` ignored),
    averaged over tokens.  Lower is better; fine-tunes minimise the same shifted loss."""

    name, higher_is_better = "perplexity", False

    @staticmethod
    def _shifted(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if logits.dim() != 3 or target.dim() != 2:
            raise ModelError(f"--metric perplexity needs language-model logits [batch, tokens, vocabulary] and labels "
                             f"[batch, tokens]; the model gives logits of shape {tuple(logits.shape)} and labels of "
                             f"shape {tuple(target.shape)}")
        return logits[:, :-1].flatten(0, 1), target[:, 1:].flatten()

    def update(self, output: Any, target: Any) -> None:
        logits, labels = self._shifted(batches.logits(output), _labels(target, self.name))
        self._total += float(F.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX, reduction="sum"))
        self._count += int((labels != IGNORE_INDEX).sum())

    def result(self) -> float:
        return math.exp(super().result())

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(*self._shifted(logits, target), ignore_index=IGNORE_INDEX)


class NegativeLoss(Metric):
    """Minus the mean cross entropy of the logits against the targets (per sample; per
    token for [N, T, C] logits, ``-100`` ignored, not shifted)."""

    name = "neg_loss"

    def update(self, output: Any, target: Any) -> None:
        logits, target = _classes(output, target, self.name)
        self._total -= float(F.cross_entropy(logits.float(), target, reduction="sum"))
        self._count += int(target.numel())


class CallableMetric(Metric):
    """A user's ``fn(output, target) -> float`` (the model's raw output), averaged over
    batches weighted by batch size.  Higher is better unless ``fn.higher_is_better`` is
    False.  ``spec`` is ``pkg.module:fn``, how ``--metric`` names it again."""

    def __init__(self, fn: Callable[[Any, Any], float], spec: str | None = None):
        self.fn = fn
        self.name = getattr(fn, "__name__", type(fn).__name__)
        self.higher_is_better = bool(getattr(fn, "higher_is_better", True))
        self._spec = spec or f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', self.name)}"
        super().__init__()

    @property
    def spec(self) -> str:
        return self._spec

    def update(self, output: Any, target: Any) -> None:
        value = self.fn(output, target)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise ModelError(f"--metric {self.spec} returned a {type(value).__name__}, not a number") from None
        size = _samples(output, target)
        self._total += value * size
        self._count += size


def _samples(output: Any, target: Any) -> int:
    """A batch's size: the first dimension of its target, else of the output's first tensor."""
    for data in (target, output):
        if isinstance(data, (torch.Tensor, tuple, Mapping)):
            found = [t for t in batches.tensors(data) if t.dim()]
            if found:
                return int(found[0].shape[0])
    return 1


METRICS: dict[str, type[Metric]] = {m.name: m for m in (Accuracy, TopFive, Perplexity, NegativeLoss)}
"""The built-in metrics by name."""


def get_metric(metric: str | Metric | Callable | None = None) -> Metric:
    """A fresh Metric: a built-in by name (None: accuracy), a Metric as it is, or a
    callable ``fn(output, target) -> float``.  AutocompressError for an unknown name (a
    ``pkg.module:fn`` spec is imported by the caller, which may import code)."""
    if metric is None:
        return Accuracy()
    if isinstance(metric, Metric):
        return metric
    if isinstance(metric, str):
        if metric in METRICS:
            return METRICS[metric]()
        raise AutocompressError(f"--metric {metric!r} is not a metric; use one of {', '.join(METRICS)} "
                                "or pkg.module:fn (a function (output, target) -> float)")
    if callable(metric):
        return CallableMetric(metric)
    raise AutocompressError(f"metric {metric!r} is neither a metric name nor a function (output, target) -> float")


def is_builtin(spec: str) -> bool:
    return spec in METRICS
