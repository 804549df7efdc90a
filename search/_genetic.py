from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.errors import AutocompressError
from ..core.projection import project
from ..core.trial import SEARCH, TrialRecord, search_trials
from ._ga import GASettings
from .base import Problem, Proposal, Strategy
from .sensitivity import allocation, next_scan, repair_preference, scan_levels, scanned_floors, sensitivities


class GeneticStrategy(Strategy):
    """Genetic channel selection (the GA pruning paper), layer by layer.

    First a sensitivity scan of the channel knobs (``scan_levels`` densities each).  Each
    search trial then takes a sensitivity-weighted allocation (strength 1 on the first
    trial, a seeded strength in [0, 2] afterwards; no knob below its lowest scanned
    density) repaired onto the budget with the scans' preference
    (``sensitivity.repair_preference``), which fixes the channels each group keeps, and
    decides *which* channels, group by group, least sensitive first, with the earlier
    groups already pruned: a GA over one bit per channel (``population``,
    ``generations``, ``tournament``, ``crossover_rate``, ``mutation_rate`` per bit,
    ``elite``; repaired to the target count) minimises the
    reconstruction error of the group's next layers against the unpruned model on
    ``batch_size`` training samples, and its ``rerank`` best selections are re-ranked by
    accuracy on ``minival_batches`` validation batches.  The engine's distillation
    fine-tune from the base model recovers each trial and the chosen recipe.

    Needs the workload (model and data); attention head groups keep the default choice
    of heads.  Every random draw depends on (seed, search trials so far) only.
    """

    name = "genetic"
    default_trials = 6

    def __init__(self, seed: int = 0, population: int = 20, generations: int = 15, tournament: int = 3,
                 crossover_rate: float = 0.9, mutation_rate: float = 0.02, elite: int = 2, rerank: int = 3,
                 batch_size: int = 64, minival_batches: int = 1, scan_levels: int = 3):
        super().__init__(seed)
        self.population, self.generations, self.tournament = population, generations, tournament
        self.crossover_rate, self.mutation_rate, self.elite = crossover_rate, mutation_rate, elite
        self.rerank, self.batch_size, self.minival_batches, self.scan_levels = \
            rerank, batch_size, minival_batches, scan_levels
        self._cached: tuple | None = None  # (workload, space, ChannelSelection)
        try:
            self.ga.check()
        except ValueError as exc:
            raise AutocompressError(f"strategy 'genetic': {exc}") from None
        for name in ("rerank", "batch_size", "minival_batches", "scan_levels"):
            if getattr(self, name) < 1:
                raise AutocompressError(f"strategy 'genetic': {name}={getattr(self, name)} must be 1 or more")

    @property
    def ga(self) -> GASettings:
        return GASettings(self.population, self.generations, self.tournament, self.crossover_rate,
                          self.mutation_rate, self.elite)

    def ask(self, problem: Problem, history: Sequence[TrialRecord]) -> Proposal:
        """The next scan proposal, else the next search proposal: the repaired allocation
        and, for every group it prunes, the GA's channels (kept first).  Raises
        AutocompressError without a workload."""
        if problem.workload is None:
            raise AutocompressError("strategy 'genetic' selects channels on the model and its data; "
                                    "the problem has no workload (pass the model and data to the search)")
        space = problem.space
        scan = next_scan(space.restrict(("channels",)), history, scan_levels(self.scan_levels))
        if scan is not None:
            return scan
        trial = len(search_trials(history))
        seed = (self.seed % 2**32, trial)
        strength = 1.0 if trial == 0 else float(np.random.default_rng(seed).uniform(0.0, 2.0))
        drops = sensitivities(space, history, problem.base_score)
        preference = repair_preference(space, history, problem.base_score)
        profile = allocation(space, drops, strength, scanned_floors(space, history))
        candidate = project(space, profile, problem.limits, preference=preference)
        # the engine repairs the proposal again with the same preference, which leaves a
        # repaired and grown candidate as it is: decide channels for what it will build
        kept = space.group_channels(space.resolve(candidate))
        knobs = set(space.knob_names)
        groups = [g.name for g in space.groups
                  if not g.head_dim and f"{g.name}/channels" in knobs and kept[g.name] < g.size]
        order = sorted(groups, key=lambda g: drops[f"{g}/channels"])  # stable: network order on ties
        if not order:
            return Proposal(candidate, SEARCH, preference=preference)
        return Proposal(candidate, SEARCH, self._selection(problem).run(kept, order, seed), preference=preference)

    def _selection(self, problem: Problem):
        """The channel selection for this problem's model, kept between asks (it holds only
        what the model and data determine: the dependency graph and the batches)."""
        from ._channel_selection import ChannelSelection

        cached = self._cached
        if cached is None or cached[0] is not problem.workload or cached[1] is not problem.space:
            cached = (problem.workload, problem.space, ChannelSelection(
                problem.workload, problem.space, self.ga, self.rerank, self.batch_size, self.minival_batches,
                problem.metric))
            self._cached = cached
        return cached[2]
