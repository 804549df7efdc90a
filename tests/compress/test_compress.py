from __future__ import annotations

import random

import pytest
import torch

from autocompress.compress import bake, compress
from autocompress.core.errors import RecipeError
from autocompress.evaluators import measure_costs
from autocompress.models.demo import DemoNet
from autocompress.spaces import build_space


def _trained_like(model):
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.bias.data.normal_()
    return model.eval()


def test_neutral_setting_gives_identical_outputs(tiny):
    model, x = tiny
    space = build_space(model, x)
    out = compress(model, space, space.resolve(space.neutral()), x)
    batch = torch.randn(4, *x.shape[1:])
    assert torch.equal(out(batch), model(batch))


def test_pruning_a_residual_model_really_removes_channels():
    torch.manual_seed(0)
    model, x = _trained_like(DemoNet()), torch.randn(1, 1, 8, 8)
    space = build_space(model, x)
    candidate = {"stem.0/channels": 0.5, "block1.conv1/channels": 0.25, "down.0/channels": 0.75}
    settings = space.resolve(candidate)
    small = compress(model, space, settings, x)
    assert small.stem[0].out_channels == 16 and small.block1.conv2.out_channels == 16
    assert small.block1.conv1.out_channels == 8 and small.block1.conv2.in_channels == 8
    assert small.stem[1].num_features == 16 and small.block1.bn1.num_features == 8
    assert small.down[0].in_channels == 16 and small.down[0].out_channels == 48
    assert small.head.in_features == 48 and small.head.out_features == 10
    assert small(torch.randn(5, 1, 8, 8)).shape == (5, 10)
    assert model.stem[0].out_channels == 32  # the original is untouched


def test_sparsity_is_attached_for_fine_tuning_then_baked_into_plain_weights(tiny):
    model, x = tiny
    space = build_space(model, x)
    settings = space.resolve({"conv/sparsity": 0.25})
    small = compress(model, space, settings, x)
    assert torch.nn.utils.parametrize.is_parametrized(small.conv, "weight")
    expected = small(x)
    bake(small)
    assert type(small.conv) is torch.nn.Conv2d and isinstance(small.conv.weight, torch.nn.Parameter)
    assert torch.equal(small(x), expected)
    weight = small.conv.weight
    assert int((weight == 0).sum()) == int(0.75 * weight.numel())
    threshold = model.conv.weight.abs().flatten().sort().values[int(0.75 * weight.numel()) - 1]
    assert weight[weight != 0].abs().min() >= threshold  # the smallest magnitudes went


@pytest.mark.parametrize("seed", range(8))
def test_analytic_costs_equal_measured_costs(tiny, seed):
    model, x = tiny
    space = build_space(model, x)
    rng = random.Random(seed)
    candidate = {k.name: rng.uniform(k.low, 1.0) for k in space.knobs}
    settings = space.resolve(candidate)
    small = compress(model, space, settings, x)
    assert space.cost(settings) == measure_costs(small, x)


def test_coupled_layers_must_agree(tiny):
    model, x = tiny
    space = build_space(model, x)
    settings = space.resolve({})
    settings["conv"]["out_channels"] = 4  # conv shares its channels with stem
    with pytest.raises(RecipeError, match="share channels"):
        compress(model, space, settings, x)


def test_unknown_layer_is_rejected(tiny):
    model, x = tiny
    space = build_space(model, x)
    with pytest.raises(RecipeError, match="nope"):
        compress(model, space, {"nope": {"sparsity": 0.5}}, x)


def test_channel_order_decides_which_channels_survive():
    torch.manual_seed(0)
    model, x = _trained_like(DemoNet()), torch.randn(1, 1, 8, 8)
    space = build_space(model, x)
    order = list(range(31, -1, -1))  # the last channels first
    settings = space.resolve({"block1.conv1/channels": 0.25}, {"block1.conv1": order})
    assert settings["block1.conv1"]["channel_order"] == order
    small = compress(model, space, settings, x)
    kept = sorted(order[:8])
    torch.testing.assert_close(small.block1.conv1.weight, model.block1.conv1.weight[kept])
    torch.testing.assert_close(small.block1.conv2.weight, model.block1.conv2.weight[:, kept])


def test_channel_order_must_name_enough_distinct_channels():
    model, x = DemoNet().eval(), torch.randn(1, 1, 8, 8)
    space = build_space(model, x)
    settings = space.resolve({"block1.conv1/channels": 0.25}, {"block1.conv1": [0, 1, 2]})
    with pytest.raises(RecipeError, match="channel_order"):
        compress(model, space, settings, x)
    settings["block1.conv1"]["channel_order"] = [0, 0, 1, 2, 3, 4, 5, 6, 7]
    with pytest.raises(RecipeError, match="distinct"):
        compress(model, space, settings, x)
