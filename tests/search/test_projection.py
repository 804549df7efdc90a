from __future__ import annotations

import random

import pytest
import torch

from autocompress.core.errors import BudgetError
from autocompress.core.kinds import kinds_for_metric
from autocompress.core.projection import check_reachable, project
from autocompress.models.demo import DemoNet
from autocompress.spaces import build_space


@pytest.fixture(scope="module")
def space():
    return build_space(DemoNet().eval(), torch.randn(1, 1, 8, 8))


@pytest.mark.parametrize("metric,ratio", [("flops", 0.3), ("params", 0.1), ("size", 0.25), ("flops", 0.6)])
def test_projection_meets_the_budget_tightly(space, metric, ratio):
    space = space.restrict(kinds_for_metric(metric))
    base = space.candidate_cost(space.neutral())
    limit = {metric: ratio * base[metric]}
    rng = random.Random(0)
    for _ in range(10):
        proposal = {k.name: rng.uniform(k.low, k.high) for k in space.knobs}
        candidate = project(space, proposal, limit)
        assert all(k.low <= candidate[k.name] <= k.high for k in space.knobs)
        cost = space.candidate_cost(candidate)[metric]
        assert cost <= limit[metric]
        assert cost >= 0.85 * limit[metric]  # not compressed far past the budget


def test_a_loose_budget_leaves_the_model_alone(space):
    base = space.candidate_cost(space.neutral())
    assert project(space, space.most_compressed(), {"flops": base["flops"]}) == space.neutral()


def test_unreachable_budget_is_reported(space):
    base = space.candidate_cost(space.neutral())
    with pytest.raises(BudgetError, match="cannot be met"):
        check_reachable(space, {"flops": 1e-6 * base["flops"]}, base)


def test_discrete_knobs_still_meet_the_budget(space):
    """Ranks move in steps of 8 and bits in powers of two: the projection may land below
    the limit, never above it."""
    mixed = space.restrict(("channels", "rank", "bits"))
    base = mixed.candidate_cost(mixed.neutral())
    rng = random.Random(1)
    for metric in ("flops", "size"):
        limit = {metric: 0.3 * base[metric]}
        for _ in range(5):
            proposal = {k.name: rng.uniform(k.low, k.high) for k in mixed.knobs}
            assert mixed.candidate_cost(project(mixed, proposal, limit))[metric] <= limit[metric]
