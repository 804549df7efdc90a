"""Every built-in compression kind's operator on every zoo model, through the package's
OperatorSuite; then all kinds at once through ``compress``."""
from __future__ import annotations

import random

import pytest

from autocompress.compress import compress
from autocompress.evaluators import measure_costs
from autocompress.models import zoo
from autocompress.spaces import build_space
from autocompress.testing import OperatorSuite


@pytest.fixture(params=sorted(zoo.MODELS), scope="module")
def model_and_input(request):
    return zoo.MODELS[request.param].factory(), zoo.example_input(request.param)


class TestChannelPruning(OperatorSuite):
    kind = "channels"


class TestUnstructuredSparsity(OperatorSuite):
    kind = "sparsity"


class TestTwoFourSparsity(OperatorSuite):
    kind = "sparsity"
    space_options = {"sparsity_pattern": "2:4"}


class TestBlockSparsity(OperatorSuite):
    kind = "sparsity"
    space_options = {"sparsity_pattern": "4x4"}


class TestTuckerRank(OperatorSuite):
    kind = "rank"


class TestSpatialRank(OperatorSuite):
    kind = "rank"
    space_options = {"conv_decomposition": "spatial"}


class TestBitWidth(OperatorSuite):
    kind = "bits"


@pytest.mark.parametrize("seed", [0, 1])
def test_every_kind_at_once_costs_what_the_space_predicts(model_and_input, seed):
    model, example = model_and_input
    space = build_space(model, example)
    rng = random.Random(seed)
    candidate = {k.name: rng.uniform(k.low, (k.low + k.high) / 2) for k in space.knobs}
    settings = space.resolve(candidate)
    assert space.cost(settings) == measure_costs(compress(model, space, settings, example), example)
