"""Genetic algorithm over fixed-size channel selections (one bit per channel).

Operators of the GA pruning paper: a repair step that holds the number of kept channels,
tournament selection, uniform crossover and bit-flip mutation, with elitism.  Plain
numpy; all randomness comes from the generator passed in.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class GASettings:
    """``population`` individuals over ``generations`` generations; ``tournament``
    individuals per selection; ``crossover_rate`` (per pair) and ``mutation_rate`` (per
    bit) are probabilities; the ``elite`` best individuals survive unchanged."""

    population: int = 20
    generations: int = 15
    tournament: int = 3
    crossover_rate: float = 0.9
    mutation_rate: float = 0.02
    elite: int = 2

    def check(self) -> None:
        """Raise ValueError naming the first setting out of range."""
        if self.population < 2:
            raise ValueError(f"population={self.population} must be 2 or more")
        if self.generations < 0:
            raise ValueError(f"generations={self.generations} must be 0 or more")
        if not 1 <= self.tournament <= self.population:
            raise ValueError(f"tournament={self.tournament} must be between 1 and the population ({self.population})")
        for name in ("crossover_rate", "mutation_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name}={getattr(self, name)} must be a probability in [0, 1]")
        if not 0 <= self.elite < self.population:
            raise ValueError(f"elite={self.elite} must be 0 or more and below the population ({self.population})")


def repair(individual: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """A copy of the boolean ``individual`` with exactly ``count`` bits set: surplus set
    bits are cleared, or missing ones set, at random."""
    fixed = individual.astype(bool).copy()
    ones, zeros = np.flatnonzero(fixed), np.flatnonzero(~fixed)
    if len(ones) > count:
        fixed[rng.choice(ones, len(ones) - count, replace=False)] = False
    elif len(ones) < count:
        fixed[rng.choice(zeros, count - len(ones), replace=False)] = True
    return fixed


def random_individual(size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    individual = np.zeros(size, dtype=bool)
    individual[rng.choice(size, count, replace=False)] = True
    return individual


def tournament(errors: np.ndarray, size: int, rng: np.random.Generator) -> int:
    """Index of the lowest error among ``size`` individuals drawn at random."""
    drawn = rng.choice(len(errors), size, replace=False)
    return int(drawn[np.argmin(errors[drawn])])


def crossover(a: np.ndarray, b: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Uniform crossover: each bit from either parent with probability 1/2 (channel
    indices have no order that a one-point crossover could exploit)."""
    swap = rng.random(len(a)) < 0.5
    return np.where(swap, b, a), np.where(swap, a, b)


def mutate(individual: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Flip each bit with probability ``rate``."""
    return individual ^ (rng.random(len(individual)) < rate)


def evolve(size: int, count: int, error: Callable[[np.ndarray], float], rng: np.random.Generator,
           settings: GASettings = GASettings(), seeds: Sequence[np.ndarray] = ()) -> list[tuple[float, np.ndarray]]:
    """Search the ``count``-of-``size`` channel selection with the lowest ``error``.

    The first population holds the ``seeds`` (repaired) and random individuals.  Returns
    every distinct individual evaluated as ``(error, individual)``, lowest error first
    (ties: the one evaluated first).  ``error`` is called once per distinct individual.
    """
    settings.check()
    if not 1 <= count <= size:
        raise ValueError(f"cannot keep {count} of {size} channels")
    seen: dict[bytes, tuple[float, int, np.ndarray]] = {}

    def score(individual: np.ndarray) -> float:
        key = individual.tobytes()
        if key not in seen:
            seen[key] = (float(error(individual)), len(seen), individual)
        return seen[key][0]

    population = [repair(s, count, rng) for s in seeds][: settings.population]
    population += [random_individual(size, count, rng) for _ in range(settings.population - len(population))]
    errors = np.array([score(p) for p in population])
    for _ in range(settings.generations):
        ranked = np.argsort(errors, kind="stable")
        children = [population[i] for i in ranked[: settings.elite]]
        while len(children) < settings.population:
            a = population[tournament(errors, settings.tournament, rng)]
            b = population[tournament(errors, settings.tournament, rng)]
            if rng.random() < settings.crossover_rate:
                a, b = crossover(a, b, rng)
            for child in (a, b):
                if len(children) < settings.population:
                    children.append(repair(mutate(child, settings.mutation_rate, rng), count, rng))
        population = children
        errors = np.array([score(p) for p in population])
    return [(value, individual) for value, _, individual in sorted(seen.values(), key=lambda e: (e[0], e[1]))]
