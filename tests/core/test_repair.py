"""The budget repair (``core.projection``): proposals kept, repaired step by step or grown,
by the strategy's preference, with no rank in the dead band, and allocations from scans
that stay within what the scans measured."""
from __future__ import annotations

import random

import pytest
import torch

from autocompress.core.errors import BudgetError
from autocompress.core.patterns import break_even_rank, lowrank_flops
from autocompress.core.projection import MIN_RANK_SAVING, Rungs, candidate_for, fits, project
from autocompress.core.trial import COMPLETE, SCAN, SEARCH, TrialRecord
from autocompress.models import zoo
from autocompress.models.demo import DemoNet
from autocompress.search import Proposal, as_proposal
from autocompress.search.sensitivity import (
    allocation,
    repair_preference,
    scan_levels,
    scan_proposals,
    scanned_floors,
    sensitivities,
)
from autocompress.spaces import build_space


@pytest.fixture(scope="module")
def space():
    return build_space(DemoNet().eval(), torch.randn(1, 1, 8, 8))


@pytest.fixture(scope="module")
def channels(space):
    return space.restrict(("channels",))


def limit(space, metric: str, ratio: float) -> dict[str, float]:
    return {metric: ratio * space.candidate_cost(space.neutral())[metric]}


def fitting_proposals(space, limits, count: int, seed: int = 0) -> list[dict[str, float]]:
    rng, found = random.Random(seed), []
    while len(found) < count:
        proposal = {k.name: rng.uniform(k.low, k.high) for k in space.knobs}
        if fits(space, proposal, limits):
            found.append(proposal)
    return found


def test_a_fitting_proposal_is_kept_as_proposed_where_the_strategy_keeps_it(space):
    space = space.restrict(("channels", "sparsity", "bits"))
    limits = limit(space, "size", 0.4)
    for proposal in fitting_proposals(space, limits, 5):
        assert candidate_for(space, proposal, limits, SEARCH, keep_fitting=True) == proposal
        assert project(space, proposal, limits, grow=False) == proposal


def test_a_scan_is_evaluated_as_given(channels):
    proposal = {k.name: 0.2 for k in channels.knobs}
    assert candidate_for(channels, proposal, limit(channels, "flops", 0.01), SCAN, keep_fitting=False) == proposal


def test_an_over_budget_proposal_is_repaired_keeping_the_preferred_knob(channels):
    limits = limit(channels, "flops", 0.5)
    neutral = channels.neutral()
    equal = project(channels, neutral, limits)
    assert fits(channels, equal, limits)
    for knob in channels.knob_names:
        others = {name: 1.0 for name in channels.knob_names}
        protected = project(channels, neutral, limits, preference={**others, knob: 100.0})
        given_up = project(channels, neutral, limits, preference={**others, knob: 0.01})
        assert fits(channels, protected, limits) and fits(channels, given_up, limits)
        assert protected[knob] >= equal[knob] >= given_up[knob]
        assert protected[knob] > given_up[knob]
        if fits(channels, {**channels.most_compressed(), knob: 1.0}, limits):
            assert protected[knob] == 1.0  # the others can meet the budget alone: it is not touched


def test_a_kept_proposal_is_repaired_without_raising_any_knob(channels):
    limits = limit(channels, "flops", 0.3)
    rng = random.Random(3)
    for _ in range(5):
        proposal = {k.name: rng.uniform(0.5, 1.0) for k in channels.knobs}
        candidate = candidate_for(channels, proposal, limits, SEARCH, keep_fitting=True)
        assert fits(channels, candidate, limits)
        assert all(candidate[name] <= proposal[name] for name in proposal)
        assert candidate != proposal


@pytest.mark.parametrize("metric,ratio,kinds", [("flops", 0.5, ("channels",)),
                                                ("size", 0.3, ("channels", "sparsity", "bits"))])
def test_growth_never_lowers_a_knob_and_stops_when_no_step_fits(space, metric, ratio, kinds):
    space = space.restrict(kinds)
    limits = limit(space, metric, ratio)
    rungs = [Rungs(space, k) for k in space.knobs]
    for proposal in fitting_proposals(space, limits, 4, seed=1):
        grown = project(space, proposal, limits)
        assert fits(space, grown, limits)
        assert all(grown[name] >= proposal[name] for name in proposal)
        assert grown != proposal
        for knob, steps in zip(space.knobs, rungs):
            higher = steps.above(grown[knob.name], 1.0, knob.high)
            if higher is not None:  # the next rung up of any knob misses the budget
                assert not fits(space, {**grown, knob.name: higher}, limits), knob.name


def test_repair_and_growth_meet_the_budget_tightly(space):
    for metric, ratio in (("flops", 0.3), ("params", 0.1), ("size", 0.25)):
        limits = limit(space, metric, ratio)
        rng = random.Random(2)
        for _ in range(3):
            proposal = {k.name: rng.uniform(k.low, k.high) for k in space.knobs}
            cost = space.candidate_cost(project(space, proposal, limits))[metric]
            assert 0.95 * limits[metric] <= cost <= limits[metric]


@pytest.mark.parametrize("name", ["resnet20", "se_net", "lenet300_100"])
def test_no_layer_is_factorised_at_a_rank_that_saves_too_little(name):
    """svd (1x1, Linear) and tucker2 (3x3) rank knobs, with channels pruned too: every rank
    the repair leaves saves at least MIN_RANK_SAVING of the layer's FLOPs at its pruned shape."""
    space = build_space(zoo.MODELS[name].factory(), zoo.example_input(name)).restrict(("channels", "rank"))
    assert {k.option for k in space.knobs if k.kind == "rank"} & {"svd", "tucker2"}
    limits = limit(space, "flops", 0.5)
    rng = random.Random(0)
    for _ in range(4):
        proposal = {k.name: rng.uniform(0.7, 0.99) if k.kind == "rank" else rng.uniform(0.3, 1.0)
                    for k in space.knobs}  # ranks in or near the band
        for keep in (False, True):
            candidate = candidate_for(space, proposal, limits, SEARCH, keep_fitting=keep)
            assert not any(1 - MIN_RANK_SAVING < candidate[k.name] < 1.0 for k in space.knobs if k.kind == "rank")
            settings = space.resolve(candidate)
            shapes = space.shapes(settings)
            for layer in space.layers:
                entry = settings[layer.name]
                if entry.get("rank"):
                    out, inp = shapes[layer.name]
                    dense = 2 * layer.rows[2] * out * inp * layer.kernel[0] * layer.kernel[1]
                    factors = lowrank_flops(entry["decomposition"], out, inp, *layer.kernel, entry["rank"], layer.rows)
                    assert factors <= (1 - MIN_RANK_SAVING) * dense, (layer.name, entry["rank"])
                    assert entry["rank"] < break_even_rank(entry["decomposition"], out, inp, *layer.kernel, layer.rows)


def test_nothing_meeting_the_limits_is_a_budget_error(space):
    limits = limit(space, "flops", 1e-6)
    with pytest.raises(BudgetError, match="no setting"):
        project(space, space.neutral(), limits)
    with pytest.raises(BudgetError):
        candidate_for(space, space.neutral(), limits, SEARCH, keep_fitting=True)


def test_the_repair_is_deterministic(space):
    limits = limit(space, "size", 0.2)
    rng = random.Random(5)
    proposal = {k.name: rng.uniform(k.low, k.high) for k in space.knobs}
    preference = {k.name: rng.uniform(0.5, 2.0) for k in space.knobs}
    first = project(space, proposal, limits, preference=preference)
    rebuilt = build_space(DemoNet().eval(), torch.randn(1, 1, 8, 8))
    assert project(rebuilt, proposal, limits, preference=preference) == first
    assert project(space, proposal, limits, preference=preference) == first
    assert project(space, first, limits, preference=preference) == first  # a grown candidate stays as it is


def test_a_proposal_states_its_preference(channels):
    names = channels.knob_names
    proposal = as_proposal(Proposal(channels.neutral(), preference={names[0]: 2}), channels)
    assert proposal.preference == {names[0]: 2.0}
    with pytest.raises(ValueError, match="does not have"):
        as_proposal(Proposal(channels.neutral(), preference={"nope/channels": 1.0}), channels)
    with pytest.raises(ValueError, match=">= 0"):
        as_proposal(Proposal(channels.neutral(), preference={names[0]: -1.0}), channels)


def scans(space, drop_per_knob: dict[str, float], base_score: float = 90.0) -> list[TrialRecord]:
    """Finished scan trials at ``scan_levels(3)``: each knob loses ``drop * (1 - density)``."""
    history = []
    for proposal in scan_proposals(space, scan_levels(3)):
        name, density = next((k, v) for k, v in proposal.values.items() if v < 1.0)
        score = base_score - drop_per_knob[name] * (1.0 - density)
        history.append(TrialRecord(len(history), COMPLETE, proposal.values, proposal.values, score, True,
                                   purpose=SCAN))
    return history


def test_an_insensitive_knob_is_not_pushed_to_its_floor_unless_the_budget_needs_it(channels):
    """The scans show one knob insensitive at every scanned density: the allocation stops at
    its lowest scanned density and the repair does not take it further while the others can
    give, yet it goes to its floor when the budget needs everything."""
    names = channels.knob_names
    insensitive = names[1]
    drops = {name: 8.0 for name in names}
    drops[insensitive] = 0.0
    history = scans(channels, drops)
    sens = sensitivities(channels, history, 90.0)
    assert sens[insensitive] == 0.0
    floors = scanned_floors(channels, history)
    lowest = min(scan_levels(3))
    assert floors[insensitive] == lowest > channels.knob(insensitive).low
    assert repair_preference(channels, [], 90.0) == {}  # no scans: the engine's repair weighs knobs equally
    preference = repair_preference(channels, history, 90.0)
    assert 0 < preference[insensitive] < preference[names[0]]
    profile = allocation(channels, sens, 1.0, floors)
    assert profile[insensitive] == lowest  # not extrapolated to 1e-3 of the others and clipped to the floor
    assert allocation(channels, sens, 1.0)[insensitive] == channels.knob(insensitive).low  # what it did before
    for ratio in (0.6, 0.4):
        candidate = project(channels, profile, limit(channels, "flops", ratio), preference=preference)
        assert candidate[insensitive] >= lowest, ratio
    tightest = channels.candidate_cost(channels.most_compressed())["flops"]
    candidate = project(channels, profile, {"flops": tightest}, preference=preference)
    assert candidate == channels.most_compressed()
