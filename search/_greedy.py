from __future__ import annotations

from collections.abc import Sequence

from ..core.projection import fits
from ..core.space import Candidate, Space
from ..core.trial import TrialRecord, search_trials
from .base import Problem, Proposal, Strategy
from .sensitivity import next_scan, scan_levels, scan_table

Curve = list[tuple[float, float]]  # (density, proxy accuracy), densest first, accuracy non-increasing


class GreedyStrategy(Strategy):
    """AIMET-style greedy ratio selection: a sensitivity scan of every knob at ``ratios``
    densities, then one accuracy threshold for all knobs.

    For a threshold, each knob takes the lowest scanned density whose scan accuracy
    (made non-increasing as density falls) is still at or above it; the threshold is
    binary-searched so the combined candidate is the least compressed one that meets the
    budget's limits (``space.candidate_cost``).  Later trials try variations: the same
    search with densities interpolated between the scanned ones, then the neighbouring
    thresholds (the budget projection fits those over the budget).  Returns None when no
    variation is new.  Deterministic: ``seed`` is accepted and unused.
    """

    name = "greedy"

    def __init__(self, seed: int = 0, ratios: int = 10, variations: int = 6):
        super().__init__(seed)
        if ratios < 1 or variations < 1:
            raise ValueError(f"ratios ({ratios}) and variations ({variations}) must be 1 or more")
        self.ratios = ratios
        self.variations = variations

    def ask(self, problem: Problem, history: Sequence[TrialRecord]) -> Proposal | None:
        space = problem.space
        levels = scan_levels(self.ratios, min((k.low for k in space.knobs), default=0.0))
        scan = next_scan(space, history, levels)
        if scan is not None:
            return scan
        curves = accuracy_curves(space, history, problem.base_score)
        tried = [r.proposal for r in search_trials(history)]
        for candidate in variations(space, curves, problem.limits)[:self.variations]:
            if not any(_same(candidate, p) for p in tried):
                return Proposal(candidate)
        return None


def accuracy_curves(space: Space, history: Sequence[TrialRecord], base_score: float) -> dict[str, Curve]:
    """Per knob, its scan points with the unchanged knob at ``base_score``, densest first,
    each accuracy lowered to the lowest one at any higher density (so a threshold picks
    an interval of densities)."""
    curves, table = {}, scan_table(space, history)
    for knob in space.knobs:
        points = sorted(table[knob.name].items(), reverse=True)
        curve, floor = [(knob.high, base_score)], base_score
        for density, score in points:
            floor = min(floor, score)
            curve.append((density, floor))
        curves[knob.name] = curve
    return curves


def pick(curves: dict[str, Curve], threshold: float, interpolate: bool = False) -> Candidate:
    """Each knob's lowest density whose accuracy is at or above ``threshold`` (the first,
    unchanged density when none is); ``interpolate`` reads the curve as piecewise linear."""
    candidate = {}
    for name, curve in curves.items():
        chosen = curve[0][0]
        for (dense, above), (density, score) in zip(curve, curve[1:]):
            if score >= threshold:
                chosen = density
                continue
            if interpolate and above > score:
                chosen = density + (dense - density) * (threshold - score) / (above - score)
            break
        candidate[name] = chosen
    return candidate


def greedy_threshold(space: Space, curves: dict[str, Curve], limits, interpolate: bool = False) -> float | None:
    """The highest threshold whose pick meets ``limits``, or None when even the lowest
    does not.  Scanned densities: a search over the curves' accuracies (exact);
    interpolated: bisection to 1e-6 points."""
    levels = sorted({score for curve in curves.values() for _, score in curve})
    if not levels or not fits(space, pick(curves, levels[0], interpolate), limits):
        return None
    if not interpolate:
        lo, hi = 0, len(levels) - 1  # levels[lo] fits
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if fits(space, pick(curves, levels[mid]), limits):
                lo = mid
            else:
                hi = mid - 1
        return levels[lo]
    lo_t, hi_t = levels[0], levels[-1]
    if fits(space, pick(curves, hi_t, True), limits):
        return hi_t
    while hi_t - lo_t > 1e-6:
        mid_t = (lo_t + hi_t) / 2
        if fits(space, pick(curves, mid_t, True), limits):
            lo_t = mid_t
        else:
            hi_t = mid_t
    return lo_t


def variations(space: Space, curves: dict[str, Curve], limits) -> list[Candidate]:
    """Candidates in the order the greedy strategy proposes them: the greedy pick on the
    scanned densities, the same with interpolated densities, then the scanned picks at
    the neighbouring thresholds, nearest first (higher before lower)."""
    levels = sorted({score for curve in curves.values() for _, score in curve})
    if not levels:
        return []
    threshold = greedy_threshold(space, curves, limits)
    if threshold is None:  # even the most compressed scanned pick misses: the projection scales it down
        return [pick(curves, levels[0])]
    found = [pick(curves, threshold)]
    smooth = greedy_threshold(space, curves, limits, interpolate=True)
    if smooth is not None:
        found.append(pick(curves, smooth, interpolate=True))
    at = levels.index(threshold)
    for step in range(1, len(levels)):
        for index in (at + step, at - step):
            if 0 <= index < len(levels):
                found.append(pick(curves, levels[index]))
    unique: list[Candidate] = []
    for candidate in found:
        if not any(_same(candidate, u) for u in unique):
            unique.append(candidate)
    return unique


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    return a.keys() == b.keys() and all(abs(a[k] - b[k]) < 1e-9 for k in a)
