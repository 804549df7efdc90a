from __future__ import annotations

import functools
import math
import random

import pytest
import torch
import torch.nn as nn

from autocompress.compress import compress
from autocompress.compress.export import export_model
from autocompress.core.space import Space
from autocompress.evaluators import accuracy, measure_costs
from autocompress.models import zoo
from autocompress.spaces import build_space

LIBRARY_FAILURES: dict[tuple[str, str], str] = {}


def models(test: str) -> list:
    """Every zoo model, with a strict xfail where the library (not the zoo) fails ``test``."""
    return [
        pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=LIBRARY_FAILURES[name, test]))
        if (name, test) in LIBRARY_FAILURES else name
        for name in zoo.MODELS
    ]


@functools.cache
def base(name: str) -> nn.Module:
    return zoo.MODELS[name].factory()


@functools.cache
def space(name: str) -> Space:
    return build_space(base(name), zoo.example_input(name))


@functools.cache
def compressed(name: str, seed: int) -> tuple[nn.Module, dict]:
    """A compressed copy for a seeded random candidate: every knob uniform in [low, 1]."""
    rng = random.Random(seed)
    candidate = {k.name: rng.uniform(k.low, 1.0) for k in space(name).knobs}
    settings = space(name).resolve(candidate)
    return compress(base(name), space(name), settings, zoo.example_input(name)), settings


@pytest.mark.parametrize("name", models("forward"))
def test_forward_gives_ten_logits_per_sample(name):
    for batch in (1, 3):
        out = base(name)(zoo.example_input(name, batch))
        assert out.shape == (batch, 10) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", models("deterministic"))
def test_factory_is_deterministic_and_leaves_the_callers_seed_alone(name):
    torch.manual_seed(123)
    first = zoo.MODELS[name].factory()
    after = torch.rand(3)
    torch.manual_seed(123)
    second = zoo.MODELS[name].factory()
    assert torch.equal(torch.rand(3), after)
    a, b = first.state_dict(), second.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not first.training


@pytest.mark.parametrize("name", models("data"))
def test_data_is_labelled_confidently_by_the_model_itself(name):
    splits = zoo.labelled_data(name, sizes=(128, 64, 64))
    assert [len(s.x) for s in splits] == [128, 64, 64]
    x, y = next(iter(splits[0]))
    assert x.shape == (zoo.BATCH_SIZE, *zoo.MODELS[name].input_shape) and y.dtype == torch.int64
    for split in splits:
        assert accuracy(base(name), split) == 100.0
    with torch.no_grad():
        top = base(name)(splits[1].x).topk(2, dim=1).values
    assert (top[:, 0] - top[:, 1]).min() >= zoo.MARGIN - 1e-3  # no rounding difference flips a label
    counts = torch.bincount(splits[2].y, minlength=10)
    assert counts.max() <= math.ceil(zoo.MAX_CLASS_SHARE * 64) and int((counts > 0).sum()) >= 5


def test_every_model_has_a_data_function(monkeypatch):
    monkeypatch.setattr(zoo, "labelled_data", lambda name: name)
    assert all(getattr(zoo, f"{name}_data")() == name for name in zoo.MODELS)


def test_data_functions_give_the_default_splits():
    splits = zoo.lenet5_data()
    assert [len(s.x) for s in splits] == list(zoo.SPLIT_SIZES)
    assert [len(s) for s in splits] == [-(-n // zoo.BATCH_SIZE) for n in zoo.SPLIT_SIZES]
    assert all(accuracy(base("lenet5"), split) == 100.0 for split in splits)


def test_unknown_model_names_the_known_ones():
    with pytest.raises(KeyError, match="resnet20"):
        zoo.example_input("resnet21")


@pytest.mark.parametrize("name", models("searched"))
def test_every_conv_and_linear_is_searched_or_excluded(name):
    searched = {layer.name for layer in space(name).layers} | set(space(name).excluded)
    weighted = {n for n, m in base(name).named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert weighted <= searched


@pytest.mark.parametrize("name", models("neutral"))
def test_neutral_compression_changes_nothing(name):
    model = base(name)
    neutral = compress(model, space(name), space(name).resolve(space(name).neutral()), zoo.example_input(name))
    batch = zoo.example_input(name, 3)
    assert torch.equal(neutral(batch), model(batch))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("name", models("candidates"))
def test_random_candidates_run_and_cost_exactly_what_the_space_predicts(name, seed):
    small, settings = compressed(name, seed)
    assert small(zoo.example_input(name, 3)).shape == (3, 10)
    assert space(name).cost(settings) == measure_costs(small, zoo.example_input(name))


@pytest.mark.parametrize("name", models("export"))
def test_compressed_model_exports_with_a_dynamic_batch(name, tmp_path):
    small, _ = compressed(name, 0)
    path = tmp_path / f"{name}.pt2"
    export_model(small, zoo.example_input(name), path)
    loaded = torch.export.load(str(path)).module()
    for batch in (1, 4):
        x = zoo.example_input(name, batch)
        with torch.no_grad():
            torch.testing.assert_close(loaded(x), small(x))


def layer_flops(model: nn.Module, example_input: torch.Tensor) -> int:
    """FLOPs (2 per multiply-accumulate) of every Conv2d, Linear and self-attention call."""
    total = 0

    def count(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.MultiheadAttention):
            n, length, dim = inputs[0].shape  # q, k, v and out projections; scores and weighted sum
            total += 2 * n * length * dim * 4 * dim + 2 * 2 * n * length * length * dim
        elif isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += 2 * output.numel() * module.in_channels // module.groups * kh * kw
        else:
            total += 2 * output.numel() * module.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (nn.Conv2d, nn.Linear, nn.MultiheadAttention))]
    try:
        with torch.no_grad():
            model(example_input)
    finally:
        for hook in hooks:
            hook.remove()
    return total


@pytest.mark.parametrize("name", models("flops"))
def test_measured_flops_count_every_layer(name):
    model, x = base(name), zoo.example_input(name)
    assert measure_costs(model, x)["flops"] == layer_flops(model, x)


@pytest.mark.parametrize("name", models("ops"))
def test_every_op_has_the_shape_of_the_module_compress_builds(name):
    """What latency models see (``space_ops``) is what runs: a pruned depthwise convolution
    once kept its original input count here (and the measured model could not build it)."""
    from autocompress.compress import bake
    from autocompress.core.ops import space_ops

    for seed in range(3):
        model, settings = compressed(name, seed)
        modules = dict(bake(model).named_modules())
        for op in space_ops(space(name), settings):
            module = modules.get(op.layer)
            if isinstance(module, nn.Conv2d):
                assert (op.in_channels, op.groups) == (module.in_channels, module.groups), op.layer
                assert op.n * op.groups == module.out_channels, op.layer
            elif isinstance(module, nn.Linear):
                assert (op.k, op.n) == (module.in_features, module.out_features), op.layer
