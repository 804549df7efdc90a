"""Search strategies: propose candidates, learn from results."""
from __future__ import annotations

from ..errors import AutocompressError
from ._random import RandomStrategy
from ._tpe import BayesianStrategy
from ._uniform import UniformStrategy
from .base import Strategy
from .projection import check_reachable, project

STRATEGIES: dict[str, type[Strategy]] = {
    BayesianStrategy.name: BayesianStrategy,
    UniformStrategy.name: UniformStrategy,
    RandomStrategy.name: RandomStrategy,
}


def get_strategy(name: str, **kwargs) -> Strategy:
    """The strategy registered as ``name``, built with ``kwargs``."""
    if name not in STRATEGIES:
        raise AutocompressError(f"unknown strategy {name!r}; use one of {', '.join(STRATEGIES)}")
    return STRATEGIES[name](**kwargs)


__all__ = ["Strategy", "BayesianStrategy", "UniformStrategy", "RandomStrategy", "STRATEGIES",
           "get_strategy", "project", "check_reachable"]
