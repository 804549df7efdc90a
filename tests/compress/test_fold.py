from __future__ import annotations

import logging

import pytest
import torch
import torch.nn as nn

from autocompress.compress.export import export_model
from autocompress.compress.fold import fold_batchnorm
from autocompress.models import zoo
from autocompress.models.demo import DemoNet


def _randomise_batchnorm(model: nn.Module) -> nn.Module:
    torch.manual_seed(0)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.normal_()
            m.bias.data.normal_()
    return model.eval()


def _conv_fed_batchnorms(model: nn.Module) -> list[str]:
    """Names of BatchNorm2d modules that come right after a Conv2d in a Sequential or a
    ``convN``/``bnN`` pair: the ones every zoo model and the demo fold."""
    found = []
    for name, module in model.named_modules():
        children = list(module.named_children())
        for (_, first), (second_name, second) in zip(children, children[1:]):
            if isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d):
                found.append(f"{name}.{second_name}".lstrip("."))
    return found


def test_demo_model_folds_every_batchnorm_and_keeps_its_outputs():
    model = _randomise_batchnorm(DemoNet())
    folded = fold_batchnorm(model)
    x = torch.randn(8, 1, 8, 8)
    torch.testing.assert_close(folded(x), model(x), rtol=1e-5, atol=1e-5)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) == 6  # the original is untouched


@pytest.mark.parametrize("name", list(zoo.MODELS))
def test_zoo_models_keep_their_outputs(name):
    model = zoo.MODELS[name].factory()
    x = zoo.example_input(name, batch=4)
    with torch.no_grad():
        # float32 rounding alone moves these logits (|y| up to ~9) by up to ~4e-5, folded or not,
        # so the exact check is in float64 and float32 gets float32's tolerance
        torch.testing.assert_close(fold_batchnorm(model.double())(x.double()), model(x.double()), rtol=1e-5, atol=1e-5)
        model.float()
        folded = fold_batchnorm(model)
        torch.testing.assert_close(folded(x), model(x), rtol=1e-4, atol=1e-4)
    for bn_name in _conv_fed_batchnorms(model):
        assert isinstance(folded.get_submodule(bn_name), nn.Identity), bn_name


def test_resnet20_has_no_batchnorm_left():
    folded = fold_batchnorm(zoo.resnet20())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert folded.stem[0].bias is not None


class PreActivation(nn.Module):
    """BatchNorm after a concatenation, and a conv whose output also feeds a residual add."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.side = nn.Conv2d(4, 4, 1)
        self.bn_cat = nn.BatchNorm2d(8)

    def forward(self, x):
        y = self.conv(x)
        y = self.bn(y) + y
        return self.bn_cat(torch.cat([y, self.side(y)], dim=1))


def test_batchnorm_is_kept_where_the_conv_output_is_shared_or_no_conv_precedes_it():
    model = _randomise_batchnorm(PreActivation())
    folded = fold_batchnorm(model)
    assert isinstance(folded.bn, nn.BatchNorm2d) and isinstance(folded.bn_cat, nn.BatchNorm2d)
    x = torch.randn(2, 4, 5, 5)
    torch.testing.assert_close(folded(x), model(x))


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.bn = nn.BatchNorm2d(4)

    def forward(self, x):
        if x.sum() > 0:  # Python control flow on a tensor value: fx cannot trace it
            x = -x
        return self.bn(self.conv(x))


def test_untraceable_model_comes_back_unfolded_with_one_warning(caplog):
    model = _randomise_batchnorm(DataDependent())
    with caplog.at_level(logging.WARNING, logger="autocompress.compress.fold"):
        folded = fold_batchnorm(model)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "cannot trace DataDependent" in warnings[0].getMessage()
    assert folded is not model and isinstance(folded.bn, nn.BatchNorm2d) and not folded.training
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(folded(x), model(x), rtol=0, atol=0)


def test_training_model_is_folded_as_in_eval_mode_and_left_training():
    model = _randomise_batchnorm(DemoNet()).train()
    folded = fold_batchnorm(model)
    assert model.training and not folded.training
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(folded(x), model.eval()(x), rtol=1e-5, atol=1e-5)


def test_folded_model_exports_and_reloads(tmp_path):
    model = zoo.resnet20()
    folded = fold_batchnorm(model)
    path = tmp_path / "folded.pt2"
    export_model(folded, zoo.example_input("resnet20"), path)
    loaded = torch.export.load(str(path)).module()
    x = zoo.example_input("resnet20", batch=5)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-4, atol=1e-4)  # float32, as above
