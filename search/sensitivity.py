"""Sensitivity scans: each knob alone at a few densities, the others neutral.

A scan is a list of ``"scan"`` proposals (evaluated with BatchNorm recalibration only,
never projected, never the recipe).  The scan lives in the trial history like any other
trial, so a resumed or distributed study does not repeat it: the next scan proposal is
simply the first one the history does not hold yet.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..core.space import Space
from ..core.trial import COMPLETE, SCAN, TrialRecord
from .base import Proposal


def scan_levels(count: int, low: float = 0.0) -> tuple[float, ...]:
    """``count`` densities spread evenly in ``(low, 1)``, most compressed first:
    ``scan_levels(3) == (0.25, 0.5, 0.75)``."""
    return tuple(round(low + (1.0 - low) * (i + 1) / (count + 1), 6) for i in range(count))


def scan_proposals(space: Space, levels: Sequence[float]) -> list[Proposal]:
    """Every knob alone at each level (clipped to its range; knobs whose range does not
    reach a level are probed at their lowest density once)."""
    proposals = []
    for knob in space.knobs:
        seen = set()
        for level in levels:
            value = min(knob.high, max(knob.low, float(level)))
            if value >= knob.high or value in seen:
                continue
            seen.add(value)
            values = {k.name: k.high for k in space.knobs}
            values[knob.name] = value
            proposals.append(Proposal(values, SCAN))
    return proposals


def next_scan(space: Space, history: Sequence[TrialRecord], levels: Sequence[float]) -> Proposal | None:
    """The first scan proposal the history does not hold yet (failed ones count as held)."""
    issued = sum(r.purpose == SCAN for r in history)
    proposals = scan_proposals(space, levels)
    return proposals[issued] if issued < len(proposals) else None


def scan_table(space: Space, history: Sequence[TrialRecord]) -> dict[str, dict[float, float]]:
    """``{knob: {density: proxy accuracy}}`` from the finished scan trials."""
    table: dict[str, dict[float, float]] = {k.name: {} for k in space.knobs}
    for record in history:
        if record.purpose != SCAN or record.state != COMPLETE or record.score is None:
            continue
        changed = [k.name for k in space.knobs if record.proposal.get(k.name, k.high) < k.high]
        if len(changed) == 1:
            table[changed[0]][float(record.proposal[changed[0]])] = float(record.score)
    return table


def sensitivities(space: Space, history: Sequence[TrialRecord], base_score: float) -> dict[str, float]:
    """Per knob, the mean proxy-accuracy drop (points, >= 0) over its scanned densities,
    weighted toward the more compressed ones.  Knobs with no finished scan get the mean
    of the others (or 1.0 when nothing was scanned)."""
    table = scan_table(space, history)
    drops: dict[str, float] = {}
    for name, points in table.items():
        if points:
            weights = np.array([1.0 - d for d in points])
            values = np.array([max(0.0, base_score - s) for s in points.values()])
            drops[name] = float((weights * values).sum() / max(weights.sum(), 1e-12))
    fill = float(np.mean(list(drops.values()))) if drops else 1.0
    return {k.name: drops.get(k.name, fill) for k in space.knobs}


def allocation(space: Space, drops: dict[str, float], strength: float) -> dict[str, float]:
    """An allocation profile from sensitivities: ``density = (drop / max drop) ** strength``,
    so the most sensitive knob keeps everything and less sensitive ones give more up.
    ``strength`` 0 is uniform; the budget projection scales the profile afterwards."""
    top = max(drops.values(), default=0.0)
    profile = {}
    for knob in space.knobs:
        relative = max(drops.get(knob.name, top), 1e-3 * top) / top if top > 0 else 1.0
        profile[knob.name] = min(knob.high, max(knob.low, relative ** strength))
    return profile
