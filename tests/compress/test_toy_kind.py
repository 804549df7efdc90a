"""A new compression kind is one Kind subclass with its Operator, registered once: it is
then searched, applied, saved in recipes, validated and replayed like the built-in ones."""
from __future__ import annotations

import pytest
import torch
import yaml
from torch.nn.utils import parametrize

import autocompress as ac
from autocompress.compress import Operator, WeightMask
from autocompress.core.errors import RecipeError
from autocompress.core.kinds import Kind, is_whole, register_kind, unregister_kind
from autocompress.core.space import Knob
from autocompress.models.demo import DemoNet
from autocompress.testing import OperatorSuite


class ZeroRows(Operator):
    """Zero the ``zero_rows`` output rows of smallest L2 norm of each layer's weight."""

    def needed(self, settings, space) -> bool:
        return any(s.get("zero_rows") for s in settings.values())

    def apply(self, model, space, settings, example_input) -> None:
        for name, s in settings.items():
            if s.get("zero_rows"):
                module = model.get_submodule(name)
                rows = module.weight.detach().flatten(1)
                drop = torch.argsort(rows.norm(dim=1), stable=True)[: s["zero_rows"]]
                mask = torch.ones_like(rows)
                mask[drop] = 0.0
                pattern = f"1x{rows.shape[1]}"  # whole rows: a 1 x cols block, one index bit per row
                parametrize.register_parametrization(module, "weight", WeightMask(mask.view_as(module.weight), pattern))


class ZeroRowsKind(Kind):
    """Zero whole output rows of Conv2d and Linear weights: the knob's density is the kept
    fraction of rows; field ``zero_rows``, the rows zeroed.  Lowers params and size."""

    name = "zero_rows"
    fields = ("zero_rows",)
    operator = ZeroRows()

    def knobs(self, layers, groups, **options):
        return [Knob(self.name, layer.name, 0.25) for layer in layers if layer.kind != "attention"]

    def resolve(self, space, candidate, settings):
        for knob in space.knobs:
            if knob.kind == self.name and candidate.get(knob.name, 1.0) < 1.0:
                entry = settings[knob.target]
                zero = int(entry["out_channels"] * (1.0 - candidate[knob.name]))
                if zero:
                    entry["zero_rows"] = zero

    def validate_field(self, layer, field, value):
        if not is_whole(value):
            raise RecipeError(f"layer {layer!r} zero_rows must be a whole number >= 1, got {value!r}")

    def check(self, space, layer, settings, shape):
        zero = settings.get("zero_rows")
        if zero and (zero >= shape[0] or settings.get("sparsity") or settings.get("rank")):
            raise RecipeError(f"layer {layer.name} cannot zero {zero} of its {shape[0]} rows together with "
                              "a sparsity or a rank; keep at least one row and leave it dense")

    def ops(self, layer, settings, ops):
        zero = settings.get("zero_rows")
        if not zero:
            return ops
        (op,) = ops
        return [op.evolve(sparsity=zero / (op.n * op.groups), pattern=f"1x{op.k}")]


@pytest.fixture
def toy_kind():
    kind = register_kind(ZeroRowsKind())
    yield kind
    unregister_kind(kind.name)


def test_a_new_kind_is_searched_applied_saved_validated_and_replayed(toy_kind, tmp_path):
    result = ac.search(budget="params=0.8", knobs=("zero_rows",), trials=2, out=tmp_path, progress=False,
                       final_finetune_steps=0, strategy="random")
    layers = result.recipe.layers
    assert any(s.get("zero_rows") for s in layers.values())
    assert all(set(s) <= {"out_channels", "sparsity", "zero_rows"} for s in layers.values())
    compressed = result.recipe.metrics["compressed"]
    assert compressed["params"] <= 0.8 * result.recipe.metrics["base"]["params"]

    path = tmp_path / "toy.yaml"
    result.recipe.save(path)
    model, metrics = ac.apply(path)
    for metric in ("flops", "params", "size"):
        assert metrics[metric] == compressed[metric], metric

    data = yaml.safe_load(path.read_text())
    name = next(n for n, s in data["layers"].items() if s.get("zero_rows"))
    data["layers"][name]["zero_rows"] = "half"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(RecipeError, match=f"layer '{name}' zero_rows must be a whole number >= 1, got 'half'"):
        ac.Recipe.load(path)


def test_the_kind_is_gone_once_unregistered(tmp_path):
    data = {"schema": 1, "model": {"fingerprint": "x"}, "budget": [], "layers": {"a": {"zero_rows": 2}}}
    with pytest.raises(RecipeError, match="unknown operator 'zero_rows'"):
        ac.Recipe.from_dict(data)


@pytest.fixture(scope="module")
def model_and_input():
    return DemoNet().eval(), torch.randn(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))


class TestZeroRowsOperator(OperatorSuite):
    kind = ZeroRowsKind()
