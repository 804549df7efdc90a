"""HALOC: differentiable, hardware-aware rank search (Xiao et al., AAAI 2023)."""
from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ..core.errors import AutocompressError
from ..core.patterns import break_even_rank, density_for_rank, rank_for, rank_step
from ..core.space import Knob, Space
from ..core.trial import TrialRecord, search_trials
from .base import Problem, Proposal, Strategy

if TYPE_CHECKING:  # torch is imported when a search runs
    import torch

log = logging.getLogger(__name__)


def candidate_ranks(space: Space, knob: Knob, count: int) -> tuple[int, list[int]]:
    """The break-even rank of a rank knob's layer (all channels kept) and up to ``count``
    ranks its knob can express, evenly spread from the lowest to the highest below the
    break-even rank, in whole ``rank_step``s."""
    layer = space.layer(knob.target)
    even = break_even_rank(knob.option, layer.out_channels, layer.in_channels, *layer.kernel, layer.rows)
    lowest = rank_for(knob.low, even)
    if not lowest:
        return even, []
    allowed = list(range(lowest, even, rank_step(even)))
    picks = np.unique(np.round(np.linspace(0, len(allowed) - 1, min(count, len(allowed)))).astype(int))
    return even, [allowed[i] for i in picks]


def candidate_costs(space: Space, knob: Knob, ranks: Sequence[int], even: int,
                    metrics: Sequence[str]) -> list[list[float]]:
    """What each candidate (``ranks``, then the original layer) adds to the model's cost,
    per metric in ``metrics``, against the unchanged model: the space's analytic costs
    (FLOPs, params, size, and the latency of the space's latency models)."""
    neutral = space.candidate_cost({})
    rows = []
    for rank in ranks:
        cost = space.candidate_cost({knob.name: density_for_rank(rank, even)})
        rows.append([cost[m] - neutral[m] for m in metrics])
    return rows + [[0.0] * len(metrics)]


class HalocStrategy(Strategy):
    """Differentiable rank search: each layer with a rank knob becomes a softmax mix
    (temperature annealed geometrically from ``tau`` to ``tau_final``, so the mix ends
    close to its argmax; Gumbel noise with ``gumbel``) of its original output and its
    factorisations at ``candidates`` ranks (whole rank steps below the break-even rank).
    For ``steps`` steps, a weight step (Adam, ``weight_lr``) trains the factors on a
    training batch, then an architecture step (Adam, ``arch_lr``) trains the mixing
    weights on the next one.  Both minimise the distillation loss from the base model
    (CE + T^2 KL, T the proxy's temperature) plus ``pull_weight`` times the mean relative
    squared distance of each mixed output to the original layer's; the architecture step
    adds ``cost_weight * max(0, E[cost] / limit - 1)`` per budget metric, E[cost] the
    model's cost with every layer's candidate costs (``candidate_costs``: FLOPs, or the
    budget's latency model) weighted by the mixing probabilities.

    The argmax rank per layer becomes the proposal (other knobs at 1.0); the engine
    projects it onto the budget, factorises the pretrained weights and fine-tunes.  The
    first search trial uses ``cost_weight`` as given; later ones scale it by a seeded
    factor in [0.5, 2] and draw other Gumbel noise and batches, and a proposal already
    tried moves its least certain layers to their second choice.  Every random draw
    depends on (seed, search trials so far) only.  Needs the workload and rank knobs.
    """

    name = "haloc"
    default_trials = 4
    knob_kinds = ("rank",)

    def __init__(self, seed: int = 0, candidates: int = 5, steps: int = 150, arch_lr: float = 0.05,
                 weight_lr: float = 1e-4, tau: float = 1.0, tau_final: float = 0.1, gumbel: bool = False,
                 cost_weight: float = 2.0, pull_weight: float = 1.0):
        super().__init__(seed)
        self.candidates, self.steps, self.arch_lr, self.weight_lr = candidates, steps, arch_lr, weight_lr
        self.tau, self.tau_final, self.gumbel = tau, tau_final, gumbel
        self.cost_weight, self.pull_weight = cost_weight, pull_weight
        for name in ("candidates", "steps"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise AutocompressError(f"strategy 'haloc': {name}={value!r} must be a whole number, 1 or more")
        for name, least in (("arch_lr", 0), ("tau", 0), ("tau_final", 0), ("weight_lr", None),
                            ("cost_weight", None), ("pull_weight", None)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value == least:
                raise AutocompressError(f"strategy 'haloc': {name}={value!r} must be a number "
                                        + ("above 0" if least == 0 else "0 or more"))
        if not isinstance(gumbel, bool):
            raise AutocompressError(f"strategy 'haloc': gumbel={gumbel!r} must be true or false")

    def ask(self, problem: Problem, history: Sequence[TrialRecord]) -> Proposal:
        """Run the relaxed search for the next trial and propose its argmax ranks.
        Raises AutocompressError without rank knobs, a workload or a costed budget metric."""
        space = problem.space
        knobs = [k for k in space.knobs if k.kind == "rank"]
        if not knobs:
            raise AutocompressError("strategy 'haloc' searches ranks but the space has no rank knob; "
                                    "use --knobs rank (or add rank to --knobs)")
        if problem.workload is None:
            raise AutocompressError("strategy 'haloc' trains a relaxed model on the data; the problem has no "
                                    "workload (pass the model and data to the search)")
        neutral = space.candidate_cost({})
        metrics = [m for m in problem.limits if m in neutral]
        if not metrics:
            raise AutocompressError(f"strategy 'haloc' cannot cost the budget metrics {', '.join(problem.limits)}; "
                                    "use flops, params, size or a latency budget")
        trial = len(search_trials(history))
        rng = np.random.default_rng((self.seed % 2**32, trial))
        cost_weight = self.cost_weight * (1.0 if trial == 0 else float(2.0 ** rng.uniform(-1.0, 1.0)))
        torch_seed = int(rng.integers(2**31))
        tables = {}
        for knob in knobs:
            even, ranks = candidate_ranks(space, knob, self.candidates)
            if ranks:
                tables[knob] = (even, ranks, candidate_costs(space, knob, ranks, even, metrics))
        probabilities = self._search(problem, tables, metrics, neutral, cost_weight, torch_seed, trial)
        values = {k.name: 1.0 for k in space.knobs}
        for knob, (even, ranks, _) in tables.items():
            values[knob.name] = density_for_rank(([*ranks, 0])[int(np.argmax(probabilities[knob.target]))], even)
        values = self._untried(values, tables, probabilities, history)
        log.info("haloc trial %d (cost weight %.3g): ranks %s", trial, cost_weight,
                 {k.target: rank_for(values[k.name], even) or "full" for k, (even, _, _) in tables.items()})
        return Proposal(values)

    def _search(self, problem: Problem, tables: Mapping[Knob, tuple], metrics: list[str],
                neutral: Mapping[str, float], cost_weight: float, torch_seed: int,
                trial: int) -> dict[str, list[float]]:
        """Train the relaxed model; the final mixing probabilities per layer."""
        import torch
        import torch.nn.functional as F

        from ..compress.mixed_rank import RankSupernet

        generator = torch.Generator().manual_seed(torch_seed)
        workload = problem.workload
        teacher = workload.model.eval()
        net = RankSupernet(teacher, {k.target: (k.option, ranks) for k, (_, ranks, _) in tables.items()},
                           self.tau, self.gumbel, generator).train()
        costs = {k.target: torch.tensor(rows, dtype=torch.float64) for k, (_, _, rows) in tables.items()}
        limits = torch.tensor([problem.limits[m] for m in metrics], dtype=torch.float64)
        base = torch.tensor([neutral[m] for m in metrics], dtype=torch.float64)
        temperature = float(problem.recovery.get("temperature", 4.0))
        weight_opt = torch.optim.Adam(net.weight_parameters(), lr=self.weight_lr) if self.weight_lr > 0 else None
        arch_opt = torch.optim.Adam(net.arch_parameters(), lr=self.arch_lr)

        def loss_on(batch, with_cost: bool):
            x, y = batch
            with torch.no_grad():
                soft_teacher = F.log_softmax(teacher(x) / temperature, dim=1)
            logits = net(x)
            loss = F.cross_entropy(logits, y) + temperature**2 * F.kl_div(
                F.log_softmax(logits / temperature, dim=1), soft_teacher, reduction="batchmean", log_target=True)
            loss = loss + self.pull_weight * net.pull()
            if with_cost:
                cost = expected_cost(net.probabilities(), costs, base)
                loss = loss + cost_weight * torch.relu(cost / limits - 1.0).sum().float()
            return loss

        batches = _batches(workload.train, skip=trial)
        groups = {False: net.weight_parameters(), True: net.arch_parameters()}
        for step in range(self.steps):
            net.set_tau(self.tau * (self.tau_final / self.tau) ** (step / max(1, self.steps - 1)))
            for optimizer, with_cost in ((weight_opt, False), (arch_opt, True)):
                batch = next(batches)
                if optimizer is None:
                    continue
                for arch, params in groups.items():  # no gradients for the half that is not stepped
                    for param in params:
                        param.requires_grad_(arch == with_cost)
                loss = loss_on(batch, with_cost)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"haloc search loss became {loss.item()} at step {step}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        with torch.no_grad():
            probabilities = net.probabilities()
            ratio = expected_cost(probabilities, costs, base) / limits
            hard = {name: F.one_hot(p.argmax(), len(p)) for name, p in probabilities.items()}
            argmax_ratio = expected_cost(hard, costs, base) / limits
        log.info("haloc trial %d: %s of the limit expected, %s for the argmax ranks", trial,
                 ", ".join(f"{m} {float(r):.3f}" for m, r in zip(metrics, ratio)),
                 ", ".join(f"{m} {float(r):.3f}" for m, r in zip(metrics, argmax_ratio)))
        return {name: p.tolist() for name, p in probabilities.items()}

    @staticmethod
    def _untried(values: dict[str, float], tables: Mapping[Knob, tuple], probabilities: Mapping[str, list[float]],
                 history: Sequence[TrialRecord]) -> dict[str, float]:
        """``values``, or, if a search trial already proposed it, with the layers whose top
        two choices are closest moved one by one to their second choice until it is new."""
        tried = {tuple(sorted(r.proposal.items())) for r in search_trials(history)}
        margins = []
        for knob, (even, ranks, _) in tables.items():
            order = np.argsort(probabilities[knob.target], kind="stable")[::-1]
            p = probabilities[knob.target]
            margins.append((p[order[0]] - p[order[1]], knob.name, density_for_rank([*ranks, 0][order[1]], even)))
        values = dict(values)
        for _, name, second in sorted(margins):
            if tuple(sorted(values.items())) not in tried:
                break
            values[name] = second
        return values


def expected_cost(probabilities: Mapping[str, torch.Tensor], costs: Mapping[str, torch.Tensor],
                  base: torch.Tensor) -> torch.Tensor:
    """The model's expected cost per metric: ``base`` plus every layer's candidate costs
    (rows: candidates, columns: metrics) weighted by its mixing probabilities."""
    total = base
    for name, p in probabilities.items():
        total = total + p.double() @ costs[name]
    return total


def _batches(batches, skip: int = 0) -> Iterator:
    """Training batches, round and round, after skipping ``skip`` of them."""
    empty, seen = True, 0
    while True:
        for batch in batches:
            empty = False
            seen += 1
            if seen > skip:
                yield batch
        if empty:
            raise AutocompressError("strategy 'haloc': the training data yielded no batches")
