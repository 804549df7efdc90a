from __future__ import annotations

import pytest
import torch

from autocompress.compress.export import export_model
from autocompress.core.space import channel_step, kept_channels
from autocompress.models.demo import DemoNet
from autocompress.spaces import build_space


@pytest.mark.parametrize("size,multiple,step",
                         [(64, 8, 8), (64, 16, 16), (16, 16, 8), (10, 8, 4), (3, 8, 1), (32, 1, 1)])
def test_channel_step_halves_for_narrow_groups(size, multiple, step):
    assert channel_step(size, multiple) == step


@pytest.mark.parametrize("size,multiple", [(64, 8), (48, 16), (17, 8), (10, 8), (3, 8)])
def test_kept_channels_are_whole_steps_or_everything(size, multiple):
    step = channel_step(size, multiple)
    seen = set()
    for i in range(101):
        kept = kept_channels(size, i / 100, multiple)
        assert step <= kept <= size or kept == size
        assert kept % step == 0 or kept == size
        seen.add(kept)
    assert size in seen and step in seen
    # monotone in the density, so the budget projection's bisection stays valid
    values = [kept_channels(size, i / 100, multiple) for i in range(101)]
    assert values == sorted(values)


def test_space_rounds_kept_channels_to_its_multiple():
    space = build_space(DemoNet().eval(), torch.randn(1, 1, 8, 8))
    from dataclasses import replace

    rounded = replace(space, channel_multiple=8)
    settings = rounded.resolve({k.name: 0.3 for k in rounded.knobs if k.kind == "channels"})
    assert all(s["out_channels"] % 8 == 0 for name, s in settings.items() if name != "head")
    exact = space.resolve({k.name: 0.3 for k in space.knobs if k.kind == "channels"})
    assert any(s["out_channels"] % 8 for name, s in exact.items() if name != "head")


def test_exported_model_has_batchnorm_folded(tmp_path):
    torch.manual_seed(0)
    model = DemoNet().eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2)
    x = torch.randn(3, 1, 8, 8)
    export_model(model, x[:1], tmp_path / "folded.pt2")
    export_model(model, x[:1], tmp_path / "plain.pt2", fold=False)

    def batchnorms(path):
        program = torch.export.load(str(path))
        return sum("batch_norm" in str(n.target) for n in program.graph.nodes)

    assert batchnorms(tmp_path / "plain.pt2") > 0
    assert batchnorms(tmp_path / "folded.pt2") == 0
    folded = torch.export.load(str(tmp_path / "folded.pt2")).module()
    with torch.no_grad():
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-5)
