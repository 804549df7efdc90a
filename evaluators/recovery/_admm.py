"""``admm``: the alternating direction method of multipliers of ADMM-NN and Zhang et al.'s
systematic ADMM weight pruning."""
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


class ADMM(PenaltyRecovery):
    """ADMM towards the recipe's constraints (Zhang et al., "A systematic DNN weight
    pruning framework using ADMM", ECCV 2018; Ren et al., ADMM-NN, ASPLOS 2019).

    Starts at Z = project(W), U = 0.  W-step: the distillation fine-tune with
    ``rho/2 * sum_i ||W_i - Z_i + U_i||^2`` (squared Frobenius norms, summed over the
    constrained weights) added to the loss, Adam at ``lr`` (None: the recovery's).  After
    every W-step but the last: Z = project(W + U), U = U + W - Z.  The regime's steps are
    cut into ``stages`` stages of ``updates`` W-steps each; rho is multiplied by
    ``rho_growth`` from one stage to the next (U divided by it, so the multiplier rho*U
    carries over, as Boyd et al. rescale it).  Then the engine projects W (not Z) hard
    and the masked fine-tune runs.

    Defaults: rho = 1e-2 multiplied by 10 per stage over 4 stages (rho up to 10), with 4
    dual updates per stage; Adam, as the papers' code trains the W-step.  ADMM-NN starts
    at rho = 1e-3 (x10 per stage), but trains tens of epochs per stage.  Measured on
    ``mnist_lenet300_100`` (98.4%) at 94% unstructured sparsity, 2 epochs of regime then
    2 of masked fine-tune: rho = 1e-3 never pulls W onto the masks (59% right after the
    hard projection, 96.9% after the fine-tune, what 4 epochs of distillation give);
    rho = 1e-2 does (92.6%, then 97.7%; 5e-3 and 2e-2 gave 97.5% and 97.7%, 6 or 8
    updates per stage 97.55% and 97.6%).  ``share`` is the fraction of the recovery's
    steps given to the regime.

    Cost: the W-steps cost what the distillation fine-tune costs, plus the penalty's
    elementwise terms; one projection per constrained weight per dual update (a sort per
    sparsity mask, a truncated SVD per rank constraint); memory for Z and U, two copies of
    the constrained weights.
    """

    name = "admm"

    def __init__(self, share: float = 0.5, rho: float = 1e-2, rho_growth: float = 10.0, stages: int = 4,
                 updates: int = 4, lr: float | None = None):
        check_share(share)
        check_positive("rho", rho)
        check_at_least_one("rho_growth", rho_growth)
        check_count("stages", stages)
        check_count("updates", updates)
        check_lr(lr)
        super().__init__(share=share)
        self.rho, self.rho_growth, self.stages, self.updates, self.lr = rho, rho_growth, stages, updates, lr

    def schedule(self) -> Schedule:
        return Schedule(self.rho, self.rho_growth, self.stages, self.updates)

    def update(self, state: PenaltyState, k: int) -> None:
        """Z = project(W + U); U = U + W - Z."""
        state.targets = state.project(shifted=True)
        state.shifts = [u + w - z for u, w, z in zip(state.shifts, state.weights(), state.targets)]
