from __future__ import annotations

import math

import pytest

from autocompress.core.errors import BudgetError
from autocompress.core.ops import Op
from autocompress.latency_models import SystolicArray, get_latency_model, presets
from autocompress.testing import LatencyModelSuite


@pytest.fixture(params=list(presets()))
def latency_model(request):
    return get_latency_model(request.param)


class TestEveryPreset(LatencyModelSuite):
    pass


def test_every_named_target_of_the_issue_is_selectable():
    for name in ("h100", "a100", "rtx4090", "jetson-agx-orin", "jetson-orin-nano", "xavier-nx", "jetson-nano",
                 "eyeriss", "tpu-v1"):
        assert get_latency_model(name).name == name


# Hand-computed SCALE-Sim cycles: Npix = 49 output pixels, W = 27 (3x3x3), M = 20 filters.
OP = Op("conv", "conv", m=49, n=20, k=27, in_positions=81, in_channels=3)


@pytest.mark.parametrize("dataflow,expected", [
    # OS: spatial (Npix, M) = (49, 20) on 8x8 -> ceil(49/8)=7 x ceil(20/8)=3 = 21 folds, T = W = 27,
    #     per fold 27 + 8 + 8 - 2 = 41 -> 861
    ("os", 21 * 41),
    # WS: spatial (W, M) = (27, 20) -> 4 x 3 = 12 folds, T = Npix = 49, per fold 2*8 + 8 + 49 - 2 = 71 -> 852
    ("ws", 12 * 71),
    # IS: spatial (W, Npix) = (27, 49) -> 4 x 7 = 28 folds, T = M = 20, per fold 16 + 8 + 20 - 2 = 42 -> 1176
    ("is", 28 * 42),
])
def test_systolic_cycles_match_hand_computed_counts(dataflow, expected):
    array = SystolicArray("toy", rows=8, cols=8, dataflow=dataflow, clock_mhz=100)
    assert array.cycles(OP) == expected
    assert math.isclose(array.predict_op(OP), expected / 100e3)  # 100 MHz -> ms


def test_zero_skipping_and_bit_scaling_only_where_the_hardware_has_them():
    sparse = Op("conv", "conv", m=49, n=20, k=27, sparsity=0.5, bits=4)
    plain = SystolicArray("a", rows=8, cols=8, dataflow="ws", clock_mhz=100, native_bits=8)
    clever = SystolicArray("b", rows=8, cols=8, dataflow="ws", clock_mhz=100, native_bits=8, bit_scaling=True,
                           zero_skipping=True)
    assert plain.cycles(sparse) == plain.cycles(OP)
    # zero skipping: W = ceil(27 * 0.5) = 14 -> 2 row folds; 4-bit packs 2 per PE -> 16 columns -> 2 col folds
    assert clever.cycles(sparse) == 2 * 2 * (2 * 8 + 16 + 49 - 2)


def test_gpu_roofline_sees_tile_quantisation_and_2_4_sparsity():
    h100 = get_latency_model("h100")
    big = Op("l", "conv", m=4096, n=128, k=1152, in_positions=4096, in_channels=128)
    just_above = Op("l", "conv", m=4096, n=129, k=1152, in_positions=4096, in_channels=129)
    assert h100.predict_op(just_above, 64) > 1.3 * h100.predict_op(big, 64)  # a second column of tiles
    sparse = Op("l", "conv", m=4096, n=128, k=1152, in_positions=4096, in_channels=128, sparsity=0.5, pattern="2:4")
    unstructured = Op("l", "conv", m=4096, n=128, k=1152, in_positions=4096, in_channels=128, sparsity=0.5)
    assert h100.predict_op(sparse, 64) < h100.predict_op(big, 64)
    assert h100.predict_op(unstructured, 64) == h100.predict_op(big, 64)
    nano = get_latency_model("jetson-nano")  # no sparse tensor cores
    assert nano.predict_op(sparse, 64) == nano.predict_op(big, 64)


def test_a_user_device_file_works_and_bad_files_are_named(tmp_path):
    good = tmp_path / "my-npu.yaml"
    good.write_text("kind: systolic\nrows: 32\ncols: 32\ndataflow: os\nclock_mhz: 500\n")
    assert get_latency_model(str(good)).name == "my-npu"
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: gpu\nsms: 10\n")
    with pytest.raises(BudgetError, match="lacks the field"):
        get_latency_model(str(bad))
    bad.write_text("kind: systolic\nrows: 32\ncols: 32\ndataflow: diagonal\nclock_mhz: 5\n")
    with pytest.raises(BudgetError, match="dataflow"):
        get_latency_model(str(bad))
    with pytest.raises(BudgetError, match="unknown latency target 'tpu-v9'"):
        get_latency_model("tpu-v9")
