"""Grouped convolutions (ResNeXt, RegNet) are channel-pruned by equal channels in every group."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from autocompress.compress import compress
from autocompress.compress.channel_masks import ChannelMasks
from autocompress.compress.channels import dropped_channels
from autocompress.core.errors import RecipeError
from autocompress.evaluators import count_flops, measure_costs
from autocompress.spaces import build_space


@pytest.fixture(scope="module")
def resnext(torchvision):
    """A ResNeXt-style net: one bottleneck per stage, 3x3 convolutions in 8 groups of 4+ channels."""
    from torchvision.models.resnet import Bottleneck, ResNet

    torch.manual_seed(0)
    model = ResNet(Bottleneck, [1, 1, 1, 1], groups=8, width_per_group=4, num_classes=10).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.normal_()
    return model, torch.randn(1, 3, 32, 32)


def test_grouped_convolutions_are_searched_in_blocks(resnext):
    model, x = resnext
    space = build_space(model, x)
    assert not space.excluded
    blocks = {g.name: g.blocks for g in space.groups}
    assert blocks["layer1.0.conv1"] == blocks["layer1.0.conv2"] == 8  # into and out of the grouped conv2
    assert blocks["conv1"] == 1
    settings = space.resolve({"layer1.0.conv1/channels": 0.3, "layer1.0.conv2/channels": 0.6})
    assert settings["layer1.0.conv1"]["out_channels"] % 8 == 0 and settings["layer1.0.conv2"]["out_channels"] % 8 == 0
    small = compress(model, space, settings, x)
    conv = small.layer1[0].conv2
    assert conv.groups == 8 and (conv.in_channels, conv.out_channels) == (8, 16)
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_a_count_that_is_not_a_multiple_of_the_groups_is_refused(resnext):
    model, x = resnext
    space = build_space(model, x)
    settings = space.resolve({})
    settings["layer1.0.conv1"]["out_channels"] = 12
    with pytest.raises(RecipeError, match="multiple of 8"):
        compress(model, space, settings, x)


@pytest.mark.parametrize("seed", range(3))
def test_analytic_costs_of_grouped_pruning_equal_measured_costs(resnext, seed):
    model, x = resnext
    space = build_space(model, x).restrict(("channels",))
    rng = random.Random(seed)
    settings = space.resolve({k.name: rng.uniform(k.low, 1.0) for k in space.knobs})
    small = compress(model, space, settings, x)
    assert space.cost(settings) == measure_costs(small, x)


def test_masks_give_the_logits_of_real_grouped_pruning(resnext):
    model, x = resnext
    space = build_space(model, x)
    rng = np.random.default_rng(0)
    selections = {}
    for g in space.groups:
        keep = np.zeros(g.size, dtype=bool)
        keep[rng.choice(g.size, g.size // 2, replace=False)] = True  # not alike in every group: evened out
        selections[g.name] = keep
    batch = torch.randn(4, 3, 32, 32)
    with torch.no_grad(), ChannelMasks(model, space, x) as masks:
        for group, keep in selections.items():
            masks.set(group, keep)
        masked = model(batch)
    # the order the genetic strategy gives for a selection: kept first, strongest first
    order = {g: sorted(range(len(keep)), key=lambda i: (not keep[i], -masks.magnitude[g][i], i))
             for g, keep in selections.items()}
    candidate = {f"{g}/channels": keep.mean() for g, keep in selections.items()}
    small = compress(model, space, space.resolve(candidate, order), x)
    with torch.no_grad():
        torch.testing.assert_close(small(batch), masked, rtol=1e-4, atol=1e-4)


def test_the_same_positions_go_from_every_block():
    scores = torch.tensor([5.0, 1, 2, 9, 5, 1, 2, 0])  # two blocks of 4: positions 0 and 3 are strongest
    assert dropped_channels(8, 4, 2, scores=scores) == [1, 2, 5, 6]
    # by an order: the positions most blocks keep among the first 4, then the best ranked
    assert dropped_channels(8, 4, 2, order=[2, 6, 1, 4, 0, 3, 5, 7]) == [0, 3, 4, 7]
    assert dropped_channels(8, 4, 1, order=[2, 6, 1, 4, 0, 3, 5, 7]) == [0, 3, 5, 7]


@pytest.mark.slow
def test_a_resnext_style_net_reaches_flops_0_15_through_the_engine(resnext, tmp_path):
    from autocompress.api import apply, search

    model, x = resnext
    torch.manual_seed(1)
    batches = [(torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))) for _ in range(3)]
    data = (batches[:2], batches[2:], batches[2:])
    result = search("flops=0.15", model=model, data=data, out=tmp_path / "run", progress=False, trials=2,
                    strategy="random", knobs=("channels",), finetune_steps=0, final_finetune_steps=0,
                    calibration_batches=1)
    small, metrics = apply(result.recipe_path, model=model, data=data)
    assert count_flops(small, x) == metrics["flops"] <= 0.15 * count_flops(model, x)
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)
