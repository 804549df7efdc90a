from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from autocompress.cli.main import main
from autocompress.compress import compress
from autocompress.compress.channel_masks import ChannelMasks
from autocompress.core.errors import AutocompressError
from autocompress.evaluators import measure_costs
from autocompress.models.workload import load_workload
from autocompress.search import Problem, get_strategy
from autocompress.search._channel_selection import ChannelSelection, consumers
from autocompress.search._ga import GASettings, evolve, random_individual, repair
from autocompress.spaces import build_space
from autocompress.testing import StrategySuite


@pytest.fixture(scope="module")
def problem():
    return StrategySuite.problem(("channels",))


def _random_selections(space, seed):
    """Half of each channel group's channels, at random."""
    rng = np.random.default_rng(seed)
    return {g.name: random_individual(g.size, g.size // 2, rng) for g in space.groups}


def _pruned(model, space, example, selections):
    candidate = {f"{g}/channels": int(keep.sum()) / len(keep) for g, keep in selections.items()}
    order = {g: [int(i) for i in np.flatnonzero(keep)] + [int(i) for i in np.flatnonzero(~keep)]
             for g, keep in selections.items()}
    return compress(model, space, space.resolve(candidate, order), example)


@pytest.mark.parametrize("seed", [0, 1])
def test_masks_give_the_logits_of_real_pruning_on_the_demo(seed):
    workload = load_workload()
    space = build_space(workload.model, workload.example_input)
    selections = _random_selections(space, seed)
    x = next(iter(workload.val))[0][:32]
    model = _pruned(workload.model, space, workload.example_input, selections)
    with torch.no_grad():
        pruned = model(x)
        with ChannelMasks(workload.model, space, workload.example_input) as masks:
            for group, keep in selections.items():
                masks.set(group, keep)
            masked = workload.model(x)
        unmasked = workload.model(x)
    torch.testing.assert_close(masked, pruned, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(unmasked, masked, atol=1e-3)  # the masks did something, and leave with the block
    assert not any(m._forward_hooks for m in workload.model.modules())


def test_masks_follow_concatenations_like_real_pruning(tiny):
    model, example = tiny
    space = build_space(model, example)
    selections = _random_selections(space, 3)
    x = torch.randn(8, *example.shape[1:], generator=torch.Generator().manual_seed(0))
    pruned = _pruned(model, space, example, selections)
    with torch.no_grad(), ChannelMasks(model, space, example) as masks:
        for group, keep in selections.items():
            masks.set(group, keep)
        torch.testing.assert_close(model(x), pruned(x), rtol=1e-4, atol=1e-4)


def test_repair_keeps_exactly_the_target_count():
    rng = np.random.default_rng(0)
    for size in (1, 7, 64):
        for count in {1, size // 2 or 1, size}:
            for _ in range(20):
                individual = rng.random(size) < rng.random()
                fixed = repair(individual, count, rng)
                assert fixed.dtype == bool and fixed.sum() == count
                assert (fixed & individual).sum() == min(count, individual.sum())  # changes only what it must


def test_ga_settings_out_of_range_are_named():
    with pytest.raises(AutocompressError, match="tournament=5"):
        get_strategy("genetic", population=4, tournament=5)
    with pytest.raises(AutocompressError, match="rerank=0"):
        get_strategy("genetic", rerank=0)


def test_ga_finds_a_better_selection_than_random_ones(problem):
    selection = ChannelSelection(problem.workload, problem.space, GASettings(), batch_size=16)
    group, count = "down.0", 24
    watched = consumers(problem.space, group)
    assert watched  # the next layers of the group: their outputs are reconstructed
    with torch.no_grad(), selection.masks:
        reference = selection._outputs(watched)

        def error(keep):
            selection.masks.set(group, keep)
            return selection._error(watched, reference)

        rng = np.random.default_rng(0)
        random_errors = [error(random_individual(64, count, rng)) for _ in range(12)]
        found = evolve(64, count, error, np.random.default_rng(1),
                       GASettings(population=8, generations=6, tournament=3))
    assert found[0][1].sum() == count
    assert found[0][0] < min(random_errors)
    assert [e for e, _ in found] == sorted(e for e, _ in found)


def test_a_proposal_is_pruned_as_its_channel_order_says_and_meets_the_budget(problem):
    strategy = get_strategy("genetic", seed=0, population=4, tournament=2, generations=2, rerank=2, batch_size=16)
    record = StrategySuite().simulate(strategy, problem, 1)[-1]  # after the scan, the first search trial
    assert record.purpose == "search" and record.channel_order
    space, workload = problem.space, problem.workload
    settings = space.resolve(record.candidate, record.channel_order)
    kept = space.group_channels(settings)
    for group, order in record.channel_order.items():
        assert sorted(order) == list(range(next(g.size for g in space.groups if g.name == group)))
    model = compress(workload.model, space, settings, workload.example_input)
    costs = measure_costs(model, workload.example_input)
    assert all(costs[m] <= limit for m, limit in problem.limits.items())
    x = next(iter(workload.val))[0][:16]
    with torch.no_grad(), ChannelMasks(workload.model, space, workload.example_input) as masks:
        for group, order in record.channel_order.items():
            keep = np.zeros(len(order), dtype=bool)
            keep[order[: kept[group]]] = True
            masks.set(group, keep)
        torch.testing.assert_close(model(x), workload.model(x), rtol=1e-4, atol=1e-4)


def test_without_a_workload_the_error_says_so(problem):
    bare = Problem(problem.space, problem.limits, problem.base)
    with pytest.raises(AutocompressError, match="workload"):
        get_strategy("genetic").ask(bare, [])


@pytest.mark.slow
def test_search_with_genetic_from_the_cli(tmp_path):
    out = tmp_path / "run"
    code = main(["search", "--strategy", "genetic", "--trials", "2", "--budget", "flops=0.5",
                 "--option", "population=6", "--option", "generations=3", "--option", "scan_levels=1",
                 "--finetune-steps", "2", "--final-finetune-steps", "5", "--calibration-batches", "2",
                 "--no-progress", "--out", str(out)])
    assert code == 0
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert recipe["search"]["strategy"] == "genetic"
    assert any("channel_order" in layer for layer in recipe["layers"].values())
    assert recipe["metrics"]["compressed"]["flops"] <= 0.5 * recipe["metrics"]["base"]["flops"] + 1e-6
