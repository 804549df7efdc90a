"""``hoyer`` and ``group-hoyer``: DeepHoyer's Hoyer-square regularisers (Yang, Wen and Li,
ICLR 2020) train the dense weights towards sparsity; the recipe's masks come after.

DeepHoyer trains with the regulariser, then prunes every weight below a fixed threshold
and fine-tunes the survivors: the threshold decides each layer's sparsity.  Here the
recipe decides it: after the regime the engine computes each layer's mask by magnitude
at the sparsity the recipe gives that layer (``Constraint.sparsity``) and the masked
distillation fine-tune trains what is kept.  The regulariser only makes that cut cheaper,
by moving the weight mass into the weights the mask keeps.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn as nn

from ...core.patterns import parse_pattern
from .base import Constraint, Recovery, TrainingRun

GROUPS = ("rows", "columns", "blocks")
"""How ``group-hoyer`` and ``hspg`` group a weight viewed as (out channels, everything else)."""
DEFAULT_BLOCK = (4, 4)
"""The block of ``groups='blocks'`` for a weight whose pattern is not a block like ``4x4``."""
_TINY = 1e-12


def check_fraction(option: str, value: float, high_open: bool = False) -> float:
    """``value`` as a float when it is a number in [0, 1] ([0, 1) when ``high_open``);
    ValueError naming ``option`` otherwise."""
    upper = "1)" if high_open else "1]"
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 <= value <= 1.0
    if not ok or (high_open and value >= 1.0):
        raise ValueError(f"{option}={value!r} is not a number in [0, {upper}")
    return float(value)


def check_strength(option: str, value: float) -> float:
    """``value`` as a float when it is a finite number >= 0; ValueError naming ``option``
    otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{option}={value!r} is not a finite number >= 0 (e.g. 1e-4)")
    return float(value)


def check_groups(value: str) -> str:
    """``value`` when it is one of ``GROUPS``; ValueError naming the option otherwise."""
    if value not in GROUPS:
        raise ValueError(f"groups={value!r} is not one of {', '.join(GROUPS)}")
    return value


def sparsity_constraints(constraints: Sequence[Constraint]) -> list[Constraint]:
    """The constraints a sparsity regulariser acts on: those with ``sparsity`` in ``kinds``."""
    return [c for c in constraints if "sparsity" in c.kinds]


def block_of(pattern: str) -> tuple[int, int]:
    """The ``(rows, cols)`` block of ``groups='blocks'``: the pattern's when it is a block
    like ``4x4``, else ``DEFAULT_BLOCK``."""
    kind, shape = parse_pattern(pattern)
    return shape if kind == "block" else DEFAULT_BLOCK


def group_sums(values: torch.Tensor, groups: str, block: tuple[int, int] = DEFAULT_BLOCK) -> torch.Tensor:
    """The sum of ``values`` (a weight-shaped tensor, viewed as (out, -1)) over each group,
    one entry a group: a row (output channel), a column (one input position of that view)
    or an RxC ``block`` (full blocks only, as ``magnitude_mask`` ranks them; partial edge
    blocks are no group)."""
    matrix = values.flatten(1)
    if groups == "rows":
        return matrix.sum(dim=1)
    if groups == "columns":
        return matrix.sum(dim=0)
    a, b = block
    rows, cols = matrix.shape
    full = matrix[: rows // a * a, : cols // b * b]
    return full.reshape(rows // a, a, cols // b, b).sum(dim=(1, 3)).flatten()


def group_expand(weight: torch.Tensor, values: torch.Tensor, groups: str, block: tuple[int, int] = DEFAULT_BLOCK,
                 fill: float = 1.0) -> torch.Tensor:
    """A tensor of ``weight``'s shape and dtype holding, at every entry, the value in
    ``values`` (one a group, ordered as ``group_sums`` gives them) of its group, and
    ``fill`` at the entries outside every group (partial edge blocks)."""
    rows, cols = weight.flatten(1).shape
    values = values.to(weight.dtype)
    if groups == "rows":
        full = values[:, None].expand(rows, cols)
    elif groups == "columns":
        full = values[None, :].expand(rows, cols)
    else:
        a, b = block
        full = torch.full((rows, cols), fill, dtype=weight.dtype, device=weight.device)
        grid = values.view(rows // a, cols // b).repeat_interleave(a, 0).repeat_interleave(b, 1)
        full[: rows // a * a, : cols // b * b] = grid
    return full.reshape(weight.shape)


def hoyer_square(weight: torch.Tensor) -> torch.Tensor:
    """DeepHoyer's H_S(W) = (sum |w|)^2 / sum w^2: 1 for one non-zero, the number of
    entries for a constant weight, scale-invariant (0 for an all-zero weight)."""
    return weight.abs().sum().square() / weight.square().sum().clamp(min=_TINY)


def group_hoyer_square(weight: torch.Tensor, groups: str, block: tuple[int, int] = DEFAULT_BLOCK) -> torch.Tensor:
    """Group-HS = (sum_g ||W_g||_2)^2 / sum_g ||W_g||_2^2 over ``group_sums``'s groups."""
    squares = group_sums(weight.square(), groups, block)
    return (squares + _TINY).sqrt().sum().square() / squares.sum().clamp(min=_TINY)


class Hoyer(Recovery):
    """DeepHoyer: ``decay`` x the sum over the weights the recipe sparsifies (constraints
    with ``sparsity`` in ``kinds``) of their Hoyer-square H_S(W) = (sum |w|)^2 / sum w^2,
    added to the distillation loss for ``share`` of the recovery's steps (``run.fit``:
    Adam at the run's learning rate).

    H_S is scale-invariant, so it moves mass between a weight's entries instead of
    shrinking them all as L1 does: small entries go to zero, large ones stay.  Its gradient
    per entry does not grow with the number of entries, so one ``decay`` fits layers of
    any size.  Element-wise, it suits the unstructured pattern; for block patterns use
    ``group-hoyer`` with ``groups='blocks'``, and an N:M mask gains little from it.

    Departs from the paper: DeepHoyer prunes below a fixed threshold after training, which
    sets each layer's sparsity; here the recipe's per-layer sparsity sets the magnitude
    masks (see the module docstring), and the fine-tune is the masked distillation.
    The default ``decay`` (1e-3) was chosen by measurement: LeNet-300-100 on MNIST at 2.5%
    of the weights (fc1 1.5%, fc2 7%, head dense), 2 epochs of regime and 2 of masked
    fine-tune, scored best at 1e-3 of 3e-5, 1e-4, 3e-4, 1e-3, 3e-3 and 1e-2 (reproductions
    of the paper train 250 epochs at 1e-4 to 1e-3; a short regime wants the top of that
    range).  It needs an allocation that leaves each layer able to work: at a uniform 2.5%
    (a 10-class head keeping 25 weights) it loses to ``distill`` (BENCHMARKS.md).

    ValueError for ``share`` outside [0, 1] or a ``decay`` that is not a finite number >= 0.
    """

    name = "hoyer"

    def __init__(self, share: float = 0.5, decay: float = 1e-3):
        super().__init__(check_fraction("share", share))
        self.decay = check_strength("decay", decay)

    def train(self, model: nn.Module, constraints: Sequence[Constraint], run: TrainingRun) -> None:
        """``run.fit`` with ``decay * sum H_S(W)`` added to the loss (plain distillation
        when no constraint is a sparsity one or ``decay`` is 0)."""
        weights = [c.weight for c in sparsity_constraints(constraints)]
        if not weights or self.decay == 0:
            run.fit(model)
            return
        run.fit(model, penalty=lambda: self.decay * sum(hoyer_square(w) for w in weights))


class GroupHoyer(Recovery):
    """DeepHoyer's group-HS: ``decay`` x the sum over the weights the recipe sparsifies of
    (sum_g ||W_g||_2)^2 / sum_g ||W_g||_2^2, added to the distillation loss for ``share``
    of the recovery's steps, so whole groups go to zero together.

    ``groups`` of a weight viewed as (out channels, everything else): ``rows`` (output
    channels: a Linear's output features, a conv's filters), ``columns`` (one input
    position of that view: an input feature, or one input channel at one kernel tap) or
    ``blocks`` (the constraint's block when its pattern is ``RxC``, else 4x4; partial edge
    blocks are not regularised, as the block mask never drops them).  Attention heads are
    no group: heads are removed as structure before the regime runs, and the rows of a
    head's projections (``in_proj_weight``, ``out_proj.weight``) are regularised row by row
    like any Linear's.

    Departs from the paper: DeepHoyer removes the groups whose norm falls below a
    threshold; here the recipe's per-layer sparsity and pattern set the magnitude masks
    after the regime (a row driven to zero is masked, not removed: removing channels is
    the channels knob's work, done before the regime).  ``blocks`` (the default) with a
    block pattern regularises exactly the groups the mask drops; ``rows``/``columns``
    under an unstructured mask gather the dropped weights in few rows or columns, which
    at high sparsity leaves units with no weight at all.

    Defaults by measurement on LeNet-300-100 (MNIST, 2.5% of the weights as ``hoyer``'s,
    2 + 2 epochs): the per-entry gradient of group-HS is about 1/sqrt(group size) of
    H_S's, so ``decay`` is larger than ``hoyer``'s: 0.1 scored best for 4x4 blocks of
    1e-3, 1e-2, 0.1, 0.3, 1 and 3; rows wanted 1e-3 of 1e-3, 1e-2, 0.1 and 1.  On that model no
    setting beat ``distill`` given the same epochs (BENCHMARKS.md).

    ValueError for ``share`` outside [0, 1], a ``decay`` that is not a finite number >= 0
    or ``groups`` not one of rows, columns, blocks.
    """

    name = "group-hoyer"

    def __init__(self, share: float = 0.5, decay: float = 0.1, groups: str = "blocks"):
        super().__init__(check_fraction("share", share))
        self.decay = check_strength("decay", decay)
        self.groups = check_groups(groups)

    def train(self, model: nn.Module, constraints: Sequence[Constraint], run: TrainingRun) -> None:
        """``run.fit`` with ``decay * sum group-HS(W)`` added to the loss."""
        chosen = [(c.weight, block_of(c.pattern)) for c in sparsity_constraints(constraints)]
        if not chosen or self.decay == 0:
            run.fit(model)
            return
        run.fit(model, penalty=lambda: self.decay * sum(group_hoyer_square(w, self.groups, block)
                                                        for w, block in chosen))
