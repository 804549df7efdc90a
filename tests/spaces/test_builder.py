from __future__ import annotations

import logging

import pytest
import torch
import torch.nn as nn

from autocompress.models.demo import DemoNet
from autocompress.spaces import build_space


def test_residual_channels_form_one_group():
    space = build_space(DemoNet().eval(), torch.randn(1, 1, 8, 8))
    groups = {g.name: g.members for g in space.groups}
    assert groups["stem.0"] == ("stem.0", "block1.conv2")  # coupled by the residual add
    assert groups["down.0"] == ("down.0", "block2.conv2")
    assert groups["block1.conv1"] == ("block1.conv1",)
    assert {g.name for g in space.groups} == {"stem.0", "block1.conv1", "down.0", "block2.conv1"}


def test_every_conv_and_linear_has_knobs_but_output_is_never_channel_pruned():
    space = build_space(DemoNet().eval(), torch.randn(1, 1, 8, 8))
    layer_names = [layer.name for layer in space.layers]
    assert layer_names == ["stem.0", "block1.conv1", "block1.conv2", "down.0", "block2.conv1", "block2.conv2", "head"]
    assert all(f"{n}/sparsity" in space.knob_names for n in layer_names)
    assert space.layer("head").out_group is None
    assert not any(k.name.startswith("head/channels") for k in space.knobs)


def test_concatenation_and_flatten_are_traced(tiny):
    model, x = tiny
    space = build_space(model, x)
    # the 1x1 mix reads the concatenation of both groups; the head reads mix through a flatten
    assert sorted(space.layer("mix").in_groups) == [("side", 1), ("stem", 1)]
    assert space.layer("head").in_groups == (("mix", 16),)
    # bn0 and bn1 follow stem's channels, bn2 follows the concatenation: 2 params per channel each
    assert {g.name: g.params_per_channel for g in space.groups} == {"stem": 6, "side": 2, "mix": 0}


def test_a_group_the_graph_cannot_resolve_is_excluded_not_broken(caplog):
    class ConcatIntoFlatten(nn.Module):
        # Torch-Pruning 1.6 cannot infer the concat offsets when a flatten follows
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.b = nn.Conv2d(8, 4, 1)
            self.fc = nn.Linear(12 * 16, 3)

        def forward(self, x):
            x = torch.relu(self.a(x))
            return self.fc(torch.cat([x, self.b(x)], dim=1).flatten(1))

    with caplog.at_level(logging.WARNING):
        space = build_space(ConcatIntoFlatten().eval(), torch.randn(1, 3, 4, 4))
    assert space.excluded and "left out" in caplog.text
    for group in space.groups:  # what is left is consistent
        for member in group.members:
            assert space.layer(member).out_channels == group.size


class WithConv1d(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1d = nn.Conv1d(4, 4, 3, padding=1)
        self.fc = nn.Linear(16, 3)

    def forward(self, x):
        return self.fc(self.conv1d(x).flatten(1))


def test_unsupported_layers_are_excluded_with_a_warning(caplog):
    with caplog.at_level(logging.WARNING):
        space = build_space(WithConv1d().eval(), torch.randn(1, 4, 4))
    assert "conv1d" in space.excluded
    assert "conv1d" in caplog.text


def test_restrict_keeps_only_named_kinds():
    space = build_space(DemoNet().eval(), torch.randn(1, 1, 8, 8)).restrict(("channels",))
    assert {k.kind for k in space.knobs} == {"channels"}


def test_attention_heads_are_a_channel_group_with_exact_costs():
    from autocompress.evaluators import count_flops
    from autocompress.models import zoo

    model, x = zoo.vit_tiny(), zoo.example_input("vit_tiny")
    space = build_space(model, x)
    heads = {g.name: g for g in space.groups if g.head_dim}
    assert set(heads) == {"blocks.0.attn", "blocks.1.attn"}
    assert all(g.size == 4 and g.head_dim == 16 for g in heads.values())
    assert space.layer("blocks.0.attn").kind == "attention"
    assert "blocks.0.attn/channels" in space.knob_names
    # its projections' weights take one sparsity and one bits knob; nn.MultiheadAttention cannot be factorised
    assert {space.knob(n).kind for n in space.knob_names if space.knob(n).target == "blocks.0.attn"} \
        == {"channels", "sparsity", "bits"}
    # all of the attention's FLOPs (projections and both products of attention) are per head
    assert space.other_flops == 0
    assert space.cost(space.resolve(space.neutral()))["flops"] == count_flops(model, x)
    one_head = space.resolve({"blocks.0.attn/channels": 0.25})
    assert space.cost(space.resolve(space.neutral()))["flops"] - space.cost(one_head)["flops"] \
        == 3 * heads["blocks.0.attn"].flops_per_channel


def test_every_layer_left_out_is_listed_with_a_reason():
    from autocompress.models import zoo

    model, x = zoo.vit_tiny(), zoo.example_input("vit_tiny")
    space = build_space(model, x)
    assert "compressed with attention blocks.0.attn" in space.excluded["blocks.0.attn.in_proj_weight"]
    assert space.excluded["blocks.0.attn.out_proj"] == space.excluded["blocks.0.attn.in_proj_weight"]
    assert "attention" in space.excluded["patch_embed"]  # the model width, fixed by nn.MultiheadAttention
    covered = {layer.name for layer in space.layers} | set(space.excluded)
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            assert name in covered, name


def test_an_attention_head_pruning_cannot_cost_is_excluded_not_broken(caplog):
    class SharedAttention(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            y = self.attn(x, x, x)[0]
            return self.head(self.attn(y, y, y)[0].mean(1))

    model, x = SharedAttention().eval(), torch.randn(1, 5, 8)
    with caplog.at_level(logging.WARNING):
        space = build_space(model, x)
    assert "runs 2 times" in space.excluded["attn.out_proj"] and "attn.in_proj_weight" in caplog.text
    assert not any(g.head_dim for g in space.groups)
    assert space.cost(space.resolve(space.neutral()))["flops"] > 0


def test_each_left_out_layer_is_warned_about_once(caplog):
    class Another(WithConv1d):  # a model class no other test built, so this process has not warned yet
        pass

    with caplog.at_level(logging.WARNING):
        first = build_space(Another().eval(), torch.randn(1, 4, 4))
        again = build_space(Another().eval(), torch.randn(1, 4, 4))  # e.g. search, then the recipe check
    assert [r.getMessage().count("conv1d") for r in caplog.records] == [1]
    assert first.excluded == again.excluded and "conv1d" in again.excluded


def test_attention_layers_take_heads_sparsity_and_bits_and_nothing_else():
    from autocompress.core.errors import RecipeError
    from autocompress.models import zoo

    space = build_space(zoo.vit_tiny(), zoo.example_input("vit_tiny"))
    assert space.shapes({"blocks.0.attn": {"heads": 1, "sparsity": 0.5, "bits": 8}})  # within its 4 heads
    for bad, needle in [({"blocks.0.attn": {"heads": 5}}, "asks for 5 heads; it has 4"),
                        ({"blocks.0.attn": {"rank": 2, "decomposition": "svd"}}, "cannot take rank"),
                        ({"blocks.0.fc1": {"heads": 2}}, "not an attention layer")]:
        with pytest.raises(RecipeError, match=needle):
            space.shapes(bad)


def test_a_model_the_graph_cannot_trace_keeps_its_per_layer_knobs(tiny, monkeypatch, caplog):
    from autocompress.compress import compress
    from autocompress.evaluators import measure_costs
    from autocompress.spaces import builder

    def untraceable(model, example_input):
        raise RuntimeError("no grad_fn")

    model, x = tiny
    monkeypatch.setattr(builder, "channel_graph", untraceable)
    monkeypatch.setattr(builder, "_warned", set())
    with caplog.at_level(logging.WARNING):
        space = build_space(model, x)
        build_space(model, x)
    assert "could not trace" in space.excluded["*"] and caplog.text.count("could not trace") == 1
    assert not space.groups and {k.kind for k in space.knobs} == {"sparsity", "rank", "bits"}
    settings = space.resolve({"conv/sparsity": 0.5, "mix/bits": 0.25})
    assert space.cost(settings) == measure_costs(compress(model, space, settings, x), x)


def test_a_group_whose_pruning_breaks_the_forward_pass_is_excluded(caplog):
    class TiedAttention(nn.Module):
        # as timm-style attention does: heads split off the projection, merged back by the input's width
        def __init__(self):
            super().__init__()
            self.embed = nn.Linear(4, 8)
            self.qkv = nn.Linear(8, 24)
            self.proj = nn.Linear(8, 8)
            self.mlp = nn.Linear(8, 16)
            self.head = nn.Linear(16, 3)

        def forward(self, x):
            x = self.embed(x)
            b, n, c = x.shape
            q, k, v = self.qkv(x).reshape(b, n, 3, 2, 4).permute(2, 0, 3, 1, 4)
            a = ((q @ k.transpose(-2, -1)).softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
            x = x + self.proj(a)
            return self.head(torch.relu(self.mlp(x)).mean(1))

    model, x = TiedAttention().eval(), torch.randn(1, 5, 4)
    with caplog.at_level(logging.WARNING):
        space = build_space(model, x)
    assert "qkv" in space.excluded and "embed" in space.excluded
    assert "breaks the model's forward pass" in space.excluded["embed"] and "embed" in caplog.text
    assert "mlp" in {g.name for g in space.groups}
