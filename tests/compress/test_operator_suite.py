"""Every operator on every zoo model, through the package's OperatorSuite."""
from __future__ import annotations

import pytest

from autocompress import zoo
from autocompress.testing import OperatorSuite


@pytest.fixture(params=sorted(zoo.MODELS), scope="module")
def model_and_input(request):
    return zoo.MODELS[request.param].factory(), zoo.example_input(request.param)


class TestChannelPruning(OperatorSuite):
    kinds = ("channels",)


class TestUnstructuredSparsity(OperatorSuite):
    kinds = ("sparsity",)


class TestTwoFourSparsity(OperatorSuite):
    kinds = ("sparsity",)
    space_options = {"sparsity_pattern": "2:4"}


class TestBlockSparsity(OperatorSuite):
    kinds = ("sparsity",)
    space_options = {"sparsity_pattern": "4x4"}


class TestTuckerRank(OperatorSuite):
    kinds = ("rank",)


class TestSpatialRank(OperatorSuite):
    kinds = ("rank",)
    space_options = {"conv_decomposition": "spatial"}


class TestBitWidth(OperatorSuite):
    kinds = ("bits",)


class TestEverythingAtOnce(OperatorSuite):
    kinds = ("channels", "sparsity", "rank", "bits")
