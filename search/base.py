"""The Strategy base class: propose candidates, learn from the trial history."""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

from ..space import Candidate, Space
from ..trial import TrialRecord


class Strategy(ABC):
    """Proposes the next candidate from the space and the trials so far.

    Contract: ``ask(space, history)`` returns a proposal (``{knob name: density}`` with
    every knob of ``space`` inside its ``[low, high]``), or None when the strategy has
    nothing new to try.  A strategy keeps no hidden state: everything it needs is in
    ``history`` (complete, failed and running trials, oldest first) and in its
    constructor arguments, so a resumed or distributed study asks exactly as an
    uninterrupted one would.  Proposals need not meet the budget: the engine projects
    each one onto the budget before it is evaluated.  Constructor arguments are keyword
    arguments stored as given.
    """

    name: str = ""

    def __init__(self, seed: int = 0):
        self.seed = seed

    @abstractmethod
    def ask(self, space: Space, history: Sequence[TrialRecord]) -> Candidate | None:
        """The next proposal, or None if the strategy is done."""
