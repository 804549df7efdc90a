"""A search holds the base model (which is also the teacher) and one candidate at a time."""
from __future__ import annotations

import gc

import autocompress.engine.evaluation as evaluation
from autocompress.core import budget
from autocompress.engine.runner import run_search
from autocompress.engine.settings import SearchSettings
from autocompress.models.demo import DemoNet
from autocompress.models.workload import load_workload


def test_a_search_holds_the_base_and_one_candidate(tmp_path, monkeypatch):
    workload = load_workload()
    gc.collect()
    before = sum(isinstance(o, DemoNet) for o in gc.get_objects())  # the base, and any earlier tests left
    alive: list[int] = []
    distill = evaluation.distill

    def counting(model, teacher, *args, **kwargs):  # the fine-tune, the last step of recovery
        distill(model, teacher, *args, **kwargs)
        gc.collect()
        alive.append(sum(isinstance(o, DemoNet) for o in gc.get_objects()))

    monkeypatch.setattr(evaluation, "distill", counting)
    settings = SearchSettings(budget.parse("flops=0.5"), trials=4, strategy="random", finetune_steps=2,
                              final_finetune_steps=0, calibration_batches=2)
    run_search(workload, settings, tmp_path, progress=False)
    assert len(alive) >= 4  # every search trial was counted
    assert max(alive) <= before + 1  # the base (the teacher too) and the candidate being recovered
