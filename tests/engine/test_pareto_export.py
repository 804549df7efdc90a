from __future__ import annotations

import shutil

import pytest
import yaml

from autocompress.cli.main import main
from autocompress.core.recipe import Recipe
from autocompress.engine.evaluation import search_space
from autocompress.engine.settings import SearchSettings
from autocompress.engine.study import Study
from autocompress.models.workload import load_workload

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One NSGA-II search with the pareto objective on the demo."""
    out = tmp_path_factory.mktemp("pareto") / "run"
    assert main(["search", "--strategy", "nsga2", "--objective", "pareto", "--trials", "6", "--budget", "flops=0.4",
                 "--option", "population_size=4", "--finetune-steps", "0", "--final-finetune-steps", "10",
                 "--calibration-batches", "2", "--out", str(out), "--no-progress"]) == 0
    return out


def test_front_is_non_dominated_and_within_the_budget(run):
    saved = yaml.safe_load((run / "pareto.yaml").read_text())
    assert saved["objective"] == ["proxy_accuracy", "flops"]
    front = saved["front"]
    assert front
    limit = 0.4 * saved["base"]["flops"]
    for point in front:
        assert point["flops"] <= limit
        assert not any(o["proxy_accuracy"] >= point["proxy_accuracy"] and o["flops"] <= point["flops"] and o != point
                       for o in front)
    trials = {r.number: r for r in Study.open(f"sqlite:///{run / 'study.db'}").history()}
    assert all(trials[p["trial"]].score == p["proxy_accuracy"] for p in front)


def test_a_front_point_exports_to_a_recipe_that_apply_replays(run, capsys):
    point = yaml.safe_load((run / "pareto.yaml").read_text())["front"][0]
    assert main(["export", str(run), "--trial", str(point["trial"])]) == 0
    path = run / f"recipe-trial-{point['trial']}.yaml"
    assert f"recipe: {path}" in capsys.readouterr().out
    recipe = Recipe.load(path)
    assert recipe.search["best_trial"] == point["trial"]
    assert recipe.search["best_proxy_accuracy"] == point["proxy_accuracy"]
    assert recipe.recovery["finetune_steps"] == 10  # the search's final fine-tune
    assert recipe.metrics["compressed"]["flops"] == point["flops"]
    assert main(["apply", str(path), "--out", str(run / "point.pt2")]) == 0
    assert (run / "point.pt2").is_file()
    assert "+0.00 pt" in capsys.readouterr().out  # the applied model scores what the recipe recorded


def _with_odd_trials(run, tmp_path):
    """A copy of the run with a scan, a failed and an over-budget trial added."""
    copy = tmp_path / "odd"
    copy.mkdir()
    shutil.copy(run / "study.db", copy / "study.db")
    study = Study.open(f"sqlite:///{copy / 'study.db'}")
    workload = load_workload()
    space = search_space(workload, SearchSettings.from_dict(study.config))
    neutral = space.neutral()
    scan = study.start(space, neutral, neutral, "scan")
    study.finish(scan, 90.0, {"flops": 1.0}, True)
    failed = study.start(space, neutral, neutral)
    study.fail(failed, "RuntimeError: out of memory")
    over = study.start(space, neutral, neutral)
    study.finish(over, 99.0, {"flops": 1e9}, False)
    return copy, [r.number for r in study.history()[-3:]]


@pytest.mark.parametrize("which,expect", [("x", "is not a trial number"), ("-1", "is not a trial number"),
                                          ("999", "is not in"), ("scan", "sensitivity scan"),
                                          ("failed", "failed (RuntimeError: out of memory)"),
                                          ("over", "over the budget flops=0.4")])
def test_bad_trials_get_one_line_and_exit_2(run, tmp_path, capsys, which, expect):
    folder, (scan, failed, over) = _with_odd_trials(run, tmp_path)
    trial = {"scan": scan, "failed": failed, "over": over}.get(which, which)
    assert main(["export", str(folder), "--trial", str(trial)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expect in err[0], err
    assert not list(folder.glob("recipe-trial-*.yaml"))
