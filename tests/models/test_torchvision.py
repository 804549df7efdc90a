"""Issue 14: every classification family of ``torchvision.models`` as it is (weights=None,
small inputs): its space is built with no whole-model refusal, a candidate at flops=0.5 is
compressed into a model that runs, meets the budget exactly as the space predicts, and
exports; what the dependency graph cannot prune is left out by name, with a warning."""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn as nn

from autocompress.compress import bake, compress
from autocompress.compress.export import export_model
from autocompress.core.projection import fits, project
from autocompress.evaluators import count_flops
from autocompress.spaces import build_space, builder


def _vgg11(tv):
    return tv.models.vgg11(num_classes=10)


FAMILIES = {  # family: (builder call on the torchvision module, input side, slow)
    "alexnet": (lambda tv: tv.models.alexnet(num_classes=10), 64, True),
    "convnext": (lambda tv: tv.models.convnext_tiny(num_classes=10), 32, False),
    "densenet": (lambda tv: tv.models.densenet121(num_classes=10), 32, True),
    "efficientnet": (lambda tv: tv.models.efficientnet_b0(num_classes=10), 32, False),
    "efficientnet_v2": (lambda tv: tv.models.efficientnet_v2_s(num_classes=10), 32, True),
    "googlenet": (lambda tv: tv.models.googlenet(num_classes=10, aux_logits=False, init_weights=False), 32, False),
    "inception": (lambda tv: tv.models.inception_v3(num_classes=10, aux_logits=False, init_weights=False), 75, True),
    # maxvit_t's 224x224 minimum takes Torch-Pruning minutes and gigabytes: its class, narrowed, at 32x32
    "maxvit": (lambda tv: tv.models.MaxVit(input_size=(32, 32), stem_channels=16, partition_size=2,
                                           block_channels=[16, 32], block_layers=[1, 1], head_dim=8,
                                           stochastic_depth_prob=0.2, num_classes=10), 32, False),
    "mnasnet": (lambda tv: tv.models.mnasnet0_5(num_classes=10), 32, False),
    "mobilenet_v2": (lambda tv: tv.models.mobilenet_v2(num_classes=10), 32, False),
    "mobilenet_v3": (lambda tv: tv.models.mobilenet_v3_small(num_classes=10), 32, False),
    "regnet_x": (lambda tv: tv.models.regnet_x_400mf(num_classes=10), 32, False),
    "regnet_y": (lambda tv: tv.models.regnet_y_400mf(num_classes=10), 32, False),
    "resnet": (lambda tv: tv.models.resnet18(num_classes=10), 32, False),
    "resnext": (lambda tv: tv.models.resnext50_32x4d(num_classes=10), 32, True),
    "shufflenet": (lambda tv: tv.models.shufflenet_v2_x0_5(num_classes=10), 32, False),
    "squeezenet": (lambda tv: tv.models.squeezenet1_0(num_classes=10), 64, False),
    "swin": (lambda tv: tv.models.swin_t(num_classes=10), 32, True),
    # swin_v2_t takes two minutes here: its class (V2 blocks and patch merging), narrowed, at 32x32
    "swin_v2": (lambda tv: tv.models.SwinTransformer(
        patch_size=[4, 4], embed_dim=24, depths=[2, 2], num_heads=[2, 4], window_size=[8, 8],
        stochastic_depth_prob=0.2, num_classes=10, block=tv.models.swin_transformer.SwinTransformerBlockV2,
        downsample_layer=tv.models.swin_transformer.PatchMergingV2), 32, True),
    "vgg": (_vgg11, 32, True),
    "vit": (lambda tv: tv.models.vit_b_16(num_classes=10, image_size=32), 32, True),
    "wide_resnet": (lambda tv: tv.models.wide_resnet50_2(num_classes=10), 32, True),
}


OUT_OF_REACH = {  # family: a layer left out whose FLOPs make flops=0.5 unreachable at these input sizes
    # torchvision's Swin calls its attention's qkv/proj weights directly, on windows padded to 7x7
    "swin": "layer features.1.0.attn.qkv left out of the search",
    "swin_v2": "layer features.1.0.attn.qkv left out of the search",
}


def _params(family):
    build, side, slow = FAMILIES[family]
    return pytest.param(family, marks=[pytest.mark.slow] if slow else [])


def _built(torchvision, family, caplog, monkeypatch):
    build, side, _ = FAMILIES[family]
    torch.manual_seed(0)
    model, x = build(torchvision).eval(), torch.randn(1, 3, side, side)
    monkeypatch.setattr(builder, "_warned", set())  # warned afresh, whatever other tests built
    with caplog.at_level(logging.WARNING, logger="autocompress.spaces.builder"):
        space = build_space(model, x)
    return model, x, space


@pytest.mark.parametrize("family", [_params(f) for f in FAMILIES])
def test_every_family_is_searched_compressed_within_budget_and_exported(torchvision, family, caplog, monkeypatch,
                                                                        tmp_path):
    model, x, space = _built(torchvision, family, caplog, monkeypatch)
    assert "*" not in space.excluded  # never a whole-model refusal
    covered = {layer.name for layer in space.layers} | set(space.excluded)
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            assert any(name == c or name.startswith(f"{c}.") for c in covered), name
    for name in space.excluded:  # each left out by name, with a warning
        assert name in caplog.text

    base = count_flops(model, x)
    limits = {"flops": 0.5 * base}
    if family in OUT_OF_REACH:  # what is left out holds more than half the FLOPs: the rest is compressed
        assert OUT_OF_REACH[family] in caplog.text
        limits = {"flops": (base + space.candidate_cost(space.most_compressed())["flops"]) / 2}
    channels = space.restrict(("channels",))  # the graph's own knobs, where they reach the budget
    searched = channels if fits(channels, channels.most_compressed(), limits) else space
    settings = searched.resolve(project(searched, searched.neutral(), limits))
    small = bake(compress(model, searched, settings, x))
    predicted = searched.cost(settings)["flops"]
    assert count_flops(small, x) == predicted <= limits["flops"]
    assert predicted < base
    with torch.no_grad():
        assert small(torch.randn(2, *x.shape[1:])).shape == (2, 10)
    path = tmp_path / "model.pt2"
    export_model(small, x, path)
    with torch.no_grad():
        assert torch.export.load(str(path)).module()(torch.randn(3, *x.shape[1:])).shape == (3, 10)


def test_channel_shuffle_prunes_inside_the_branches_and_names_what_it_leaves_out(torchvision, caplog, monkeypatch):
    model, x, space = _built(torchvision, "shufflenet", caplog, monkeypatch)
    groups = {g.name for g in space.groups}
    # a block's inner channels (1x1 conv -> depthwise -> 1x1 conv) never meet the shuffle
    assert {"conv1.0", "conv5.0", "stage2.0.branch2.0", "stage3.1.branch2.0", "stage4.3.branch2.0"} <= groups
    assert {g.name: g.members for g in space.groups}["stage3.1.branch2.0"] == ("stage3.1.branch2.0",
                                                                              "stage3.1.branch2.3")
    # a block's outputs are concatenated and shuffled: left out, by name, with the reason
    for name in ("stage2.0.branch1.2", "stage2.1.branch2.5", "stage4.3.branch2.5"):
        assert "channel shuffle" in space.excluded[name]
        assert f"layer {name} left out of the channel search" in caplog.text


def test_grouped_convolutions_keep_the_same_channels_in_every_group(torchvision, caplog, monkeypatch):
    model, x, space = _built(torchvision, "regnet_y", caplog, monkeypatch)
    assert not any("grouped" in why for why in space.excluded.values())
    group = {g.name: g for g in space.groups}["trunk_output.block2.block2-0.f.b.0"]
    assert group.blocks == 13  # 104 channels in groups of 8: squeeze-excitation scales them too
    assert "trunk_output.block2.block2-0.f.se.fc2" in group.members
    settings = space.resolve({f"{group.name}/channels": 0.5})
    small = compress(model, space, settings, x)
    conv = small.get_submodule("trunk_output.block2.block2-0.f.b.0")
    assert conv.groups == 13 and conv.out_channels == settings[group.name]["out_channels"] == 52
    assert count_flops(small, x) == space.cost(settings)["flops"]


def test_layer_scale_and_stochastic_depth_follow_the_channels(torchvision, caplog, monkeypatch):
    model, x, space = _built(torchvision, "convnext", caplog, monkeypatch)
    stem = {g.name: g for g in space.groups}["features.0.0"]  # the first stage's residual stream
    # LayerNorms (2 per channel) after the stem, in 3 blocks and before the downsampling; 3 blocks' layer_scale
    assert stem.params_per_channel == 2 + 3 * 2 + 2 + 3
    settings = space.resolve({"features.0.0/channels": 0.5, "features.1.0.block.3/channels": 0.25})
    small = compress(model, space, settings, x)
    assert small.features[1][0].layer_scale.shape == (48, 1, 1)
    assert space.cost(settings)["params"] == sum(p.numel() for p in small.parameters())
    assert count_flops(small, x) == space.cost(settings)["flops"]
