"""The penalty/projection engine the ``admm``, ``slr`` and ``lc`` regimes share.

The dense weights W are trained (``TrainingRun.fit``: the distillation fine-tune, Adam,
one cosine schedule over the regime's steps) with the quadratic penalty
``rho/2 * sum_i ||W_i - Z_i + U_i||^2`` added to the loss: each weight is pulled towards
``Z_i``, a point of its constraint (``Constraint.project``), shifted by ``U_i``, a scaled
multiplier (``Lambda_i / rho``; zero for a regime without one).  The steps are cut into
``stages x updates`` equal W-steps; between two W-steps the regime's ``update`` moves Z and
U (its update rule), and between two stages rho is multiplied by the regime's growth
(U divided by it, so the multiplier ``rho * U`` is unchanged).  The engine attaches
nothing to the model: Z, U and rho live in a ``PenaltyState`` for one ``train`` call.
All W-steps run in one ``fit`` (the updates run from its ``after_step``), so the data
stream and Adam's moments carry on across them: each ``fit`` would restart the data from
its first batch.

Adam, as the papers' code uses for the W-step, normalises each weight's step: rho sets
where the penalty balances the loss's gradient, not how fast a weight moves, which is at
most about ``lr`` per step (a weight of magnitude m needs at least m/lr steps to reach
zero).  The regimes keep ``lr`` as an option; on LeNet-300-100 (MNIST) 5e-4 to 3e-3 did
no better than the recovery's 1e-3.
"""
from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real

import torch
import torch.nn as nn

from .base import Constraint, Recovery, TrainingRun


@dataclass(frozen=True)
class Schedule:
    """A penalty regime's plan: the penalty weight ``rho`` it starts with, its ``growth``
    factor per stage, ``stages`` stages of ``updates`` W-steps each."""

    rho: float
    growth: float
    stages: int
    updates: int


class PenaltyState:
    """The penalty a regime trains with during one ``train`` call: per constrained weight
    its target ``targets[i]`` (Z, on the constraint) and shift ``shifts[i]`` (U, the scaled
    multiplier), and the penalty weight ``rho``.  Starts at Z = project(W), U = 0."""

    def __init__(self, constraints: Sequence[Constraint], rho: float):
        self.constraints = list(constraints)
        self.rho = rho
        with torch.no_grad():
            self.targets = [c.project(c.weight.detach()) for c in self.constraints]
        self.shifts = [torch.zeros_like(z) for z in self.targets]
        self.refresh()

    def weights(self) -> list[torch.Tensor]:
        """The constrained weights' current values (detached)."""
        return [c.weight.detach() for c in self.constraints]

    def refresh(self) -> None:
        """Recompute what the penalty pulls each weight to (Z - U) after Z or U changed."""
        self._anchors = [z - u for z, u in zip(self.targets, self.shifts)]

    def penalty(self) -> torch.Tensor:
        """``rho/2 * sum_i ||W_i - Z_i + U_i||^2`` (a scalar with a gradient for W)."""
        total = sum(((c.weight - a) ** 2).sum() for c, a in zip(self.constraints, self._anchors))
        return 0.5 * self.rho * total

    def project(self, shifted: bool = True) -> list[torch.Tensor]:
        """Each weight's projection onto its constraint: of ``W + U`` when ``shifted``
        (the Z-step of a multiplier method), else of W."""
        with torch.no_grad():
            return [c.project(w + u if shifted else w)
                    for c, w, u in zip(self.constraints, self.weights(), self.shifts)]

    def gap(self, targets: Sequence[torch.Tensor] | None = None) -> float:
        """``||W - Z||`` over all constrained weights together (Frobenius), Z being
        ``targets`` (default: the current ones)."""
        targets = self.targets if targets is None else targets
        return math.sqrt(sum(float(((w - z) ** 2).sum()) for w, z in zip(self.weights(), targets)))

    def grow(self, factor: float) -> None:
        """Multiply rho by ``factor`` and divide U by it, keeping the multiplier rho*U."""
        self.rho *= factor
        self.shifts = [u / factor for u in self.shifts]


class PenaltyRecovery(Recovery):
    """A regime that trains W with ``PenaltyState.penalty`` added to the distillation loss
    and moves the penalty's targets between W-steps (see the module docstring).

    Subclasses give ``schedule()`` and ``update(state, k)`` (what happens after the k-th
    W-step, k = 1 .. stages*updates - 1; none after the last: the engine's hard projection
    follows); they may override ``start`` to keep more state.  ``lr`` (None: the
    recovery's own) is the W-step's Adam learning rate.  A recipe that constrains no
    weight is distilled for the regime's steps without a penalty.
    """

    lr: float | None

    @abstractmethod
    def schedule(self) -> Schedule:
        """The regime's rho, growth per stage, stages and W-steps per stage."""

    @abstractmethod
    def update(self, state: PenaltyState, k: int) -> None:
        """Move Z and U (and what else the regime keeps) after the k-th W-step."""

    def start(self, model: nn.Module, constraints: Sequence[Constraint], run: TrainingRun) -> PenaltyState:
        """The state before the first W-step: Z = project(W), U = 0, rho = the schedule's."""
        return PenaltyState(constraints, self.schedule().rho)

    def train(self, model: nn.Module, constraints: Sequence[Constraint], run: TrainingRun) -> None:
        """Train ``model`` for ``run.steps`` batches towards ``constraints``: the W-steps
        in one ``run.fit``, the regime's updates and rho's growth between them."""
        if not constraints:
            run.fit(model, lr=self.lr)
            return
        plan = self.schedule()
        state = self.start(model, constraints, run)
        due = update_steps(run.steps, plan.stages * plan.updates)

        def after_step(step: int) -> None:
            for k in due.get(step, ()):
                self.update(state, k)
                if k % plan.updates == 0:
                    state.grow(plan.growth)
                state.refresh()

        run.fit(model, penalty=state.penalty, after_step=after_step, lr=self.lr)


def update_steps(steps: int, w_steps: int) -> dict[int, list[int]]:
    """After which training step (0-based) each update k = 1 .. ``w_steps`` - 1 runs when
    ``steps`` are cut into ``w_steps`` near-equal W-steps (several after one step when
    there are fewer steps than W-steps)."""
    due: dict[int, list[int]] = {}
    for k in range(1, w_steps):
        due.setdefault(max(steps * k // w_steps - 1, 0), []).append(k)
    return due


def check_share(share: float) -> None:
    """ValueError unless 0 < ``share`` <= 1."""
    if not _number(share) or not 0 < share <= 1:
        raise ValueError(f"share must be a fraction above 0 and at most 1 (of the recovery's steps), not {share!r}")


def check_positive(name: str, value: float) -> None:
    """ValueError unless ``value`` is a number above 0."""
    if not _number(value) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{name} must be a number above 0, not {value!r}")


def check_at_least_one(name: str, value: float) -> None:
    """ValueError unless ``value`` is a number of at least 1 (a growth factor)."""
    if not _number(value) or not 1 <= value < math.inf:
        raise ValueError(f"{name} must be a number of at least 1, not {value!r}")


def check_above_one(name: str, value: float) -> None:
    """ValueError unless ``value`` is a number above 1."""
    if not _number(value) or not 1 < value < math.inf:
        raise ValueError(f"{name} must be a number above 1, not {value!r}")


def check_count(name: str, value: int) -> None:
    """ValueError unless ``value`` is a whole number of at least 1."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a whole number of at least 1, not {value!r}")


def check_between_0_and_1(name: str, value: float) -> None:
    """ValueError unless 0 < ``value`` < 1."""
    if not _number(value) or not 0 < value < 1:
        raise ValueError(f"{name} must be a number between 0 and 1 (exclusive), not {value!r}")


def check_lr(lr: float | None) -> None:
    """ValueError unless ``lr`` is None (the recovery's) or a number above 0."""
    if lr is not None:
        check_positive("lr", lr)


def _number(value) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)
