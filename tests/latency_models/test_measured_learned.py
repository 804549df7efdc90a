from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from autocompress.cli.main import main
from autocompress.core.errors import BudgetError
from autocompress.latency_models import load_latency_model
from autocompress.latency_models.learned import (
    GLUE_TERMS,
    KINDS,
    LearnedLatency,
    export_regressor,
    features,
    fit_glue,
    fit_regressor,
    glue_features,
    random_op,
)
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

    return LearnedLatency("synthetic", "test", {k: fit_kind(_samples(k, 200, i)) for i, k in enumerate(KINDS)})


class TestLearned(LatencyModelSuite):
    @pytest.fixture
    def latency_model(self, learned):
        return learned


GLUE = {"c0": 0.05, "c_ops": 0.01, "c_elements": 0.002, "c_in_elements": 0.001, "c_gathered": 0.003}


class TestLearnedWithWhatRunsBetweenTheLayers(LatencyModelSuite):
    @pytest.fixture
    def latency_model(self, learned):
        return LearnedLatency("glued", "test", learned.kinds, glue=GLUE)

    def test_report_has_a_row_per_op_and_sums_them(self, latency_model, ops):
        report = latency_model.predict(ops, 2)
        assert len(report.rows) == len(ops) + 1 and report.rows[-1]["layer"] == "(between the layers)"
        assert report.total_ms == pytest.approx(latency_model.total(ops, 2))
        assert report.total_ms > sum(latency_model.predict_op(op, 2) for op in ops)


def _whole_models(learned, rng, glue):
    """Made-up whole models: the learned ops plus a known between-the-layers time."""
    samples = []
    for i in range(12):
        ops = [dataclasses.replace(random_op(k, rng), gathers=j % 3 == 0)  # some read a concatenation
               for j, k in enumerate(k for k in KINDS for _ in range(i % 4 + 1))]
        batch = (1, 8, 32)[i % 3]
        rest = float(np.dot([glue[name] for name in GLUE_TERMS], [1.0, *glue_features(ops, batch)]))
        samples.append((ops, batch, learned.total(ops, batch) + rest))
    return samples


def test_what_runs_between_the_layers_is_fitted_on_whole_models(learned):
    samples = _whole_models(learned, np.random.default_rng(3), GLUE)
    glue = fit_glue(learned, samples)
    assert {k: glue[k] for k in GLUE} == pytest.approx(GLUE) and glue["models"] == 12
    model = LearnedLatency("glued", "test", learned.kinds, glue=glue)
    for ops, batch, ms in samples:
        assert model.total(ops, batch) == pytest.approx(ms)
    # whole models faster than their ops alone: nothing between the layers, never negative
    faster = [(ops, batch, 0.8 * learned.total(ops, batch))
              for ops, batch, _ in _whole_models(learned, np.random.default_rng(4), GLUE)]
    assert all(v == 0 for k, v in fit_glue(learned, faster).items() if k != "models")


def test_a_model_fitted_on_older_features_is_refused_and_ops_are_timed_instead(learned, tmp_path, monkeypatch,
                                                                                caplog):
    from autocompress.latency_models import get_latency_model
    from autocompress.latency_models.measured import device_key
    from autocompress.latency_models.registry import learned_path

    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path))
    data = LearnedLatency("old", device_key("cpu"), learned.kinds).to_dict()
    del data["params"]["features"]  # as saved before features were versioned
    path = learned_path("cpu")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(data))
    with pytest.raises(BudgetError, match="features of version 1 .*run `autocompress profile` again"):
        load_latency_model(path)
    assert isinstance(get_latency_model("cpu"), MeasuredLatency)
    assert "autocompress profile" in caplog.text


def test_padded_channels_let_the_trees_learn_the_kernels_blocks():
    """On a made-up device whose convolutions cost what their channels padded to blocks of 8
    cost (as oneDNN's AVX2 kernels do), the fit follows the steps."""
    from autocompress.latency_models.learned import BLOCK, fit_kind

    def blocked_ms(op, batch):
        padded = lambda c: -(-c // BLOCK) * BLOCK  # noqa: E731
        return 0.01 + 2e-9 * batch * op.m * padded(op.n) * padded(op.in_channels) * op.kernel[0] * op.kernel[1]

    rng = np.random.default_rng(0)
    train = [(op, b, blocked_ms(op, b)) for op, b in ((random_op("conv", rng), int(rng.choice([1, 8, 32])))
                                                     for _ in range(300))]
    model = LearnedLatency("blocked", "test", {"conv": fit_kind(train)})
    errors = [abs(model.predict_op(op, b) / blocked_ms(op, b) - 1)
              for op, b in ((random_op("conv", rng), int(rng.choice([1, 8, 32]))) for _ in range(100))]
    assert np.mean(errors) < 0.1


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
    for kind in KINDS:
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
    assert main(["profile", "--samples", "10", "--rounds", "0", "--ops-only", "--out", str(out)]) == 0
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


@pytest.mark.parametrize("kind", KINDS)
def test_profiling_samples_are_of_the_kind_they_are_fitted_for(kind):
    """A 1-channel "depthwise" sample is an ordinary convolution: profiling once fitted the
    depthwise regressor on it and then asked a conv regressor it did not have."""
    from autocompress.latency_models.learned import _neighbour, op_kind, random_op

    rng = np.random.default_rng(0)
    for _ in range(500):
        op = random_op(kind, rng)
        assert op_kind(op) == kind and op_kind(_neighbour(op, rng)) == kind


def test_profiling_times_whole_models_for_what_runs_between_the_layers(tmp_path):
    from autocompress.latency_models.profiling import compressed_models, profile_device
    from autocompress.models import zoo

    measured = MeasuredLatency("cpu", cache=str(tmp_path / "cache.json"), repeats=3, warmup=1)
    model = profile_device("cpu", 10, 0, measured=measured, models=zoo.instances(("lenet5",)), per_model=1)
    assert model.glue["models"] == 2 * 3  # the model and one compressed copy, at 3 batch sizes
    (*_, ops), (*_, small_ops) = compressed_models(zoo.instances(("lenet5",)), 1, np.random.default_rng(0))
    assert len(ops) == len(small_ops) and model.total(small_ops, 8) <= model.total(ops, 8)  # monotone op by op
    again = load_latency_model(_saved(model, tmp_path))
    assert again.total(ops, 8) == model.total(ops, 8) and again.glue == model.glue


def _saved(model, folder):
    model.save(folder / "m.json")
    return folder / "m.json"


def test_profiling_measures_the_layers_of_real_models_it_is_given():
    from autocompress.latency_models.learned import profile

    timed = []

    def measure(op, batch):
        timed.append((op.signature(), batch))
        return synthetic_ms(op, batch)

    rng = np.random.default_rng(9)
    extra = [(random_op(kind, rng), 8) for kind in ("conv", "linear")]
    model = profile(measure, "x", "test", samples_per_kind=10, rounds=0, extra=extra)
    assert all((op.signature(), batch) in timed for op, batch in extra)
    assert model.kinds["conv"]["samples"] == 11 and model.kinds["pointwise"]["samples"] == 10


def test_profiling_times_again_what_was_measured_slower_than_predicted():
    """A burst of other work on the machine spoils a run of samples (3x slower here); those
    are timed again and the faster time kept, so the fit follows the device."""
    from autocompress.latency_models.learned import profile

    count, again = [0], []

    def bursty(op, batch):
        count[0] += 1
        return synthetic_ms(op, batch) * (3.0 if count[0] % 10 < 2 else 1.0)

    def remeasure(op, batch):
        again.append(op)
        return synthetic_ms(op, batch)

    def held_out_error(model):
        rng = np.random.default_rng(11)
        ops = [(random_op("conv", rng), int(rng.choice([1, 8, 32]))) for _ in range(100)]
        return np.mean([abs(model.predict_op(op, b) / synthetic_ms(op, b) - 1) for op, b in ops])

    spoiled = profile(bursty, "x", "test", samples_per_kind=100, rounds=0)
    count[0] = 0
    repaired = profile(bursty, "x", "test", samples_per_kind=100, rounds=0, remeasure=remeasure)
    assert 0 < len(again) < 4 * 100  # only the suspects, not every sample
    assert held_out_error(repaired) < held_out_error(spoiled)


def test_timing_an_op_again_keeps_the_faster_time(tmp_path, monkeypatch):
    model = MeasuredLatency("cpu", cache=str(tmp_path / "cache.json"))
    op = random_op("linear", np.random.default_rng(0))
    times = iter([2.0, 1.0, 3.0])
    monkeypatch.setattr(model, "measure", lambda *a: next(times))
    assert model.predict_op(op, 1) == 2.0
    assert model.remeasure(op, 1) == 1.0 and model.remeasure(op, 1) == 1.0
    assert MeasuredLatency("cpu", cache=str(tmp_path / "cache.json")).predict_op(op, 1) == 1.0  # on disk


def test_an_attention_op_is_the_fused_product_torch_runs():
    """An attention op does the FLOPs of the kernel it is timed as (both products, counted
    by the FLOP counter every cost uses), and analytic models cost it as those products."""
    from autocompress.core.ops import Op, products
    from autocompress.evaluators.flops import flop_counter
    from autocompress.latency_models import get_latency_model
    from autocompress.latency_models.measured import op_module

    op = Op("attn", "attention", 65, 17, 16, 3, 65, 48)
    module, x = op_module(op, 2)
    with flop_counter() as counter:
        module(x)
    assert counter.get_total_flops() == 2 * op.flops
    scores, values = products(op)
    assert (scores.m, scores.n, scores.k, values.n, values.k) == (65, 17, 16, 16, 17)
    assert scores.flops + values.flops == op.flops
    for target in ("h100", "eyeriss"):
        model = get_latency_model(target)
        assert model.predict_op(op, 4) == pytest.approx(model.predict_op(scores, 4) + model.predict_op(values, 4))


@pytest.mark.parametrize("name", ["vit_tiny", "resnet20", "mobilenetv2_small"])
def test_the_ops_of_a_model_are_every_matrix_product_it_runs(name):
    """The ops' FLOPs add up to the model's (the FLOP counter's, which ``Space.cost``
    matches): no product, attention's included, is left out of latency predictions."""
    from autocompress.core.ops import space_ops
    from autocompress.models import zoo
    from autocompress.spaces import build_space

    model, x = getattr(zoo, name)().eval(), zoo.example_input(name)
    space = build_space(model, x)
    for density in (1.0, 0.5):
        settings = space.resolve({k.name: density for k in space.knobs if k.kind == "channels"})
        assert sum(op.flops for op in space_ops(space, settings)) == space.cost(settings)["flops"]


def test_gathered_elements_come_from_concatenations_and_skip_connections():
    """The inputs of ops that read more than the op before them wrote, decided on the base
    model: none in a plain chain (VGG; MobileNetV2's additions write what its next op
    reads), ResNet's downsampling shortcuts, most of what DenseNet's layers read (every
    earlier feature map), the ViT's first attention (its class token is concatenated)."""
    from autocompress.core.ops import gathering_layers, space_ops
    from autocompress.models import zoo
    from autocompress.spaces import build_space

    def space(name):
        return build_space(getattr(zoo, name)().eval(), zoo.example_input(name))

    def gathered_share(name):
        s = space(name)
        _, _, reads, gathered = glue_features(space_ops(s, s.resolve({})))
        return gathered / reads

    assert gathered_share("vgg_small") == gathered_share("mobilenetv2_small") == 0
    assert 0 < gathered_share("resnet20") < 0.2 < 0.5 < gathered_share("densenet_small")
    assert gathering_layers(space("resnet20")) == {"stages.1.0.shortcut.0", "stages.2.0.shortcut.0"}
    assert gathering_layers(space("vit_tiny")) == {"blocks.0.attn"}


@pytest.mark.parametrize("name", ["resnet20", "densenet_small", "se_net"])
def test_pruning_never_makes_a_whole_model_slower_between_the_layers(learned, name):
    """Every term between the layers grows with every op's channels (which ops gather is
    decided on the base model), so pruning any channel group never predicts a slower model."""
    from autocompress.core.ops import space_ops
    from autocompress.models import zoo
    from autocompress.spaces import build_space

    model = LearnedLatency("glued", "test", learned.kinds, glue=GLUE)
    space = build_space(getattr(zoo, name)().eval(), zoo.example_input(name))
    for knob in (k for k in space.knobs if k.kind == "channels"):
        totals = [model.between_layers(space_ops(space, space.resolve({knob.name: d})), 8) for d in (1.0, 0.6, 0.2)]
        assert totals == sorted(totals, reverse=True), knob.name


def test_profile_command_profiles_your_own_model_with_the_zoo(tmp_path, monkeypatch, capsys):
    """``profile --model``: your model's layers (compressed at random) are timed as samples
    and the model is timed whole for what runs between the layers (the zoo's models are
    left out here to keep the test short)."""
    from autocompress.core.ops import space_ops
    from autocompress.models import zoo
    from autocompress.spaces import build_space

    monkeypatch.setenv("AUTOCOMPRESS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(zoo, "PROFILED", ())
    out = tmp_path / "cpu.json"
    assert main(["profile", "--samples", "10", "--rounds", "0", "--model", "autocompress.models.zoo:lenet300_100",
                 "--data", "autocompress.models.zoo:lenet300_100_data", "--out", str(out)]) == 0
    model = load_latency_model(out)
    assert model.glue["models"] == 3 * 3  # the model and two compressed copies, at batch 1, 8 and 32
    timed = json.loads((tmp_path / "cache" / "latency" / "measured-cpu.json").read_text())
    keys = {key.split("|b=")[0] for entries in timed.values() for key in entries}
    space = build_space(zoo.lenet300_100().eval(), zoo.example_input("lenet300_100"))
    assert {op.signature() for op in space_ops(space, space.resolve({}))} <= keys
    assert "saved to" in capsys.readouterr().out
    assert main(["profile", "--model", "autocompress.models.zoo:lenet300_100", "--ops-only"]) == 2
    assert "--ops-only skips both" in capsys.readouterr().err
    assert main(["profile", "--model", "autocompress.models.zoo:lenet300_100"]) == 2
    assert "gives the model's input shape" in capsys.readouterr().err
