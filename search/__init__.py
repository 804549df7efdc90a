"""Search strategies: propose candidates, learn from results."""
from __future__ import annotations

from ..core.errors import AutocompressError
from ._condensa import CondensaStrategy
from ._genetic import GeneticStrategy
from ._greedy import GreedyStrategy
from ._haloc import HalocStrategy
from ._nsga2 import NSGA2Strategy
from ._random import RandomStrategy
from ._tpe import BayesianStrategy
from ._uniform import UniformStrategy
from .base import Problem, Proposal, Strategy, as_proposal

STRATEGIES: dict[str, type[Strategy]] = {
    BayesianStrategy.name: BayesianStrategy,
    HalocStrategy.name: HalocStrategy,
    UniformStrategy.name: UniformStrategy,
    RandomStrategy.name: RandomStrategy,
    NSGA2Strategy.name: NSGA2Strategy,
    GreedyStrategy.name: GreedyStrategy,
    GeneticStrategy.name: GeneticStrategy,
    CondensaStrategy.name: CondensaStrategy,
}


def get_strategy(name: str, **kwargs) -> Strategy:
    """The strategy registered as ``name``, built with ``kwargs``."""
    if name not in STRATEGIES:
        raise AutocompressError(f"unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}")
    try:
        return STRATEGIES[name](**kwargs)
    except TypeError as exc:  # an option the strategy does not take
        import inspect

        known = [p for p in inspect.signature(STRATEGIES[name]).parameters if p != "seed"]
        raise AutocompressError(
            f"strategy {name!r} does not take these options ({exc}); it takes: {', '.join(known) or 'none'}"
        ) from None


__all__ = ["Strategy", "Problem", "Proposal", "as_proposal", "STRATEGIES", "get_strategy", "BayesianStrategy",
           "UniformStrategy", "RandomStrategy", "HalocStrategy", "GeneticStrategy", "CondensaStrategy", "NSGA2Strategy",
           "GreedyStrategy"]
