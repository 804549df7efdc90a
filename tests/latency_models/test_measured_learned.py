from __future__ import annotations

import math

import numpy as np
import pytest

from autocompress.cli import main
from autocompress.latency_models import load_latency_model
from autocompress.latency_models.learned import (LearnedLatency, export_regressor, features, fit_regressor,
                                                 random_op)
from autocompress.latency_models.measured import MeasuredLatency
from autocompress.testing import LatencyModelSuite


def synthetic_ms(op, batch):
    """A made-up device: launch cost plus work, so fits can be checked without timing."""
    return 0.01 + 2e-9 * batch * op.flops + 1e-8 * batch * op.in_positions * op.in_channels


def _samples(kind, n, seed):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        op, batch = random_op(kind, rng), int(rng.choice([1, 8, 32]))
        out.append((op, batch, synthetic_ms(op, batch)))
    return out


@pytest.fixture(scope="module")
def learned():
    from autocompress.latency_models.learned import fit_kind

    return LearnedLatency("synthetic", "test", {k: fit_kind(_samples(k, 200, i)) for i, k in
                                               enumerate(("conv", "pointwise", "depthwise", "linear"))})


class TestLearned(LatencyModelSuite):
    @pytest.fixture
    def latency_model(self, learned):
        return learned


class TestMeasured(LatencyModelSuite):
    monotone_slack = 0.5  # timing noise on a shared 2-core machine

    @pytest.fixture
    def latency_model(self, tmp_path):
        return MeasuredLatency("cpu", cache=str(tmp_path / "cache.json"), repeats=5, warmup=2)

    def test_more_work_is_never_faster(self, latency_model, ops):
        # A measured model times real kernels on a shared machine: doubling a field of an op
        # whose geometry stays the same times the same kernel twice, so only a large step in
        # work is checked (32x the batch), not the suite's 2x steps.
        for op in ops[:4]:
            assert latency_model.predict_op(op, 32) >= latency_model.predict_op(op, 1) * (1 - self.monotone_slack)


def test_json_trees_predict_what_scikit_learn_predicts():
    samples = _samples("conv", 150, 0)
    regressor = fit_regressor(samples)
    model = LearnedLatency("x", "", {"conv": export_regressor(regressor, len(samples))})
    rng = np.random.default_rng(5)
    for _ in range(30):
        op, batch = random_op("conv", rng), 8
        expected = math.exp(regressor.predict(np.array([features(op, batch)]))[0])
        assert math.isclose(model.predict_op(op, batch), expected, rel_tol=1e-9)


def test_learned_model_generalises_to_held_out_ops(learned):
    rng = np.random.default_rng(123)
    errors = []
    for kind in ("conv", "pointwise", "depthwise", "linear"):
        for _ in range(50):
            op, batch = random_op(kind, rng), int(rng.choice([1, 8, 32]))
            errors.append(abs(learned.predict_op(op, batch) / synthetic_ms(op, batch) - 1))
    assert np.mean(errors) < 0.1  # on a noiseless device a good fit is within 10% on average


def test_measured_ops_are_cached_on_disk(tmp_path, monkeypatch):
    model = MeasuredLatency("cpu", cache=str(tmp_path / "cache.json"), repeats=3, warmup=1)
    op = random_op("conv", np.random.default_rng(0))
    first = model.predict_op(op, 2)
    assert first > 0
    again = MeasuredLatency("cpu", cache=str(tmp_path / "cache.json"))
    monkeypatch.setattr(again, "measure", lambda *a: pytest.fail("measured again instead of reading the cache"))
    assert again.predict_op(op, 2) == first


def test_profile_command_saves_a_model_that_loads(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "cpu.json"
    assert main(["profile", "--samples", "10", "--rounds", "0", "--out", str(out)]) == 0
    model = load_latency_model(out)
    op = random_op("pointwise", np.random.default_rng(1))
    assert model.predict_op(op, 1) > 0
    assert "saved to" in capsys.readouterr().out


def test_calibration_fits_whole_model_measurements(learned):
    from autocompress.latency_models.calibrated import CalibratedLatency

    model = CalibratedLatency.fit(learned, [(1.0, 3.0), (2.0, 5.0), (4.0, 9.0)])
    assert model.a == pytest.approx(1.0) and model.b == pytest.approx(2.0)
    inverted = CalibratedLatency.fit(learned, [(1.0, 3.0), (2.0, 1.0)])  # slope <= 0: a scale instead
    assert inverted.a == 0 and inverted.b > 0
    negative = CalibratedLatency.fit(learned, [(10.0, 8.0), (20.0, 20.0)])  # a = -4
    op = random_op("conv", np.random.default_rng(2))
    assert negative.total([op], 1) > 0  # floored, never negative
    report = model.predict([op], 1)
    assert report.rows[-1]["layer"] == "(rest of the model)" and report.total_ms == pytest.approx(model.total([op]))


class TestCalibrated(LatencyModelSuite):
    @pytest.fixture
    def latency_model(self, learned):
        from autocompress.latency_models.calibrated import CalibratedLatency

        return CalibratedLatency.fit(learned, [(1.0, 1.5), (3.0, 3.5)])

    def test_report_has_a_row_per_op_and_sums_them(self, latency_model, ops):
        report = latency_model.predict(ops, 2)
        assert len(report.rows) == len(ops) + 1  # plus the rest of the model
        assert report.total_ms == pytest.approx(latency_model.total(ops, 2))


@pytest.mark.parametrize("kind", ["conv", "pointwise", "depthwise", "linear"])
def test_profiling_samples_are_of_the_kind_they_are_fitted_for(kind):
    """A 1-channel "depthwise" sample is an ordinary convolution: profiling once fitted the
    depthwise regressor on it and then asked a conv regressor it did not have."""
    from autocompress.latency_models.learned import _neighbour, op_kind, random_op

    rng = np.random.default_rng(0)
    for _ in range(500):
        op = random_op(kind, rng)
        assert op_kind(op) == kind and op_kind(_neighbour(op, rng)) == kind
