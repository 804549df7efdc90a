"""Trial records: the history a strategy learns from (plain data, no torch)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

COMPLETE, FAILED, RUNNING = "complete", "failed", "running"
SEARCH, SCAN = "search", "scan"
INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class TrialRecord:
    """One evaluated (or failed) candidate.

    ``proposal`` is what the strategy asked for; ``candidate`` is the proposal after the
    budget projection, which is what was compressed and scored.  ``score`` is the proxy
    accuracy in percent (None unless complete); ``metrics`` holds the measured costs.
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

    @property
    def interrupted(self) -> bool:
        """Failed because its process stopped or died, not because of the candidate."""
        return self.state == FAILED and self.error.startswith(INTERRUPTED)



def finished(history: list[TrialRecord]) -> int:
    """Search trials that finished (scans and failures do not count toward --trials)."""
    return sum(r.state == COMPLETE for r in search_trials(history))


def search_trials(history: Sequence[TrialRecord]) -> list[TrialRecord]:
    return [r for r in history if r.purpose == SEARCH]


def feasible_trials(history: Sequence[TrialRecord]) -> list[TrialRecord]:
    return [r for r in search_trials(history) if r.state == COMPLETE and r.feasible and r.score is not None]


def best_feasible(history: Sequence[TrialRecord]) -> TrialRecord | None:
    feasible = feasible_trials(history)
    return max(feasible, key=lambda r: (r.score, -r.number)) if feasible else None
