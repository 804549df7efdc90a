from __future__ import annotations

import random

import pytest

from autocompress.core.patterns import (
    INDEX_BITS,
    density_for_rank,
    rank_for,
    rank_step,
    relative_index_bits,
    weight_bits,
)


@pytest.mark.parametrize("even", [2, 3, 9, 15, 16, 17, 29, 33, 57, 58, 64, 200])
def test_density_for_rank_is_the_inverse_of_rank_for(even):
    step = rank_step(even)
    for rank in range(step, even, step):
        density = density_for_rank(rank, even)
        assert 0 < density < 1
        assert rank_for(density, even) == rank
    assert rank_for(density_for_rank(0, even), even) == 0


@pytest.mark.parametrize("rank,even", [(12, 58), (56, 56), (64, 58), (-8, 58), (3, 3)])
def test_density_for_rank_refuses_ranks_rank_for_never_gives(rank, even):
    with pytest.raises(ValueError, match=f"rank {rank} "):
        density_for_rank(rank, even)


def test_a_very_sparse_layer_is_stored_by_relative_indices():
    # 2 of 100 weights kept at 32 bits: dense 3200, bitmap 2 * 32 + 100 = 164; relative
    # index at k = 7 gaps: floor(98 / 128) = 0 fillers, 2 * (32 + 7) = 78 (k = 6: 3 * 38 = 114)
    assert relative_index_bits(100, 2, 32) == 78
    assert weight_bits(1, 100, 2, 32) == 78
    # 8-bit values, 10 of 1000 kept: k = 10 needs no filler, 10 * 18 = 180 (k = 9: 11 * 17 = 187)
    assert relative_index_bits(1000, 10, 8) == min((10 + 990 // 2**k) * (8 + k) for k in INDEX_BITS) == 180
    assert weight_bits(10, 100, 10, 8) == 180 < 10 * 8 + 1000
    # 4-bit values, 50 of 1000 kept: k = 7 with floor(950 / 128) = 7 fillers, 57 * 11 = 627
    # (k = 6: 64 * 10 = 640, k = 8: 53 * 12 = 636); the bitmap needs 50 * 4 + 1000 = 1200
    assert weight_bits(20, 50, 50, 4) == 627


def test_a_half_dense_layer_keeps_the_bitmap_and_a_dense_one_stays_dense():
    # 50 of 100 kept: bitmap 50 * 32 + 100 = 1700; relative index at best 51 * 37 = 1887
    assert relative_index_bits(100, 50, 32) == 1887
    assert weight_bits(10, 10, 50, 32) == 1700
    assert weight_bits(10, 10, 100, 32) == 3200
    assert weight_bits(10, 10, 99, 32) == 3200  # one zero: neither index pays for itself


def _relative_index_entries(mask: list[int], k: int) -> int:
    """Entries a real relative-index encoding of ``mask`` stores with k-bit gaps."""
    entries, run = 0, 0
    for kept in mask:
        if kept:
            entries += 1 + run // 2**k
            run = 0
        else:
            run += 1
    return entries  # trailing zeros need no entry: the length is known


@pytest.mark.parametrize("seed", range(5))
def test_relative_index_bits_bound_every_arrangement_of_the_zeros(seed):
    rng = random.Random(seed)
    numel = 500
    mask = [int(rng.random() < 0.03) for _ in range(numel)] + [1]
    nnz = sum(mask)
    best_real = min(_relative_index_entries(mask, k) * (8 + k) for k in INDEX_BITS)
    assert best_real <= relative_index_bits(len(mask), nnz, 8)
    worst = [0] * (len(mask) - nnz) + [1] * nnz  # every zero in one leading run: the bound is met
    assert min(_relative_index_entries(worst, k) * (8 + k) for k in INDEX_BITS) == relative_index_bits(
        len(mask), nnz, 8)
