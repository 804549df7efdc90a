"""``lc``: Condensa's learning-compression (L-C) algorithm, in its quadratic-penalty form."""
from __future__ import annotations

from ._penalty import (
    PenaltyRecovery,
    PenaltyState,
    Schedule,
    check_at_least_one,
    check_count,
    check_lr,
    check_positive,
    check_share,
)


class LC(PenaltyRecovery):
    """Learning-compression (Carreira-Perpinan, "Model compression as constrained
    optimization", 2017; the L-C engine of Condensa, Joseph et al. 2020), quadratic-penalty
    form: no multiplier.

    C-step: Theta = project(W) (Theta = project(W) at the start: direct compression).
    L-step: the distillation fine-tune with ``mu/2 * sum_i ||W_i - Theta_i||^2`` added to
    the loss, Adam at ``lr`` (None: the recovery's).  The regime's steps are cut into
    ``iterations`` equal L-steps with a C-step between two; mu starts at ``mu`` and is
    multiplied by ``mu_growth`` after every iteration (mu_k = mu * mu_growth^k).  Then the
    engine projects W hard and the masked fine-tune runs.

    Defaults: mu = 0.3 multiplied by 1.2 per iteration over 30 L-C iterations (mu up to
    about 60).  Condensa's are mu_init = 1e-3 and mu_multiplier = 1.1 (30-35 iterations of
    thousands of minibatches each).  Measured on ``mnist_lenet300_100`` (98.4%) at 94%
    unstructured sparsity, 2 epochs of regime then 2 of masked fine-tune: Condensa's
    leave W far from its projection (21% right after it, 96.1% after the fine-tune);
    these give 83% and 96.5% (4 epochs of distillation: 96.9%, ``admm`` 97.7%).  Without
    a multiplier W stays about ``gradient / mu`` off its constraint exactly where the
    loss pulls hardest, so the hard projection costs more than after ``admm``.  Condensa
    also keeps an augmented-Lagrangian multiplier and trains its L-steps with SGD
    (momentum 0.95); this regime keeps none and trains with Adam like the others.

    Cost: the L-steps cost what the distillation fine-tune costs, plus the penalty's
    elementwise terms; one projection per constrained weight per C-step (a sort per
    sparsity mask, a truncated SVD per rank constraint); memory for Theta, one copy of
    the constrained weights.
    """

    name = "lc"

    def __init__(self, share: float = 0.5, mu: float = 0.3, mu_growth: float = 1.2, iterations: int = 30,
                 lr: float | None = None):
        check_share(share)
        check_positive("mu", mu)
        check_at_least_one("mu_growth", mu_growth)
        check_count("iterations", iterations)
        check_lr(lr)
        super().__init__(share=share)
        self.mu, self.mu_growth, self.iterations, self.lr = mu, mu_growth, iterations, lr

    def schedule(self) -> Schedule:
        return Schedule(self.mu, self.mu_growth, self.iterations, 1)

    def update(self, state: PenaltyState, k: int) -> None:
        """The C-step: Theta = project(W)."""
        state.targets = state.project(shifted=False)
