"""Trial records: the history a strategy learns from (plain data, no torch)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

COMPLETE, FAILED, RUNNING, PRUNED = "complete", "failed", "running", "pruned"
SEARCH, SCAN = "search", "scan"
INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class TrialRecord:
    """One evaluated (or failed, or pruned) candidate.

    ``proposal`` is what the strategy asked for; ``candidate`` is the proposal after the
    budget projection, which is what was compressed and scored.  ``score`` is the proxy
    accuracy in percent (None unless complete); ``metrics`` holds the measured costs.
    ``intermediate`` holds the proxy scores a multi-fidelity trial reported on part of the
    validation split during its fine-tune, by fine-tune step (empty without a pruner).  A
    ``pruned`` trial was stopped at one of them by the pruner: it has no score, costs or
    feasibility and never becomes the recipe, but it counts toward ``--trials`` and a
    strategy may learn from it (``bo`` hands it to TPE as a pruned trial, ranked below
    every complete one).
    ``purpose`` is ``"search"`` or ``"scan"`` (a sensitivity probe, never the recipe);
    ``channel_order`` is the strategy's ranking of channels per group, if it gave one;
    ``retry_of`` the number of the trial this one evaluates again (that one was
    interrupted: its process stopped or died while it ran).
    """

    number: int
    state: str
    proposal: dict[str, float]
    candidate: dict[str, float]
    score: float | None = None
    feasible: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""
    purpose: str = SEARCH
    channel_order: dict[str, list[int]] = field(default_factory=dict)
    retry_of: int | None = None
    intermediate: dict[int, float] = field(default_factory=dict)

    @property
    def interrupted(self) -> bool:
        """Failed because its process stopped or died, not because of the candidate."""
        return self.state == FAILED and self.error.startswith(INTERRUPTED)



def finished(history: list[TrialRecord]) -> int:
    """Search trials that finished, complete or pruned (scans and failures do not count
    toward --trials)."""
    return sum(r.state in (COMPLETE, PRUNED) for r in search_trials(history))


def search_trials(history: Sequence[TrialRecord]) -> list[TrialRecord]:
    return [r for r in history if r.purpose == SEARCH]


def feasible_trials(history: Sequence[TrialRecord]) -> list[TrialRecord]:
    return [r for r in search_trials(history) if r.state == COMPLETE and r.feasible and r.score is not None]


def best_feasible(history: Sequence[TrialRecord]) -> TrialRecord | None:
    """The most accurate feasible search trial (ties: the earliest); None when none is."""
    feasible = feasible_trials(history)
    return max(feasible, key=lambda r: (r.score, -r.number)) if feasible else None


def cheapest_feasible(history: Sequence[TrialRecord], floor: float,
                      cost: Callable[[TrialRecord], float]) -> TrialRecord | None:
    """The feasible search trial of least ``cost(record)`` whose score is at least ``floor``
    (ties: the higher score, then the earliest); None when none reaches the floor."""
    above = [r for r in feasible_trials(history) if r.score >= floor]
    return min(above, key=lambda r: (cost(r), -r.score, r.number)) if above else None
