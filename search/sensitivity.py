"""Sensitivity scans: each knob alone at a few densities, the others neutral.

A scan is a list of ``"scan"`` proposals (evaluated with BatchNorm recalibration only,
never projected, never the recipe).  The scan lives in the trial history like any other
trial, so a resumed or distributed study does not repeat it: the next scan proposal is
simply the first one the history does not hold yet.

Allocations stay within what was measured: a scan says how a knob behaves at the
densities it tried and nothing about lower ones, so ``allocation`` gives no knob less
than the lowest density it was scanned at (``scanned_floors``), however insensitive it
looked there.  Where the budget needs more, the budget repair (``core.projection``) lowers
knobs step by step, priced by ``repair_preference``: each knob's sensitivity plus the mean
one, so a knob that looked free is still not free below its scans.  (The alternatives were
scanning every knob down to its floor, a scan trial more per knob, or greedy's
equal-threshold rule, which needs the scans dense enough to pick from; flooring the
allocation keeps the scans as they are and the sensitivity-weighted profile.)
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence

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


def scanned_floors(space: Space, history: Sequence[TrialRecord]) -> dict[str, float]:
    """Per knob, the lowest density a finished scan measured it at; a knob never scanned
    gets the lowest scanned density of any knob (its knob's ``low`` when nothing was
    scanned)."""
    table = scan_table(space, history)
    lowest = min((d for points in table.values() for d in points), default=None)
    floors = {}
    for knob in space.knobs:
        points = table[knob.name]
        floor = min(points) if points else lowest if lowest is not None else knob.low
        floors[knob.name] = min(knob.high, max(knob.low, floor))
    return floors


def repair_preference(space: Space, history: Sequence[TrialRecord], base_score: float) -> dict[str, float]:
    """The budget repair's preference from the scans (``Proposal.preference``): per knob,
    its sensitivity (``sensitivities``) plus the mean sensitivity, so the less sensitive
    knobs give first, yet none is free (below its scans nobody measured it).  Empty when
    no scan finished."""
    if not any(r.purpose == SCAN and r.state == COMPLETE for r in history):
        return {}
    drops = sensitivities(space, history, base_score)
    mean = float(np.mean(list(drops.values()))) if drops else 0.0
    if mean <= 0:
        return {name: 1.0 for name in drops}
    return {name: drop + mean for name, drop in drops.items()}


def allocation(space: Space, drops: dict[str, float], strength: float,
               floors: Mapping[str, float] | None = None) -> dict[str, float]:
    """An allocation profile from sensitivities: ``density = (drop / max drop) ** strength``,
    so the most sensitive knob keeps everything and less sensitive ones give more up, but
    none below its ``floors`` entry (``scanned_floors``: the lowest density its scans
    measured; default: the knob's ``low``).  ``strength`` 0 is uniform; the budget repair
    fits the profile to the budget afterwards."""
    top = max(drops.values(), default=0.0)
    profile = {}
    for knob in space.knobs:
        relative = max(drops.get(knob.name, top), 1e-3 * top) / top if top > 0 else 1.0
        floor = floors.get(knob.name, knob.low) if floors is not None else knob.low
        profile[knob.name] = min(knob.high, max(knob.low, floor, relative ** strength))
    return profile
