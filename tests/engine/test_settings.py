"""A search's settings and latency calibration stored with its study, and strategies and
latency models passed as objects."""
from __future__ import annotations

import json

import pytest

import autocompress as ac
from autocompress.core.budget import parse
from autocompress.core.errors import AutocompressError, StudyError
from autocompress.core.projection import project
from autocompress.engine import runner
from autocompress.engine.settings import SCHEMA, SearchSettings
from autocompress.engine.study import Study
from autocompress.latency_models.analytic import from_fields, presets
from autocompress.models.workload import load_workload
from autocompress.search import RandomStrategy, Strategy

FAST = dict(finetune_steps=0, final_finetune_steps=0, calibration_batches=2)


class EveryOther(Strategy):
    """A strategy no registry knows: full density, then a profile favouring the first knobs."""

    name = "every-other"

    def __init__(self, seed: int = 0, step: float = 0.5):
        super().__init__(seed)
        self.step = step

    def ask(self, problem, history):
        return {k.name: k.high if i % 2 else k.low + self.step * (k.high - k.low)
                for i, k in enumerate(problem.space.knobs)}


def _url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


def test_settings_are_stored_as_json_with_every_default_and_read_back():
    settings = SearchSettings(budget=parse("flops=0.3,params=0.5"), strategy="bo",
                              strategy_options={"n_startup_trials": 4})
    data = settings.to_dict()
    assert data["schema"] == SCHEMA and json.loads(json.dumps(data)) == data
    assert data["strategy"] == "bo" and data["strategy_params"] == {"seed": 0, "n_startup_trials": 4}
    assert data["knobs"] == ["channels", "sparsity"]  # the default kinds, resolved
    assert data["finetune_steps"] == 20 and data["lr"] == 1e-3  # defaults are stored too
    again = SearchSettings.from_dict(data)
    assert again.to_dict() == data and again.trials is None


def test_a_strategy_object_is_stored_as_its_name_and_parameters():
    data = SearchSettings(budget=parse("flops=0.3"), strategy=RandomStrategy(seed=7)).to_dict()
    assert data["strategy"] == "random" and data["strategy_params"] == {"seed": 7}
    assert SearchSettings.from_dict(data).make_strategy().get_params() == {"seed": 7}
    custom = SearchSettings(budget=parse("flops=0.3"), strategy=EveryOther(step=0.25)).to_dict()
    assert custom["strategy"] == f"{__name__}.EveryOther"  # its class path as text, never pickled
    assert custom["strategy_params"] == {"seed": 0, "step": 0.25}
    with pytest.raises(AutocompressError, match="strategy options are for a strategy given by name"):
        SearchSettings(budget=parse("flops=0.3"), strategy=EveryOther(), strategy_options={"step": 1}).to_dict()


def test_an_unregistered_strategy_object_searches_in_process_and_resumes(tmp_path):
    result = ac.search("flops=0.5", out=tmp_path, progress=False, trials=1, strategy=EveryOther(step=0.25), **FAST)
    assert result.recipe.search["strategy"] == f"{__name__}.EveryOther"
    again = ac.search("flops=0.5", out=tmp_path, progress=False, trials=2, strategy=EveryOther(step=0.25), **FAST)
    assert again.recipe.search["trials"] == 2
    with pytest.raises(StudyError, match=r"strategy_params.step=0.25, not 0.5"):
        ac.search("flops=0.5", out=tmp_path, progress=False, trials=2, strategy=EveryOther(step=0.5), **FAST)
    with pytest.raises(StudyError, match="not registered"):
        runner.run_worker(load_workload(), _url(tmp_path), progress=False, wait=0)


def test_a_changed_strategy_parameter_is_named_on_resume(tmp_path):
    workload = load_workload()
    settings = SearchSettings(budget=parse("flops=0.5"), trials=1, strategy="bo", **FAST)
    runner.prepare(workload, settings, _url(tmp_path))
    other = SearchSettings(budget=parse("flops=0.5"), trials=1, strategy="bo", strategy_options={"n_startup_trials": 3},
                           **FAST)
    with pytest.raises(StudyError, match=r"made with strategy_params.n_startup_trials=8, not 3; .*--out"):
        runner.prepare(workload, other, _url(tmp_path))


def test_a_study_of_the_older_format_is_refused_with_one_error(tmp_path, capsys):
    from autocompress.cli.main import main

    old = {"model": load_workload().fingerprint, "budget": "flops=0.3", "strategy": "bo", "seed": 0,
           "knobs": "conv1/channels", "recovery": "[('calibration_batches', 20)]", "strategy_options": "[]"}
    Study(_url(tmp_path), old)
    assert main(["search", "--out", str(tmp_path), "--no-progress", "--trials", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "rerun the search" in err[0], err
    assert main(["export", str(tmp_path), "--trial", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "older autocompress" in err[0] and "rerun the search" in err[0], err


def test_the_calibration_is_stored_once_and_read_back_without_measuring(tmp_path, monkeypatch):
    import autocompress.latency_models.calibration as calibration
    from autocompress.engine import evaluation

    # whole models are timed on this CPU; the per-op model under the calibration is an
    # analytic one here, so the test does not time every op shape the projection visits
    monkeypatch.setattr(evaluation, "get_latency_model", lambda target: from_fields(target, presets()["eyeriss"]))
    # and the whole-model timings are a deterministic stand-in (ms growing with the weights), so
    # timing noise on a busy machine cannot make the budget unreachable
    monkeypatch.setattr(calibration, "measure_cpu_latency",
                        lambda model, x, repeats=30: 0.05 + 1e-6 * sum(p.numel() for p in model.parameters()))
    workload = load_workload()
    settings = SearchSettings(budget=parse("latency=0.9@cpu"), trials=2, strategy="random", **FAST)
    first = runner.prepare(workload, settings, _url(tmp_path))
    stored = first.study.latency_models
    assert stored["latency@cpu"]["kind"] == "calibrated"

    def no_measuring(*args, **kwargs):
        raise AssertionError("measured again")

    monkeypatch.setattr(calibration, "measure_cpu_latency", no_measuring)
    profile = {k.name: 0.3 + 0.6 * (i % 2) for i, k in enumerate(first.problem.space.knobs)}
    expected = project(first.problem.space, profile, first.problem.limits)
    for shared in (False, True):  # a resumed search, a worker's process
        again = runner.prepare(workload, settings, _url(tmp_path), shared=shared)
        assert again.problem.limits == first.problem.limits
        assert again.problem.space.latency_models["latency@cpu"].to_dict() == stored["latency@cpu"]
        assert project(again.problem.space, profile, again.problem.limits) == expected


def test_a_latency_model_object_serves_its_target_and_is_stored_with_the_settings(tmp_path):
    device = from_fields("mydev", presets()["eyeriss"])
    result = ac.search("latency=0.6@mydev", out=tmp_path, progress=False, trials=1, strategy="uniform",
                       latency_models={"mydev": device}, **FAST)
    compressed, base = result.recipe.metrics["compressed"], result.recipe.metrics["base"]
    assert compressed["latency@mydev"] <= 0.6 * base["latency@mydev"] * 1.0001
    study = Study.open(_url(tmp_path))
    assert study.config["latency_models"] == {"mydev": device.to_dict()}
    settings = SearchSettings.from_dict(study.config)  # what a worker or export uses
    assert settings.latency_models["mydev"].to_dict() == device.to_dict()
    with pytest.raises(Exception, match="unknown latency target 'mydev'"):
        ac.search("latency=0.6@mydev", out=tmp_path / "without", progress=False, trials=1, **FAST)
