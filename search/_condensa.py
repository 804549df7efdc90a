from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..core.errors import AutocompressError
from ..core.projection import project
from ..core.space import Space
from ..core.trial import COMPLETE, SEARCH, TrialRecord
from .base import Problem, Proposal, Strategy
from .sensitivity import allocation, next_scan, repair_preference, scan_levels, scanned_floors, sensitivities

_ATTEMPTS = 32  # candidates projected per decision to find one not tried yet


def level_set_acquisition(mu: np.ndarray, sigma: np.ndarray, threshold: float, g: float) -> np.ndarray:
    """Implicit-level-set UCB: ``(1 - g) * sigma - g * |mu - threshold|``, largest where the
    model is unsure and its mean is near the threshold (all in points of accuracy)."""
    return (1.0 - g) * np.asarray(sigma) - g * np.abs(np.asarray(mu) - threshold)


@dataclass(frozen=True)
class _Observation:
    level: float  # t of the evaluated candidate, in [0, 1]
    strength: float  # allocation strength as a fraction of max_strength, in [0, 1]
    score: float


class CondensaStrategy(Strategy):
    """Condensa-style constrained Bayesian optimisation over two numbers per trial.

    After a sensitivity scan (``scan_levels`` densities per knob), a search trial is
    ``(t, alpha)``: the sensitivity allocation of strength ``alpha`` in
    ``[0, max_strength]`` (``sensitivity.allocation``), projected so that the primary
    budget metric costs at most ``limit * (c_min / limit) ** t``, where ``c_min`` is the
    cost of the most compressed candidate: ``t = 0`` is the budget, ``t = 1`` the most
    the space can compress; the other budget limits always hold.

    The first ``init_points`` trials are the budget with strength 1, then seeded random
    points.  Stage 1 (the next ``level_set_trials`` trials) fits a Gaussian process
    (Matern + white noise, normalised targets) to the proxy accuracy of the finished
    search trials, at the ``t`` their evaluated candidates reach, and picks among
    ``candidates`` seeded random points the one maximising ``level_set_acquisition``
    (weight ``g``) at the threshold ``h = base_score - max_accuracy_drop``
    (``Problem.accuracy_floor``): it maps where the proxy accuracy crosses ``h``, the edge
    of the region the user accepts.  Stage 2 (the rest) skips points within
    ``min_distance`` of a trial already evaluated and answers the objective:

    - ``cost`` (Condensa's own question): the most compressed point (largest ``t``) whose
      lower bound ``mu - beta * sigma`` stays at or above ``h`` (none: the highest lower
      bound); ``best`` is the cheapest trial at or above ``h``.
    - ``accuracy`` and ``pareto``: the point of highest upper bound ``mu + beta * sigma``
      (GP-UCB) among candidates drawn between the budget's edge (``t = 0``) and the level
      of the most accurate trial so far plus ``min_distance``: it explores the allocation
      strengths where accuracy is best, toward the budget's edge, rather than the
      compressed corners where the model is merely unsure; ``best`` is the most accurate
      trial (all are within the budget).

    State lives in the history only: the ``(t, alpha)`` of past trials are recovered by
    replaying the strategy's own decisions on the history's prefixes, and every random
    draw depends on (seed, history length).  In a run whose trials finish out of order
    (several workers) the replayed strengths may differ from those asked.
    """

    name = "condensa"
    default_trials = 20
    keeps_feasible = True
    objectives = ("accuracy", "pareto", "cost")

    def __init__(self, seed: int = 0, scan_levels: int = 2, init_points: int = 3, level_set_trials: int = 6,
                 g: float = 0.5, beta: float = 1.0, max_strength: float = 3.0, candidates: int = 512,
                 min_distance: float = 0.03):
        super().__init__(seed)
        self.scan_levels, self.init_points, self.level_set_trials = scan_levels, init_points, level_set_trials
        self.g, self.beta, self.max_strength = g, beta, max_strength
        self.candidates, self.min_distance = candidates, min_distance
        self._decisions: dict[tuple, tuple[float, float]] = {}  # a cache of _decide; a fresh object recomputes it
        for name in ("scan_levels", "init_points", "candidates"):
            if getattr(self, name) < 1:
                raise AutocompressError(f"strategy 'condensa': {name}={getattr(self, name)} must be 1 or more")
        if level_set_trials < 0:
            raise AutocompressError(f"strategy 'condensa': level_set_trials={level_set_trials} must be 0 or more")
        if not 0.0 <= g <= 1.0:
            raise AutocompressError(f"strategy 'condensa': g={g} must be in [0, 1]")
        if not (beta >= 0 and max_strength >= 0 and min_distance >= 0):
            raise AutocompressError("strategy 'condensa': beta, max_strength and min_distance must be 0 or more")

    # ----- the two-number parametrisation ------------------------------------------------
    def threshold(self, problem: Problem) -> float:
        """The level set's threshold ``h`` in points: the base model's proxy accuracy less
        the drop the user tolerates (``Problem.accuracy_floor``)."""
        return problem.accuracy_floor

    def _cost_range(self, problem: Problem) -> tuple[float, float]:
        metric = problem.primary_metric
        least = problem.space.candidate_cost(problem.space.most_compressed())[metric]
        return float(problem.limits[metric]), float(least)

    def level_of(self, problem: Problem, candidate: dict[str, float]) -> float:
        """``t`` in [0, 1] of an evaluated candidate, from its analytic primary cost."""
        limit, least = self._cost_range(problem)
        if not 0 < least < limit:
            return 0.0
        cost = problem.space.candidate_cost(candidate)[problem.primary_metric]
        return float(min(1.0, max(0.0, math.log(max(cost, least) / limit) / math.log(least / limit))))

    def candidate_at(self, problem: Problem, history: Sequence[TrialRecord], level: float,
                     strength: float) -> dict[str, float]:
        """The candidate of ``(t, alpha)``: the allocation (no knob below its scanned
        densities) repaired to the level's cost, the less sensitive knobs moved first."""
        space, metric = problem.space, problem.primary_metric
        limit, least = self._cost_range(problem)
        target = limit * (least / limit) ** level if 0 < least < limit else limit
        limits = dict(problem.limits)
        limits[metric] = min(limit, max(target, least))
        drops = sensitivities(space, history, problem.base_score)
        profile = allocation(space, drops, strength * self.max_strength, scanned_floors(space, history))
        return project(space, profile, limits, preference=repair_preference(space, history, problem.base_score))

    # ----- ask ------------------------------------------------------------------------------
    def ask(self, problem: Problem, history: Sequence[TrialRecord]) -> Proposal:
        """The next scan proposal, else the next ``(t, alpha)`` as a candidate that meets
        the budget."""
        scan = next_scan(problem.space, history, scan_levels(self.scan_levels))
        if scan is not None:
            return scan
        level, strength = self._replay(problem, history)[-1]
        return Proposal(self.candidate_at(problem, history, level, strength), SEARCH)

    # ----- decisions -----------------------------------------------------------------------
    def _replay(self, problem: Problem, history: Sequence[TrialRecord]) -> list[tuple[float, float]]:
        """The ``(t, alpha / max_strength)`` asked for each search trial, then the next one."""
        asked: list[tuple[float, float]] = []
        seen: list[_Observation] = []
        for position, record in enumerate(history):
            if record.purpose != SEARCH:
                continue
            decision = self._decide(problem, history[:position], len(asked), seen)
            asked.append(decision)
            if record.state == COMPLETE and record.score is not None:
                seen.append(_Observation(self.level_of(problem, record.candidate), decision[1], float(record.score)))
        asked.append(self._decide(problem, history, len(asked), seen))
        return asked

    def _decide(self, problem: Problem, history: Sequence[TrialRecord], issued: int,
                seen: list[_Observation]) -> tuple[float, float]:
        tried = tuple(_key(r.proposal) for r in history if r.purpose == SEARCH)
        drops = _key(sensitivities(problem.space, history, problem.base_score))
        key = (len(history), issued, self.threshold(problem), problem.objective, tuple(seen), tried, drops)
        if key not in self._decisions:
            self._decisions[key] = self._decide_afresh(problem, history, issued, seen, set(tried))
        return self._decisions[key]

    def _decide_afresh(self, problem: Problem, history: Sequence[TrialRecord], issued: int,
                       seen: list[_Observation], tried: set[tuple]) -> tuple[float, float]:
        rng = np.random.default_rng([self.seed % 2**32, len(history)])
        if issued == 0:
            return 0.0, min(1.0, 1.0 / self.max_strength) if self.max_strength > 0 else 0.0
        if issued < self.init_points or not seen:
            return float(rng.uniform()), float(rng.uniform())
        points = rng.uniform(size=(self.candidates, 2))
        staged = issued >= self.init_points + self.level_set_trials
        if staged and problem.objective != "cost":  # toward the budget's edge, where accuracy is best
            points[:, 0] *= min(1.0, max(seen, key=lambda o: o.score).level + self.min_distance)
        mu, sigma = self._posterior(seen, points)
        floor = self.threshold(problem)
        if not staged:
            acquisition = level_set_acquisition(mu, sigma, floor, self.g)
            order = sorted(range(len(points)), key=lambda i: -acquisition[i])
        elif problem.objective == "cost":
            order = self._most_compressed_safe(points, mu - self.beta * sigma, floor, seen)
        else:
            order = self._most_promising(points, mu + self.beta * sigma, seen)
        # many (t, alpha) round to the same channel counts: take the first candidate whose layer settings are new
        settings = {_settings_key(problem.space, p) for p in tried}
        for i in order[:_ATTEMPTS]:
            candidate = self.candidate_at(problem, history, float(points[i, 0]), float(points[i, 1]))
            if _key(candidate) not in tried and _settings_key(problem.space, candidate) not in settings:
                return float(points[i, 0]), float(points[i, 1])
        return float(points[order[0], 0]), float(points[order[0], 1])

    def _posterior(self, seen: list[_Observation], points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.gaussian_process import GaussianProcessRegressor
        from sklearn.gaussian_process.kernels import ConstantKernel, Matern, WhiteKernel
        from threadpoolctl import threadpool_limits

        x = np.array([[o.level, o.strength] for o in seen])
        y = np.array([o.score for o in seen])
        kernel = ConstantKernel(1.0, (1e-2, 1e2)) * Matern([0.3, 0.3], (0.05, 10.0), nu=2.5) + \
            WhiteKernel(1e-3, (1e-6, 1e-1))
        gp = GaussianProcessRegressor(kernel, normalize_y=True, n_restarts_optimizer=1,
                                      random_state=self.seed % 2**32)
        # a few points: threaded BLAS only adds contention
        with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
            warnings.simplefilter("ignore", ConvergenceWarning)
            gp.fit(x, y)
            mu, sigma = gp.predict(points, return_std=True)
        return mu, sigma

    def _fresh(self, points: np.ndarray, seen: list[_Observation]) -> np.ndarray:
        """Indices of ``points`` at least ``min_distance`` from every evaluated one (all
        when none is)."""
        done = np.array([[o.level, o.strength] for o in seen])
        distance = np.min(np.linalg.norm(points[:, None, :] - done[None, :, :], axis=2), axis=1)
        fresh = np.flatnonzero(distance >= self.min_distance)
        return fresh if len(fresh) else np.arange(len(points))

    def _most_promising(self, points: np.ndarray, upper: np.ndarray, seen: list[_Observation]) -> list[int]:
        """Indices of ``points`` away from evaluated ones by decreasing upper bound (ties:
        the smaller ``t``, nearer the budget's edge)."""
        return [int(i) for i in sorted(self._fresh(points, seen), key=lambda i: (-upper[i], points[i, 0]))]

    def _most_compressed_safe(self, points: np.ndarray, lower: np.ndarray, floor: float,
                              seen: list[_Observation]) -> list[int]:
        """Indices of ``points`` away from evaluated ones, best first: those whose lower
        bound is at least ``floor`` by decreasing ``t`` (ties: the higher bound), then the
        rest by decreasing lower bound."""
        pool = self._fresh(points, seen)
        safe = sorted((i for i in pool if lower[i] >= floor), key=lambda i: (-points[i, 0], -lower[i]))
        unsafe = sorted((i for i in pool if lower[i] < floor), key=lambda i: -lower[i])
        return [int(i) for i in safe + unsafe]


def _key(candidate: dict[str, float]) -> tuple:
    return tuple(sorted((name, round(value, 9)) for name, value in candidate.items()))


def _settings_key(space: Space, candidate: dict[str, float] | tuple) -> str:
    """The layer settings a candidate (or its ``_key``) resolves to, as one string."""
    return json.dumps(space.resolve(dict(candidate)), sort_keys=True)
