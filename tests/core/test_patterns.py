from __future__ import annotations

import pytest

from autocompress.core.patterns import density_for_rank, rank_for, rank_step


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
