"""HALOC: differentiable, hardware-aware rank search (Xiao et al., AAAI 2023), with
channel counts searched jointly when the space has channel knobs."""
from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.errors import AutocompressError
from ..core.patterns import break_even_rank, density_for_rank, rank_for, rank_step
from ..core.space import Candidate, Knob, Space, kept_channels
from ..core.trial import TrialRecord, search_trials
from .base import Problem, Proposal, Strategy

if TYPE_CHECKING:  # torch is imported when a search runs
    import torch

log = logging.getLogger(__name__)
CHECK_EVERY = 10
"""Steps between two convergence checks of the mixing probabilities."""


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


def candidate_fractions(space: Space, knob: Knob, count: int) -> list[float]:
    """Up to ``count`` densities of a channel knob, evenly spread from its lowest to below 1,
    each keeping a different number of channels (fewer than all: ``kept_channels``)."""
    group = next(g for g in space.groups if g.name == knob.target)
    seen, picks = {group.size}, []
    for density in np.linspace(knob.low, knob.high, count + 1)[:-1]:
        kept = kept_channels(group.size, float(density), space.channel_multiple, group.blocks)
        if kept not in seen:
            seen.add(kept)
            picks.append(float(density))
    return picks


def rank_density(knob: Knob, rank: int, even: int) -> float:
    """The density of rank knob ``knob`` asking for ``rank`` (0: not factorised) on its layer
    whose break-even rank is ``even`` after channel pruning: the nearest rank ``rank_for``
    gives at or below it, 1.0 where no rank below ``even`` is left."""
    if not rank or even <= 1 or rank >= even:
        return 1.0
    step = rank_step(even)
    rank = max(step, rank // step * step)
    return 1.0 if rank >= even else min(knob.high, max(knob.low, density_for_rank(rank, even)))


class Choices:
    """The knobs a HALOC search mixes and their candidates: ``ranks`` maps each rank knob
    to its candidate ranks, then 0 (the original layer); ``channels`` each channel knob to
    its candidate densities, then 1.0 (every channel).  ``values`` turns one candidate
    index per knob into knob values, a rank asked for at the layer's pruned shape."""

    def __init__(self, space: Space, ranks: Mapping[Knob, list[int]], channels: Mapping[Knob, list[float]]):
        self.space, self.ranks, self.channels = space, dict(ranks), dict(channels)
        self.knobs = {k.name: k for k in [*self.channels, *self.ranks]}

    def options(self, name: str) -> list:
        knob = self.knobs[name]
        return self.channels[knob] if knob in self.channels else self.ranks[knob]

    def values(self, indices: Mapping[str, int]) -> Candidate:
        """Knob values for ``{knob name: candidate index}`` (knobs left out: neutral)."""
        values = {name: self.channels[self.knobs[name]][i] for name, i in indices.items()
                  if self.knobs[name] in self.channels}
        ranked = [(self.knobs[n], i) for n, i in indices.items() if self.knobs[n] in self.ranks]
        if ranked:
            kept = self.space.group_channels(self.space.resolve(values))
            for knob, i in ranked:
                layer = self.space.layer(knob.target)
                out, inp = self.space.pruned_shape(layer, kept)
                even = break_even_rank(knob.option, out, inp, *layer.kernel, layer.rows)
                values[knob.name] = rank_density(knob, self.ranks[knob][i], even)
        return values

    def keeps_more(self, name: str, i: int, j: int) -> bool:
        """Whether candidate ``i`` of knob ``name`` keeps at least as much as candidate ``j``."""
        if self.knobs[name] in self.channels:
            return self.channels[self.knobs[name]][i] >= self.channels[self.knobs[name]][j]
        ranks = [r or float("inf") for r in self.ranks[self.knobs[name]]]
        return ranks[i] >= ranks[j]


def cost_terms(choices: Choices, metrics: Sequence[str]) -> list[tuple[tuple[str, ...], np.ndarray]]:
    """The model's cost as a sum of terms, each a table over the candidates of one to three
    knobs (``(knob names, array)``, one axis per knob, then one per metric), against the
    unchanged model: each channel knob alone, each pair of channel groups a layer joins
    (its output and input groups), and each rank knob's saving given its layer's output and
    (single) input group.  Exact for FLOPs and parameters, whose layer costs depend on at
    most these knobs; read from the space's analytic costs, so latency budgets are costed by
    the space's latency models too."""
    space = choices.space
    cache: dict[tuple, np.ndarray] = {}

    def cost(indices: Mapping[str, int]) -> np.ndarray:
        key = tuple(sorted(indices.items()))
        if key not in cache:
            costs = space.candidate_cost(choices.values(indices))
            cache[key] = np.array([costs[m] for m in metrics])
        return cache[key]

    def table(names: tuple[str, ...], value) -> tuple[tuple[str, ...], np.ndarray]:
        shape = [len(choices.options(n)) for n in names]
        out = np.zeros((*shape, len(metrics)))
        for index in itertools.product(*(range(s) for s in shape)):
            out[index] = value(dict(zip(names, index)))
        return names, out

    neutral = cost({})
    group_knob = {k.target: k.name for k in choices.channels}
    terms = [table((name,), lambda a: cost(a) - neutral) for name in group_knob.values()]
    pairs = set()
    for layer in space.layers:
        out = group_knob.get(layer.out_group)
        for group, _ in layer.in_groups:
            if out and group in group_knob and group_knob[group] != out:
                pairs.add(tuple(sorted((group_knob[group], out))))
    for a, b in sorted(pairs):
        terms.append(table((a, b), lambda x, a=a, b=b: cost(x) - cost({a: x[a]}) - cost({b: x[b]}) + neutral))
    for knob in choices.ranks:
        layer = space.layer(knob.target)
        ins = {group_knob[g] for g, _ in layer.in_groups if g in group_knob}
        around = [group_knob[layer.out_group]] if layer.out_group in group_knob else []
        around += sorted(ins - set(around)) if len(ins) == 1 else []
        terms.append(table((*around, knob.name),
                           lambda x, r=knob.name: cost(x) - cost({n: i for n, i in x.items() if n != r})))
    return terms


def expected_cost(probabilities: Mapping[str, torch.Tensor], terms: Sequence[tuple[tuple[str, ...], torch.Tensor]],
                  base: torch.Tensor) -> torch.Tensor:
    """The model's expected cost per metric: ``base`` plus every term (``cost_terms``) with
    each of its knobs' candidates weighted by that knob's mixing probabilities."""
    import torch

    total = base
    for names, table in terms:
        for name in names:
            table = torch.tensordot(probabilities[name].double(), table, dims=1)
        total = total + table
    return total


class HalocStrategy(Strategy):
    """Differentiable rank search: each layer with a rank knob becomes a softmax mix
    (temperature annealed geometrically from ``tau`` to ``tau_final`` over ``anneal_steps``
    steps, then held, so the mix ends close to its argmax; Gumbel noise with ``gumbel``) of
    its original output and its factorisations at ``candidates`` ranks (whole rank steps
    below the break-even rank).  When the space has channel knobs too, each channel group
    gets a mix of ``channel_candidates`` kept fractions as well: a soft mask over its
    channels, strongest first by the L2 magnitude channel pruning ranks them by
    (``compress.mixed_channels``); rank-only spaces search ranks alone.  Other knob kinds
    stay neutral.

    Each step, a weight step (Adam, ``weight_lr``) trains the factors on a training batch,
    then an architecture step (Adam, ``arch_lr``) trains the mixing weights on the next
    one.  Both minimise the distillation loss from the base model (CE + T^2 KL, T the
    proxy's temperature) plus ``pull_weight`` times the mean relative squared distance of
    each mixed layer output to the original layer's; the architecture step adds
    ``cost_weight * max(0, E[cost] / limit - 1)`` per budget metric, E[cost] the model's
    expected cost under the mixing probabilities (``cost_terms``: the space's FLOPs,
    params, size or latency).  The search runs to convergence: every ``CHECK_EVERY``
    steps the noise-free mixing probabilities are compared with the last check's, and it
    stops once for ``patience`` checks in a row no argmax moved and no probability moved
    by ``tolerance`` or more, or after ``steps`` steps.

    The proposal: the argmax candidate per knob (a rank asked for at the layer's pruned
    shape), ``channel_order`` the magnitude order the masks used, ``initial_state`` the
    trained weights of the factorised layers (``Proposal.initial_state``: each one's chain
    as a dense weight, which the engine's factorisation at the same rank gives back
    exactly; a layer the engine's budget repair moves to a lower rank starts from the best
    approximation of it, one it moves higher has its extra directions at zero; every
    other weight is the base model's, as the supernet left it), and ``preference`` each
    searched knob's probability mass on keeping at least what it chose (the budget repair
    lowers the least certain knobs first).  The initial state lives in memory: a trial
    evaluated in the process that asked for it (``autocompress search``, shared-study
    workers) starts from it; a Ray trial, an interrupted trial evaluated again on resume
    and the final fine-tune of the recipe start from the base model's weights.

    The first search trial uses ``cost_weight`` as given; later ones scale it by a seeded
    factor in [0.5, 2] and draw other Gumbel noise and batches, and a proposal already
    tried moves its least certain knobs to their second choice.  Every random draw
    depends on (seed, search trials so far) only, so a resumed study asks the same.
    Needs the workload and rank knobs.
    """

    name = "haloc"
    default_trials = 4
    knob_kinds = ("rank",)

    def __init__(self, seed: int = 0, candidates: int = 5, channel_candidates: int = 4, steps: int = 2000,
                 arch_lr: float = 0.05, weight_lr: float = 1e-3, tau: float = 1.0, tau_final: float = 0.1,
                 anneal_steps: int = 200, gumbel: bool = False, cost_weight: float = 2.0, pull_weight: float = 1.0,
                 tolerance: float = 0.01, patience: int = 3):
        super().__init__(seed)
        self.candidates, self.channel_candidates, self.steps = candidates, channel_candidates, steps
        self.arch_lr, self.weight_lr = arch_lr, weight_lr
        self.tau, self.tau_final, self.anneal_steps, self.gumbel = tau, tau_final, anneal_steps, gumbel
        self.cost_weight, self.pull_weight = cost_weight, pull_weight
        self.tolerance, self.patience = tolerance, patience
        for name in ("candidates", "channel_candidates", "steps", "anneal_steps", "patience"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise AutocompressError(f"strategy 'haloc': {name}={value!r} must be a whole number, 1 or more")
        for name, least in (("arch_lr", 0), ("tau", 0), ("tau_final", 0), ("tolerance", 0), ("weight_lr", None),
                            ("cost_weight", None), ("pull_weight", None)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value == least:
                raise AutocompressError(f"strategy 'haloc': {name}={value!r} must be a number "
                                        + ("above 0" if least == 0 else "0 or more"))
        if not isinstance(gumbel, bool):
            raise AutocompressError(f"strategy 'haloc': gumbel={gumbel!r} must be true or false")

    def ask(self, problem: Problem, history: Sequence[TrialRecord]) -> Proposal:
        """Run the relaxed search for the next trial and propose its argmax.  Raises
        AutocompressError without rank knobs, a workload or a costed budget metric."""
        space = problem.space
        if not any(k.kind == "rank" for k in space.knobs):
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
        choices = self._choices(space)
        order = self._channel_order(problem, choices)
        probabilities, net = self._search(problem, choices, order, cost_terms(choices, metrics), metrics, neutral,
                                          cost_weight, torch_seed, trial)
        indices = {name: int(np.argmax(p)) for name, p in probabilities.items()}
        indices = self._untried(choices, indices, probabilities, space, history)
        values = {**space.neutral(), **choices.values(indices)}
        log.info("haloc trial %d (cost weight %.3g): %s", trial, cost_weight,
                 {name: choices.options(name)[i] for name, i in indices.items()})
        settings = space.resolve(values)
        chosen = {k.target: indices[k.name] for k in choices.ranks
                  if settings[k.target].get("rank") and indices[k.name] < len(choices.ranks[k]) - 1}
        preference = {name: min(1.0, float(sum(p for j, p in enumerate(probabilities[name])
                                               if choices.keeps_more(name, j, i))))
                      for name, i in indices.items()}
        return Proposal(values, channel_order={k.target: order[k.target] for k in choices.channels},
                        initial_state=net.trained_state(chosen) or None, preference=preference)

    def _choices(self, space: Space) -> Choices:
        ranks = {}
        for knob in space.knobs:
            if knob.kind == "rank":
                _, options = candidate_ranks(space, knob, self.candidates)
                if options:
                    ranks[knob] = [*options, 0]
        heads = {g.name for g in space.groups if g.head_dim}
        channels = {}
        for knob in space.knobs:
            if knob.kind == "channels" and knob.target not in heads:
                options = candidate_fractions(space, knob, self.channel_candidates)
                if options:
                    channels[knob] = [*options, 1.0]
        return Choices(space, ranks, channels)

    @staticmethod
    def _channel_order(problem: Problem, choices: Choices) -> dict[str, list[int]]:
        if not choices.channels:
            return {}
        from ..compress.mixed_channels import channel_order

        return channel_order(problem.workload.model, problem.space, problem.workload.example_input)

    def _search(self, problem: Problem, choices: Choices, order: Mapping[str, list[int]], terms: list,
                metrics: list[str], neutral: Mapping[str, float], cost_weight: float, torch_seed: int,
                trial: int) -> tuple[dict[str, list[float]], Any]:
        """Train the relaxed model to convergence; the final mixing probabilities per knob
        name and the trained relaxed model (``ChannelRankSupernet``)."""
        import torch
        import torch.nn.functional as F

        from ..compress.mixed_channels import ChannelRankSupernet, keep_rows

        generator = torch.Generator().manual_seed(torch_seed)
        workload, space = problem.workload, problem.space
        teacher = workload.model.eval()
        groups = {g.name: g for g in space.groups}
        channels = {}
        for knob, options in choices.channels.items():
            group = groups[knob.target]
            counts = [kept_channels(group.size, d, space.channel_multiple, group.blocks) for d in options[:-1]]
            channels[knob.target] = keep_rows(group.size, counts, group.blocks, order[knob.target])
        net = ChannelRankSupernet(teacher, space, workload.example_input,
                                  {k.target: (k.option, options[:-1]) for k, options in choices.ranks.items()},
                                  channels, self.tau, self.gumbel, generator).train()
        rank_names = {k.target: k.name for k in choices.ranks}
        group_names = {k.target: k.name for k in choices.channels}

        def probabilities() -> dict[str, torch.Tensor]:
            found = {rank_names[n]: p for n, p in net.rank_probabilities().items()}
            found.update({group_names[g]: p for g, p in net.channel_probabilities().items()})
            return found

        tables = [(n, torch.tensor(t, dtype=torch.float64)) for n, t in terms]
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
                cost = expected_cost(probabilities(), tables, base)
                loss = loss + cost_weight * torch.relu(cost / limits - 1.0).sum().float()
            return loss

        batches = _batches(workload.train, skip=trial)
        halves = {False: net.weight_parameters(), True: net.arch_parameters()}
        last, stable, step = None, 0, 0
        for step in range(1, self.steps + 1):
            net.set_tau(self.tau * (self.tau_final / self.tau) ** min(1.0, step / self.anneal_steps))
            for optimizer, with_cost in ((weight_opt, False), (arch_opt, True)):
                batch = next(batches)
                if optimizer is None:
                    continue
                for arch, params in halves.items():  # no gradients for the half that is not stepped
                    for param in params:
                        param.requires_grad_(arch == with_cost)
                loss = loss_on(batch, with_cost)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"haloc search loss became {loss.item()} at step {step}")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            if step % CHECK_EVERY == 0:
                with torch.no_grad():
                    now = probabilities()
                if last is not None:
                    moved = max(float((now[n] - last[n]).abs().max()) for n in now)
                    same = all(int(now[n].argmax()) == int(last[n].argmax()) for n in now)
                    stable = stable + 1 if same and moved < self.tolerance else 0
                    log.debug("haloc step %d: probabilities moved by up to %.3g, argmax %s", step, moved,
                              "kept" if same else "moved")
                last = now
                if stable >= self.patience:
                    break
        with torch.no_grad():
            found = probabilities()
            ratio = expected_cost(found, tables, base) / limits
            hard = {name: F.one_hot(p.argmax(), len(p)) for name, p in found.items()}
            argmax_ratio = expected_cost(hard, tables, base) / limits
        log.info("haloc trial %d: %s after %d steps; %s of the limit expected, %s for the argmax", trial,
                 "converged" if stable >= self.patience else "not converged", step,
                 ", ".join(f"{m} {float(r):.3f}" for m, r in zip(metrics, ratio)),
                 ", ".join(f"{m} {float(r):.3f}" for m, r in zip(metrics, argmax_ratio)))
        return {name: p.tolist() for name, p in found.items()}, net

    @staticmethod
    def _untried(choices: Choices, indices: dict[str, int], probabilities: Mapping[str, list[float]], space: Space,
                 history: Sequence[TrialRecord]) -> dict[str, int]:
        """``indices``, or, if a search trial already proposed their values, with the knobs
        whose top two choices are closest moved one by one to their second choice until
        the values are new."""
        tried = {tuple(sorted(r.proposal.items())) for r in search_trials(history)}
        neutral = space.neutral()
        margins = []
        for name, p in probabilities.items():
            order = np.argsort(p, kind="stable")[::-1]
            if len(order) > 1:
                margins.append((p[order[0]] - p[order[1]], name, int(order[1])))
        indices = dict(indices)
        for _, name, second in sorted(margins):
            if tuple(sorted({**neutral, **choices.values(indices)}.items())) not in tried:
                break
            indices[name] = second
        return indices


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
