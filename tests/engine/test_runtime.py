"""Where a search runs is a run option, not a setting: the study and the recipe record no
device, a study made before ``--metric`` existed resumes, fine-tunes get the runtime, and
a Ray trial runs on the GPU Ray gives it."""
from __future__ import annotations

import pytest
import torch

from autocompress.core.budget import parse
from autocompress.core.errors import StudyError
from autocompress.engine import evaluation
from autocompress.engine.runner import prepare, run_search
from autocompress.engine.settings import SearchSettings
from autocompress.engine.study import Study
from autocompress.evaluators.device import Runtime
from autocompress.models.workload import load_workload

FAST = dict(budget=parse("flops=0.5"), trials=2, strategy="random", finetune_steps=2, final_finetune_steps=2,
            calibration_batches=2)


def test_settings_store_the_metric_and_no_device():
    data = SearchSettings(**FAST, metric="top5").to_dict()
    assert data["metric"] == "top5" and SearchSettings.from_dict(data).metric == "top5"
    assert not {"device", "precision", "runtime"} & set(data)
    del data["metric"]  # as a study made before --metric stored it
    assert SearchSettings.from_dict(data).metric == "accuracy"


def test_a_study_made_before_the_metric_setting_resumes_with_accuracy_only(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    old = {k: v for k, v in SearchSettings(**FAST).to_dict().items() if k != "metric"}
    Study(url, {"model": "m", **old})
    Study(url, {"model": "m", **SearchSettings(**FAST).to_dict()})  # accuracy: the same search
    with pytest.raises(StudyError, match="made with metric='accuracy', not 'neg_loss'"):
        Study(url, {"model": "m", **SearchSettings(**FAST, metric="neg_loss").to_dict()})


def test_trials_and_the_final_fine_tune_run_on_the_runtime_asked_for(tmp_path, monkeypatch):
    seen = []
    distill = evaluation.distill

    def spy(*args, **kwargs):
        seen.append(args[7])  # the runtime
        return distill(*args, **kwargs)

    monkeypatch.setattr(evaluation, "distill", spy)
    result = run_search(load_workload(), SearchSettings(**FAST, metric="neg_loss"), tmp_path, progress=False,
                        device="cpu", precision="bf16")
    assert seen and set(seen) == {Runtime(torch.device("cpu"), "bf16")}
    assert result.recipe.metric == "neg_loss" and result.recipe.metrics["compressed"]["neg_loss"] < 0
    assert "device" not in (tmp_path / "recipe.yaml").read_text()
    assert next(p for p in result.model.parameters()).device.type == "cpu"


def test_a_ray_trial_runs_on_the_gpu_ray_gives_it(monkeypatch, tmp_path):
    pytest.importorskip("ray.tune")
    import autocompress.engine.ray_tune as ray_tune

    monkeypatch.setattr(ray_tune.ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray_tune.ray, "get_gpu_ids", lambda: [])
    assert ray_tune.worker_runtime() == Runtime(torch.device("cpu"), "fp32")
    monkeypatch.setattr(ray_tune.ray, "get_gpu_ids", lambda: [3])  # Ray makes it the only visible GPU
    for name, value in (("is_available", True), ("device_count", 1), ("current_device", 0),
                        ("is_bf16_supported", True)):
        monkeypatch.setattr(torch.cuda, name, lambda value=value: value)
    assert ray_tune.worker_runtime() == Runtime(torch.device("cuda", 0), "bf16")
    assert ray_tune.worker_runtime("fp16").precision == "fp16"

    seen = {}

    def fake(*args, **kwargs):
        seen["runtime"] = args[7]
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(ray_tune, "evaluate_trial", fake)
    monkeypatch.setattr(Runtime, "release", lambda self: seen.setdefault("released", True))
    search = prepare(load_workload(), SearchSettings(**FAST), f"sqlite:///{tmp_path / 's.db'}")
    job = ray_tune.Job(search.workload, search.problem.space, search.settings, search.problem.limits)
    result = ray_tune.evaluate_on_worker({"candidate": {}, "purpose": "search", "channel_order": None}, job)
    assert seen["runtime"].device == torch.device("cuda", 0) and seen["released"]
    assert result["error"].startswith("OutOfMemoryError: out of GPU memory on cuda:0 (CUDA out of memory.")
