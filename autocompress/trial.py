"""Trial records: the history a strategy learns from (plain data, no torch)."""
from __future__ import annotations

from dataclasses import dataclass, field

COMPLETE, FAILED, RUNNING = "complete", "failed", "running"


@dataclass(frozen=True)
class TrialRecord:
    """One evaluated (or failed) candidate.

    ``proposal`` is what the strategy asked for; ``candidate`` is the proposal after the
    budget projection, which is what was compressed and scored.  ``score`` is the proxy
    accuracy in percent (None unless complete); ``metrics`` holds the measured costs.
    """

    number: int
    state: str
    proposal: dict[str, float]
    candidate: dict[str, float]
    score: float | None = None
    feasible: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    error: str = ""
