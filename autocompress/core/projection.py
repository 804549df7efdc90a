"""Budget repair: the candidate evaluated for a strategy's proposal, meeting the budget
while changing as little of what the strategy chose as the budget allows.

- A proposal that meets the limits is kept as proposed where the strategy asks inside the
  budget on purpose (``keep_fitting``: ``Strategy.keeps_feasible``, or any objective but
  accuracy); under the accuracy objective it is *grown* (below).
- An over-budget proposal is *repaired* one step at a time: each step lowers one knob by
  one step of its kind (``Rungs``: the next kept channel count, in the group's
  ``channel_step``s, the next lower rank step, the next lower bit-width, else the next
  lower density on a grid of 1/64ths, down to the knob's ``low``), choosing the step that
  saves the most of the violated limits (each limit's saving as a fraction of its excess)
  per unit of *preference* given up: ``preference[knob] * ln(density before / after)``.
  A higher preference means the strategy wants to keep that knob; equal by default (the
  engine passes the proposal's own, else the sensitivities of the study's scans).  There
  is no global factor: a knob the preference protects keeps its value while others can give.
- Growing is the same in reverse: while a step fits the headroom, the step with the most
  preference gained (``preference * ln(after / before)``) per fraction of the tightest
  headroom it uses is taken, until no knob's next step fits.  Growing never lowers a knob
  (a rank in the dead band aside, below); the repair of a proposal that is kept (not
  grown) never raises one above its proposed value.
- No layer is factorised at a rank that saves less than ``MIN_RANK_SAVING`` of its FLOPs.
  A rank knob's value is the fraction of the break-even rank to keep (``core.space``), so
  a value ``v`` costs about ``v`` of the dense layer for svd (Linear and 1x1 layers: the
  factors cost ``r * (in + out)`` against ``in * out``, linear in the rank) and less for
  tucker2 (the core's ``r^2 * kh * kw`` makes the cost convex in the rank).  On the zoo's
  models, ``v = 0.75`` costs a median 0.73 of the layer's FLOPs for svd and 0.36 for
  tucker2, but up to 0.94 for svd on tiny layers (a 16 -> 4 squeeze-excite Linear, whose
  break-even rank 4 rounds up).  So the rule is written on both: values in
  ``(1 - MIN_RANK_SAVING, 1)`` are no rungs, nor are ranks whose factors cost more than
  ``1 - MIN_RANK_SAVING`` of the dense layer at its full shape (the cost model's own
  ``lowrank_flops``); a proposed value there is snapped to 1 (not factorised) or down to the
  highest rung, whichever is nearer, and a rank that, at the layer's shape after channel
  pruning, still saves too little (the break-even rank rounds differently there) is
  lowered a rung at the end.  The knob's lowest value is always a rung (the most
  compressed candidate stays reachable).

Steps start coarse and shrink (``_FACTORS``: a density times 0.3, then 0.7, then one
rung), each phase lowering until the limits hold and growing back while steps fit (on the
zoo's models this reaches a higher total preference than single rungs throughout, with a
sixth of the cost evaluations).
Every decision uses exact marginal costs (one ``space.candidate_cost`` per knob and step,
computed lazily: a knob's marginal is recomputed only when it or a knob touching the same
layers moved), and each round takes several steps at once on knobs that touch disjoint
layers (their savings add up) while they score close to the best step put off to the next
round.  A repair costs a few ``space.candidate_cost`` per knob: on the zoo's largest spaces
(ResNet-20, all four kinds, 78 knobs) 0.05-0.2 s for a proposal at the neutral point or
drawn at random, up to 0.5 s for one with every knob near its lowest, on one busy core;
channels alone (12 knobs) about 25 ms.  Deterministic: ties go to the earlier knob.  Raises BudgetError when nothing
meets the limits (``check_reachable`` says by how much).
"""
from __future__ import annotations

import heapq
import math
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

from .errors import BudgetError
from .patterns import bits_for, break_even_rank, lowrank_flops, rank_for
from .space import Candidate, Knob, Space, kept_channels
from .trial import SCAN

MIN_RANK_SAVING = 0.25
"""The least fraction of a layer's FLOPs a factorisation must save to be used."""

_GRID = 64  # rungs are the distinct settings reached by densities k / _GRID (and the knob's low and high)
_FACTORS = (0.3, 0.7, 1.0)  # a step moves a density by this factor at least (1.0: one rung), coarse to fine
_LARGE = float("inf")
_BATCH = 0.5  # a round goes on with steps scoring at least this much of the best one it put off


def fits(space: Space, candidate: Mapping[str, float], limits: Mapping[str, float]) -> bool:
    return _within(space.candidate_cost(candidate), limits)


def _within(cost: Mapping[str, float], limits: Mapping[str, float]) -> bool:
    return all(cost[metric] <= limit for metric, limit in limits.items())


def check_reachable(space: Space, limits: Mapping[str, float], base: Mapping[str, float]) -> None:
    """Raise BudgetError if even the most compressed candidate misses a limit."""
    cost = space.candidate_cost(space.most_compressed())
    for metric, limit in limits.items():
        if cost[metric] > limit:
            raise BudgetError(
                f"the {metric} budget cannot be met: the most this model can be compressed is "
                f"{metric}={cost[metric] / base[metric]:.3f} of the base ({cost[metric]:.4g} > {limit:.4g})"
            )


# ----- the steps of one knob -----------------------------------------------------------------
class Rungs:
    """The settings one knob can step between, lowest first: ``keys`` (what a density
    resolves to: a kept channel count, a rank (the break-even rank standing for "not
    factorised"), a bit-width, else the density itself) and ``values`` (a density giving
    each: the knob's ``low`` for the lowest, ``high`` for the highest, else the smallest
    density on the grid of 1/64ths that gives it).  A rank knob has no rung in its dead
    band (``dead``)."""

    def __init__(self, space: Space, knob: Knob):
        self.space, self.knob = space, knob
        self._key = self._key_function(space, knob)
        grid = [knob.low] + [i / _GRID for i in range(1, _GRID) if knob.low < i / _GRID < knob.high]
        by_key: dict = {}
        for value in grid:
            if not self.dead(value):
                by_key.setdefault(self.key(value), value)
        by_key[self.key(knob.high)] = knob.high
        self.keys = sorted(by_key)
        self.values = [by_key[k] for k in self.keys]

    @staticmethod
    def _key_function(space: Space, knob: Knob):
        if knob.kind == "channels":
            group = next(g for g in space.groups if g.name == knob.target)
            multiple = 1 if group.head_dim else space.channel_multiple
            return lambda v: kept_channels(group.size, v, multiple, group.blocks)
        if knob.kind == "bits":
            return bits_for
        if knob.kind == "rank":
            layer = space.layer(knob.target)
            even = break_even_rank(knob.option, layer.out_channels, layer.in_channels, *layer.kernel, layer.rows)
            return lambda v: rank_for(v, even) or even
        return lambda v: round(v, 6)

    @cached_property
    def _saving_rank(self) -> int:
        """A rank knob's highest rank whose factors cost at most ``1 - MIN_RANK_SAVING`` of
        the dense layer's FLOPs at its full shape (0 if none)."""
        layer, knob = self.space.layer(self.knob.target), self.knob
        shape = (knob.option, layer.out_channels, layer.in_channels, *layer.kernel)
        dense = 2 * layer.rows[2] * layer.out_channels * layer.in_channels * layer.kernel[0] * layer.kernel[1]
        even = break_even_rank(*shape, layer.rows)
        return max((r for r in range(1, even) if lowrank_flops(*shape, r, layer.rows) <= (1 - MIN_RANK_SAVING) * dense),
                   default=0)

    def key(self, value: float):
        return self._key(value)

    def dead(self, value: float) -> bool:
        """Whether ``value`` is a rank that saves less than ``MIN_RANK_SAVING``: above
        ``1 - MIN_RANK_SAVING`` (below ``high``), or a rank above ``_saving_rank`` (the
        knob's lowest value never is dead: it keeps the most compressed candidate reachable)."""
        if self.knob.kind != "rank" or not self.knob.low < value < self.knob.high:
            return False
        return value > 1.0 - MIN_RANK_SAVING or self.key(value) > self._saving_rank

    def snap(self, value: float) -> float:
        """``value``, or, in the dead band, the nearer of ``high`` and the highest rung below."""
        if not self.dead(value):
            return value
        below = max(v for v in self.values if v < value)
        return self.knob.high if self.knob.high - value <= value - below else below

    def below(self, value: float, factor: float) -> float | None:
        """The rung one step below ``value``: the highest at or under ``value * factor``
        (``factor`` < 1), at least one rung lower; None at the lowest rung."""
        key = self.key(value)
        lower = [v for k, v in zip(self.keys, self.values) if k < key]
        if not lower:
            return None
        if factor >= 1.0:
            return lower[-1]
        return max((v for v in lower if v <= value * factor), default=lower[0])

    def above(self, value: float, factor: float, cap: float) -> float | None:
        """The rung one step above ``value`` and not above ``cap``: the lowest at or over
        ``value / factor``, at least one rung higher (``cap`` itself where it reaches cap's
        setting); None when no rung is."""
        key, top = self.key(value), self.key(cap)
        higher = [(k, v) for k, v in zip(self.keys, self.values) if key < k <= top]
        if not higher:
            return None
        if factor >= 1.0:
            k, v = higher[0]
        else:
            k, v = next(((k, v) for k, v in higher if v >= value / factor), higher[-1])
        return cap if k == top else v


@dataclass
class _Plan:
    """What the repair needs of a space, computed once per space: every knob's rungs, the
    layers it changes, and the knobs touching any of those layers (its own included)."""

    rungs: list[Rungs]
    neighbours: list[list[int]]
    layers: list[frozenset[str]]


_PLANS: dict[int, tuple[weakref.ref, _Plan]] = {}


def _plan(space: Space) -> _Plan:
    held = _PLANS.get(id(space))
    if held is not None and held[0]() is space:
        return held[1]
    touched = []
    for knob in space.knobs:
        if knob.kind == "channels":
            touched.append(frozenset(
                layer.name for layer in space.layers
                if layer.out_group == knob.target or layer.name == knob.target
                or any(g == knob.target for g, _ in layer.in_groups)))
        else:
            touched.append(frozenset((knob.target,)))
    by_layer: dict[str, list[int]] = {}
    for i, layers in enumerate(touched):
        for layer in layers:
            by_layer.setdefault(layer, []).append(i)
    neighbours = [sorted({j for layer in layers for j in by_layer[layer]}) for layers in touched]
    plan = _Plan([Rungs(space, k) for k in space.knobs], neighbours, touched)
    key = id(space)
    _PLANS[key] = (weakref.ref(space, lambda _, key=key, plans=_PLANS: plans.pop(key, None)), plan)
    return plan


# ----- the repair -------------------------------------------------------------------------------
class _Repair:
    """One repair: the candidate so far, its costs, and the marginal costs known at it
    (exact ones until a knob touching the same layers moves; the last exact one per unit
    of density as an estimate afterwards)."""

    def __init__(self, space: Space, limits: Mapping[str, float], plan: _Plan, values: list[float],
                 preference: list[float], caps: list[float]):
        self.space, self.limits, self.plan = space, dict(limits), plan
        self.names = space.knob_names
        self.values, self.preference, self.caps = values, preference, caps
        self.known: dict[int, tuple[float, dict[str, float]]] = {}  # knob -> (target, exact cost change)
        self.slope: dict[int, dict[str, float]] = {}  # knob -> cost change per unit of density, last measured
        self.last_order: list[int] = []  # the knobs the last round stepped, in the order it took them
        self.cost = self._cost(values)

    def _cost(self, values: list[float]) -> dict[str, float]:
        cost = self.space.candidate_cost(dict(zip(self.names, values)))
        return {m: cost[m] for m in self.limits}

    def _change(self, i: int, target: float) -> dict[str, float]:
        """The exact cost change of moving knob ``i`` to ``target``."""
        known = self.known.get(i)
        if known is None or known[0] != target:
            values = list(self.values)
            values[i] = target
            after = self._cost(values)
            known = self.known[i] = (target, {m: after[m] - self.cost[m] for m in self.limits})
            self.slope[i] = {m: c / (target - self.values[i]) for m, c in known[1].items()}
        return known[1]

    def _estimate(self, i: int, target: float) -> tuple[dict[str, float] | None, bool]:
        """(cost change, exact) of moving knob ``i`` to ``target``, without evaluating:
        exact where known, else from its last slope, else None."""
        known = self.known.get(i)
        if known is not None and known[0] == target:
            return known[1], True
        slope = self.slope.get(i)
        if slope is None:
            return None, False
        return {m: s * (target - self.values[i]) for m, s in slope.items()}, False

    def _move(self, steps: dict[int, float]) -> None:
        for i, target in steps.items():
            self.values[i] = target
        for j in {j for i in steps for j in self.plan.neighbours[i]}:
            self.known.pop(j, None)
        self.cost = self._cost(self.values)

    def _worth(self, i: int, target: float) -> float:
        """The preference a step gives up (or gains): ``preference * |ln(before / after)|``."""
        return self.preference[i] * abs(math.log(max(self.values[i], 1e-12) / max(target, 1e-12)))

    def _round(self, targets: dict[int, float], score, take, hopeless=None) -> bool:
        """One round of steps, best ``score`` first (lazily: estimated scores order the
        knobs, a step's exact score is computed before it is taken), on knobs whose layers
        no step of the round touched, while ``take`` accepts them (None: the round is
        done) and their score is at least ``_BATCH`` of the best one left for the next
        round because it touched those layers.  ``hopeless`` drops knobs on their estimate
        alone.  True when a step was taken."""
        heap = []
        for i, target in targets.items():
            change, exact = self._estimate(i, target)
            if change is None:
                heap.append((-_LARGE, i, False))
            elif exact or hopeless is None or not hopeless(i, change):
                heap.append((-score(i, target, change), i, exact))
        heapq.heapify(heap)
        used: set[str] = set()
        steps: dict[int, float] = {}
        bar = 0.0  # the best score a step touching the round's layers had: later steps must come close
        while heap:
            negative, i, exact = heapq.heappop(heap)
            if self.plan.layers[i] & used:
                if -negative < _LARGE:  # a free step put off does not stop the round
                    bar = max(bar, -negative)
                continue
            change = self._change(i, targets[i])
            if not exact:
                heapq.heappush(heap, (-score(i, targets[i], change), i, True))
                continue
            if -negative < _BATCH * bar:
                break
            verdict = take(i, change)
            if verdict is None:
                break
            if verdict:
                steps[i] = targets[i]
                used |= self.plan.layers[i]
        self.last_order = list(steps)
        if steps:
            self._move(steps)
        return bool(steps)

    def lower(self, factor: float) -> None:
        """Lower knobs until the limits hold; BudgetError when every knob is at its lowest."""
        while not _within(self.cost, self.limits):
            self._lower_round(factor)

    def _lower_round(self, factor: float) -> None:
        excess = {m: self.cost[m] - limit for m, limit in self.limits.items() if self.cost[m] > limit}
        remaining = dict(excess)
        targets = {i: t for i, r in enumerate(self.plan.rungs) if (t := r.below(self.values[i], factor)) is not None}
        if not targets:
            raise BudgetError("no setting of this space meets the budget")

        def saved(change: dict[str, float]) -> float:
            return sum(min(-change[m], e) / e for m, e in excess.items() if change[m] < 0)

        def score(i: int, target: float, change: dict[str, float]) -> float:
            return saved(change) / max(self._worth(i, target), 1e-12)

        def take(i: int, change: dict[str, float], idle: bool = False) -> bool | None:
            if all(r <= 0 for r in remaining.values()):
                return None
            if not idle and saved(change) <= 0:
                return False
            for m in remaining:
                remaining[m] += change[m]
            return True

        # steps that save nothing (rungs that resolve alike) only when no step saves
        if not self._round(targets, score, take):
            self._round(targets, score, lambda i, change: take(i, change, idle=True))

    def grow(self, factor: float) -> None:
        """Raise knobs (to their caps at most) while a step fits the limits."""
        stuck: set[int] = set()  # knobs whose step did not fit: the room only shrinks while growing
        while self._grow_round(factor, stuck):
            pass

    def _grow_round(self, factor: float, stuck: set[int]) -> bool:
        room = {m: limit - self.cost[m] for m, limit in self.limits.items()}
        start = dict(room)
        targets = {i: t for i, r in enumerate(self.plan.rungs)
                   if i not in stuck and (t := r.above(self.values[i], factor, self.caps[i])) is not None}

        def score(i: int, target: float, change: dict[str, float]) -> float:
            used = max((change[m] / max(start[m], 1e-12) for m in change), default=0.0)
            return _LARGE if used <= 0 else self._worth(i, target) / used

        def take(i: int, change: dict[str, float]) -> bool:
            if any(change[m] > room[m] for m in room):
                stuck.add(i)
                return False
            for m in room:
                room[m] -= change[m]
            return True

        def hopeless(i: int, change: dict[str, float]) -> bool:
            if factor >= 1.0 or not any(change[m] > 2 * start[m] for m in start):
                return False
            stuck.add(i)
            return True

        before, cost = list(self.values), dict(self.cost)
        if not targets or not self._round(targets, score, take, hopeless):
            return False
        if not _within(self.cost, self.limits):  # costs that do not add up over layers (latency)
            first = self.last_order[0]
            target = self.values[first]
            self.values, self.cost, self.known = before, cost, {}
            if _within({m: cost[m] + c for m, c in self._change(first, target).items()}, self.limits):
                self._move({first: target})
            else:
                stuck.add(first)
        return True


def _values(space: Space, proposal: Mapping[str, float]) -> list[float]:
    return [min(k.high, max(k.low, float(proposal.get(k.name, k.high)))) for k in space.knobs]


def _preference(space: Space, preference: Mapping[str, float] | None) -> list[float]:
    """Per knob, the preference (missing knobs: the mean of those given), floored at a
    millionth of the largest so every step has a price."""
    given = {k: float(v) for k, v in (preference or {}).items()}
    fill = sum(given.values()) / len(given) if given else 1.0
    values = [given.get(k.name, fill) for k in space.knobs]
    top = max(values, default=1.0)
    if top <= 0:
        return [1.0] * len(values)
    return [max(v, 1e-6 * top) for v in values]


def project(space: Space, proposal: Mapping[str, float], limits: Mapping[str, float], *,
            preference: Mapping[str, float] | None = None, grow: bool = True) -> Candidate:
    """The candidate for ``proposal`` within ``limits``: repaired step by step where it is
    over them (see the module docstring), then, with ``grow``, grown while a step fits
    (else raised back toward the proposal only where the repair overshot).  ``preference``
    (``{knob: weight}``, higher = keep it; default equal) orders the steps.  Rank values
    in the band that saves less than ``MIN_RANK_SAVING`` are snapped out of it.

    Raises BudgetError if no candidate meets the limits (see ``check_reachable``).
    """
    plan = _plan(space)
    values = [rungs.snap(v) for rungs, v in zip(plan.rungs, _values(space, proposal))]
    caps = [k.high for k in space.knobs] if grow else list(values)
    repair = _Repair(space, limits, plan, values, _preference(space, preference), caps)
    if not _within(repair.cost, limits) and not fits(space, space.most_compressed(), limits):
        raise BudgetError("no setting of this space meets the budget")
    for factor in _FACTORS:
        repair.lower(factor)
        repair.grow(factor)
    return _settle_ranks(space, plan, dict(zip(space.knob_names, repair.values)))


def _settle_ranks(space: Space, plan: _Plan, candidate: Candidate) -> Candidate:
    """``candidate`` with every rank knob whose factors, at the layer's shape after channel
    pruning, save less than ``MIN_RANK_SAVING`` of its FLOPs lowered a rung at a time (the
    rounding of the break-even rank can leave one just short of it; lowering only saves)."""
    ranked = [(k, rungs) for k, rungs in zip(space.knobs, plan.rungs) if k.kind == "rank"]
    while ranked:
        settings = space.resolve(candidate)
        shapes = space.shapes(settings)
        moved = False
        for knob, rungs in ranked:
            layer, entry = space.layer(knob.target), settings[knob.target]
            if not entry.get("rank"):
                continue
            out, inp = shapes[knob.target]
            dense = 2 * layer.rows[2] * out * inp * layer.kernel[0] * layer.kernel[1]
            factors = lowrank_flops(entry["decomposition"], out, inp, *layer.kernel, entry["rank"], layer.rows)
            lower = rungs.below(candidate[knob.name], 1.0)
            if factors > (1 - MIN_RANK_SAVING) * dense and lower is not None:
                candidate[knob.name], moved = lower, True
        if not moved:
            break
    return candidate


def candidate_for(space: Space, proposal: Mapping[str, float], limits: Mapping[str, float], purpose: str,
                  keep_fitting: bool, *, preference: Mapping[str, float] | None = None) -> Candidate:
    """What is evaluated for a proposal: a scan as given; a search proposal repaired onto
    the budget (``project``), kept as proposed where it fits and ``keep_fitting`` (a
    strategy that asks inside the budget on purpose, or an objective other than accuracy),
    else grown into the budget's headroom.  Raises BudgetError as ``project`` does."""
    if purpose == SCAN:
        return dict(proposal)
    return project(space, proposal, limits, preference=preference, grow=not keep_fitting)
