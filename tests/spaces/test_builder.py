from __future__ import annotations

import logging

import torch
import torch.nn as nn

from autocompress.demo import DemoNet
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
    layer_names = [l.name for l in space.layers]
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


def test_unsupported_layers_are_excluded_with_a_warning(caplog):
    class WithConv1d(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1d = nn.Conv1d(4, 4, 3, padding=1)
            self.fc = nn.Linear(16, 3)

        def forward(self, x):
            return self.fc(self.conv1d(x).flatten(1))

    with caplog.at_level(logging.WARNING):
        space = build_space(WithConv1d().eval(), torch.randn(1, 4, 4))
    assert "conv1d" in space.excluded
    assert "conv1d" in caplog.text


def test_restrict_keeps_only_named_kinds():
    space = build_space(DemoNet().eval(), torch.randn(1, 1, 8, 8)).restrict(("channels",))
    assert {k.kind for k in space.knobs} == {"channels"}
