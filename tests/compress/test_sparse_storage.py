"""Very sparse layers (issue 15): densities down to 0.5% per layer, stored by relative
indices where that is smaller than a bitmap, with predicted and measured sizes equal."""
from __future__ import annotations

import pytest
import torch.nn as nn

from autocompress.compress import compress
from autocompress.compress.masks import SPARSITY_LOW_DENSITY
from autocompress.core.patterns import relative_index_bits, weight_bits, zeroed_weights
from autocompress.core.projection import check_reachable
from autocompress.evaluators import measure_costs
from autocompress.models import zoo
from autocompress.spaces import build_space


def _lenet300_100():
    model, x = zoo.lenet300_100(), zoo.example_input("lenet300_100")
    return model, x, build_space(model, x).restrict(("sparsity", "bits"))


def test_sparsity_knobs_reach_half_a_percent_and_lenet300_100_reaches_fifty_times():
    model, x, space = _lenet300_100()
    sparsity = space.restrict(("sparsity",))
    assert {k.low for k in sparsity.knobs} == {SPARSITY_LOW_DENSITY} == {0.005}
    base = space.candidate_cost(space.neutral())
    most = sparsity.candidate_cost(sparsity.most_compressed())
    assert most["params"] / base["params"] < 0.02  # 50x fewer weights: it was refused at 0.051
    check_reachable(sparsity, {"params": 0.02 * base["params"]}, base)


@pytest.mark.parametrize("density,bits", [(0.005, 1.0), (0.02, 1.0), (0.03, 0.25), (0.2, 0.25), (0.6, 1.0)])
def test_predicted_size_is_the_measured_size_of_a_sparse_model(density, bits):
    model, x, space = _lenet300_100()
    candidate = {k.name: density if k.kind == "sparsity" else bits for k in space.knobs}
    settings = space.resolve(candidate)
    small = compress(model, space, settings, x)
    assert space.cost(settings) == measure_costs(small, x)


def test_a_very_sparse_model_is_stored_by_relative_indices():
    model, x, space = _lenet300_100()
    settings = space.resolve({k.name: 0.01 for k in space.knobs if k.kind == "sparsity"})
    small = compress(model, space, settings, x)
    weights = [m.weight for m in (model.fc1, model.fc2, model.head)]
    nnz = [w.numel() - zeroed_weights(*w.shape, settings[name]["sparsity"])
           for name, w in zip(("fc1", "fc2", "head"), weights)]
    bitmap = sum(n * 32 + w.numel() for n, w in zip(nnz, weights))
    relative = sum(relative_index_bits(w.numel(), n, 32) for n, w in zip(nnz, weights))
    assert relative < bitmap
    stored = sum(weight_bits(w.shape[0], w.shape[1], n, 32) for n, w in zip(nnz, weights))
    assert stored == relative
    biases = sum(m.bias.numel() for m in small.modules() if isinstance(m, nn.Linear))
    assert measure_costs(small, x)["size"] == -(-(stored + 32 * biases) // 8)
