"""The Recovery base class: a training regime that recovers a compressed model's accuracy,
the Constraint it trains towards, and the TrainingRun it trains with."""
from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn as nn

from ..accuracy import Batches, distill
from ..device import CPU, Runtime
from ..metrics import Metric

Projection = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Constraint:
    """One weight a recipe constrains, and the projection onto its constraint.

    ``name`` is the parameter's qualified name (``features.0.weight``); ``weight`` the
    dense ``nn.Parameter`` the regime trains; ``project(w)`` the weight the recipe's
    operators would make of ``w`` (same shape, dtype and device; no gradient): the
    magnitude mask applied, the truncated factorisation recomposed, the quantiser's
    rounding, composed in operator order, computed by the operators' own code so a
    weight that equals its projection is exactly what ``bake`` exports.  ``kinds`` are
    the compression kinds constraining it (``sparsity``, ``rank``, ``bits``);
    ``sparsity`` is the fraction of its entries the recipe zeroes (0.0 when none) and
    ``pattern`` their pattern.
    """

    name: str
    weight: nn.Parameter
    project: Projection
    kinds: tuple[str, ...] = ()
    sparsity: float = 0.0
    pattern: str = "unstructured"

    def distance(self) -> float:
        """``||w - project(w)|| / ||w||``: 0.0 where the constraint holds."""
        with torch.no_grad():
            w = self.weight.detach()
            return float((w - self.project(w)).norm() / w.norm().clamp(min=1e-12))


@dataclass
class TrainingRun:
    """What a regime trains with: the training ``batches``, the ``teacher`` (the base
    model on ``runtime``'s device) it distils from, ``steps`` batches of training, Adam at
    ``lr`` with a cosine schedule, the distillation ``temperature``, the ``seed``, the
    ``metric`` whose task loss is added.  ``fit`` is the distillation fine-tune with a
    regime's ``penalty`` added to its loss and its ``after_step`` hook."""

    teacher: nn.Module
    batches: Batches
    steps: int
    lr: float = 1e-3
    temperature: float = 4.0
    seed: int = 0
    runtime: Runtime = CPU
    metric: Metric | None = None

    def fit(self, model: nn.Module, steps: int | None = None, penalty: Callable[[], torch.Tensor] | None = None,
            after_step: Callable[[int], None] | None = None, lr: float | None = None) -> None:
        """Distil ``model`` for ``steps`` (default ``self.steps``) batches with
        ``penalty()`` added to each step's loss and ``after_step(step)`` called after each
        optimiser step (``evaluators.distill``; FloatingPointError when the loss stops
        being finite)."""
        distill(model, self.teacher, self.batches, self.steps if steps is None else steps,
                self.lr if lr is None else lr, self.temperature, self.seed, self.runtime, self.metric,
                penalty=penalty, after_step=after_step)


class Recovery(ABC):
    """A recovery regime: trains a compressed model towards its recipe's weight
    constraints before they are frozen.

    The engine recovers a recipe in this order: structure (channels, heads) is removed;
    the regime's ``train`` runs ``share`` of the recovery's training steps on the
    remaining dense weights; the constraints are then computed from the trained weights
    exactly as ``bake`` writes them (sparsity masks by magnitude, factorisation,
    quantisation); BatchNorm is recalibrated and the masked distillation fine-tune runs
    the rest of the steps.

    Contract: ``train(model, constraints, run)`` trains ``model`` (in train mode on
    ``run.runtime``'s device, no parametrization attached) in place for ``run.steps``
    batches, towards ``constraints`` (see ``Constraint``), through ``run.fit`` or its
    own loop; it leaves no hook, parametrization or extra parameter on the model; it is
    deterministic for ``run.seed`` on the CPU; it raises what the data or the loss raise
    (FloatingPointError for a loss that stops being finite), so the engine records a
    failed trial.  Constructor arguments are keyword arguments with defaults, stored as
    attributes of the same name (``get_params`` gives them back, and a recipe's
    ``recovery.params`` rebuild the regime); ``share`` (0 to 1) is one of them.  A
    regime keeps no state between calls.
    """

    name: ClassVar[str] = ""

    def __init__(self, share: float = 0.5):
        self.share = share

    def get_params(self) -> dict[str, Any]:
        """The constructor's keyword arguments as this regime was built with them."""
        return {name: getattr(self, name) for name, p in inspect.signature(type(self).__init__).parameters.items()
                if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}

    def split(self, steps: int) -> tuple[int, int]:
        """``(regime steps, masked fine-tune steps)`` out of a recovery's ``steps``."""
        first = int(round(self.share * steps)) if self.share > 0 else 0
        return first, steps - first

    @abstractmethod
    def train(self, model: nn.Module, constraints: Sequence[Constraint], run: TrainingRun) -> None:
        """Train ``model`` towards ``constraints`` for ``run.steps`` batches, in place."""
