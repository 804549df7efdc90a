"""Multi-fidelity trials: rung reports from the proxy fine-tune, pruned trials in the study
and the history (in-process, shared studies and Ray), and the --pruner option."""
from __future__ import annotations

import itertools
import math

import optuna
import pytest

import autocompress.engine.trials as trial_steps
from autocompress.cli.main import main
from autocompress.core.budget import parse
from autocompress.core.errors import AutocompressError, StudyError
from autocompress.core.trial import PRUNED, TrialRecord, finished
from autocompress.engine import evaluation
from autocompress.engine.pruning import optuna_pruner, pruner_for, rung_steps
from autocompress.engine.runner import prepare, run_search
from autocompress.engine.settings import SearchSettings
from autocompress.engine.study import Study
from autocompress.models.workload import load_workload
from autocompress.search import STRATEGIES, Proposal, Strategy
from autocompress.search.sensitivity import next_scan

QUICK = dict(budget=parse("flops=0.5"), finetune_steps=8, final_finetune_steps=0, calibration_batches=2)


def test_rungs_are_fractions_of_the_fine_tune_below_its_last_step():
    assert rung_steps(20, (0.25, 0.5)) == [5, 10]
    assert rung_steps(8, (0.25, 0.5, 0.5)) == [2, 4]
    assert rung_steps(2, (0.25, 0.5)) == [1]
    assert rung_steps(1, (0.25, 0.5)) == [] and rung_steps(0, (0.5,)) == []
    assert isinstance(optuna_pruner("sha", 1, (0.25,)), optuna.pruners.NopPruner)  # no rung, nothing to prune
    assert isinstance(pruner_for({"finetune_steps": 20}), optuna.pruners.NopPruner)  # a study stored without one
    with pytest.raises(AutocompressError, match="unknown pruner 'asha'; use one of none, median, sha, hyperband"):
        optuna_pruner("asha", 20, (0.25,))


def test_rungs_are_reported_and_the_trial_scores_as_without_them():
    """A trial reports its score on part of the validation split at each rung; reporting
    neither changes its fine-tune nor its final score (the exact old result)."""
    workload = load_workload()
    settings = SearchSettings(**QUICK, pruner="sha")
    space = evaluation.search_space(workload, settings)
    candidate = {k.name: 0.5 for k in space.knobs}
    limits = {"flops": math.inf}
    reports = []
    with_rungs = evaluation.evaluate_trial(workload, space, candidate, settings, limits,
                                           report=lambda score, step: reports.append((step, score)))
    without = evaluation.evaluate_trial(workload, space, candidate, settings, limits)
    assert [step for step, _ in reports] == [2, 4]
    assert all(0 <= score <= 100 for _, score in reports)
    assert with_rungs == without
    scan = []
    evaluation.evaluate_trial(workload, space, candidate, settings, limits, purpose="scan",
                              report=lambda score, step: scan.append(step))
    assert scan == []  # scans never report


SCORES = {0: 90.0, 1: 50.0, 2: 95.0, 3: 40.0, 4: 96.0, 5: 30.0}  # by search trial, in order


class ScanThenSearch(Strategy):
    """One sensitivity scan, then one distinct proposal per search trial."""

    name = "scan-then-search"

    def ask(self, problem, history):
        if not history:
            return next_scan(problem.space, history, (0.5,))
        step = len(history) / 20
        return Proposal({k.name: max(k.low, k.high - step) for k in problem.space.knobs})


@pytest.fixture
def scripted(monkeypatch):
    """Trials scored by their order (``SCORES``), reporting that score at every rung;
    which purposes were given a report callback."""
    counter = itertools.count()
    given = []

    def evaluate_trial(workload, space, candidate, settings, limits, purpose="search", channel_order=None,
                       runtime=None, teacher=None, report=None, initial_state=None):
        given.append((purpose, report is not None))
        if purpose == "scan":
            return 10.0, {"flops": 0.0}, True
        score = SCORES[next(counter)]
        for step in rung_steps(settings.finetune_steps, settings.rungs):
            if report is not None:
                report(score, step)
        return score, {"flops": 0.9 * limits["flops"]}, True

    monkeypatch.setattr(trial_steps, "evaluate_trial", evaluate_trial)
    STRATEGIES[ScanThenSearch.name] = ScanThenSearch
    yield given
    del STRATEGIES[ScanThenSearch.name]


def _states(url):
    return [t.state for t in optuna.load_study(study_name="autocompress", storage=url).get_trials()]


def test_pruned_trials_are_recorded_never_the_recipe_and_kept_on_resume(tmp_path, scripted):
    settings = SearchSettings(**QUICK, trials=4, strategy=ScanThenSearch.name, pruner="sha")
    result = run_search(load_workload(), settings, tmp_path, progress=False)
    history = result.history
    assert [r.purpose for r in history] == ["scan"] + ["search"] * 4
    assert [r.state for r in history[1:]] == ["complete", "pruned", "complete", "pruned"]
    assert _states(f"sqlite:///{tmp_path / 'study.db'}")[1:] == [optuna.trial.TrialState.COMPLETE,
                                                                 optuna.trial.TrialState.PRUNED] * 2
    pruned = history[2]
    assert pruned.score is None and not pruned.feasible and pruned.intermediate == {2: 50.0}
    assert history[1].intermediate == {2: 90.0, 4: 90.0} and history[0].intermediate == {}  # the scan
    assert result.recipe.search["best_trial"] == history[3].number  # 95, the best complete one
    assert result.recipe.search["trials"] == 4 == finished(history)  # pruned trials count toward --trials
    assert ("scan", False) in scripted and ("search", True) in scripted

    resumed = run_search(load_workload(), SearchSettings(**{**settings.__dict__, "trials": 6}), tmp_path,
                         progress=False)
    assert [(r.number, r.state, r.intermediate) for r in resumed.history[:5]] == \
        [(r.number, r.state, r.intermediate) for r in history]
    assert [r.state for r in resumed.history[5:]] == ["complete", "pruned"]  # the search went on after them
    assert resumed.recipe.search["best_trial"] == resumed.history[5].number  # 96


def test_without_a_pruner_no_trial_gets_a_report_callback(tmp_path, scripted):
    settings = SearchSettings(**QUICK, trials=3, strategy=ScanThenSearch.name)
    history = run_search(load_workload(), settings, tmp_path, progress=False).history
    assert [r.state for r in history] == ["complete"] * 4 and all(not r.intermediate for r in history)
    assert not any(reported for _, reported in scripted)


def test_bo_hands_pruned_trials_to_tpe(monkeypatch):
    studies = []
    create_study = optuna.create_study

    def recorded(*args, **kwargs):
        studies.append(create_study(*args, **kwargs))
        return studies[-1]

    monkeypatch.setattr(optuna, "create_study", recorded)
    settings = SearchSettings(**QUICK)
    workload = load_workload()
    space = evaluation.search_space(workload, settings)
    from autocompress.search import Problem

    problem = Problem(space, {"flops": 1.0}, {"flops": 2.0}, base_score=95.0)
    history = [TrialRecord(n, "complete", {k.name: 0.9 for k in space.knobs}, {}, 90.0 - n, True) for n in range(3)]
    history.append(TrialRecord(3, PRUNED, {k.name: 0.3 for k in space.knobs}, {}, intermediate={2: 10.0}))
    proposal = STRATEGIES["bo"](seed=0, n_startup_trials=2).ask(problem, history)
    assert set(proposal) == {k.name for k in space.knobs}
    pruned = studies[-1].get_trials(states=(optuna.trial.TrialState.PRUNED,))
    assert len(pruned) == 1 and pruned[0].intermediate_values == {2: 10.0}


def test_a_shared_studys_processes_prune_alike(tmp_path):
    """Two processes' Study objects on one database: the second's trial is compared at its
    rung with the first's, through the storage (what `autocompress worker` relies on)."""
    url = f"sqlite:///{tmp_path / 's.db'}"
    config = {"model": "m", "pruner": "sha", "finetune_steps": 8, "rungs": [0.25, 0.5]}
    first, second = Study(url, config, shared=True), Study(url, config, shared=True)
    space = type("S", (), {"knobs": [type("K", (), {"name": "a", "low": 0.0, "high": 1.0})()]})()
    good = first.start(space, {"a": 1.0}, {"a": 1.0})
    first.report(good, 80.0, 2)
    assert not first.should_prune(good)
    first.finish(good, 90.0, {"flops": 1.0}, True)
    bad = second.start(space, {"a": 0.1}, {"a": 0.1})
    second.report(bad, 20.0, 2)
    second.report(bad, 99.0, 2)  # a repeat of a step is ignored
    assert second.should_prune(bad)
    second.prune(bad)
    history = Study(url, config, shared=True).history()
    assert [(r.state, r.intermediate) for r in history] == [("complete", {2: 80.0}), ("pruned", {2: 20.0})]


def test_a_study_stored_before_pruners_resumes_without_one(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    settings = SearchSettings(budget=parse("flops=0.5"), strategy="random")
    old = {k: v for k, v in settings.to_dict().items() if k not in ("pruner", "rungs")}
    Study(url, old)
    assert Study(url, settings.to_dict()).config == old  # same settings: no StudyError
    assert SearchSettings.from_dict(old).pruner == "none"
    with pytest.raises(StudyError, match="pruner='none', not 'sha'"):
        Study(url, SearchSettings(budget=parse("flops=0.5"), strategy="random", pruner="sha").to_dict())


def test_a_search_with_a_pruner_end_to_end(tmp_path):
    out = tmp_path / "run"
    assert main(["search", "--trials", "4", "--out", str(out), "--strategy", "random", "--pruner", "sha",
                 "--no-progress", "--final-finetune-steps", "0", "--finetune-steps", "8"]) == 0
    trials = optuna.load_study(study_name="autocompress", storage=f"sqlite:///{out / 'study.db'}").get_trials()
    states = {optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED}
    assert len(trials) == 4 and {t.state for t in trials} <= states
    assert all(list(t.intermediate_values) == [2, 4] for t in trials if t.state == optuna.trial.TrialState.COMPLETE)
    assert trials[0].state == optuna.trial.TrialState.COMPLETE  # successive halving keeps the first


def test_an_unknown_pruner_is_one_line_naming_the_known_ones(tmp_path, capsys):
    assert main(["search", "--pruner", "asha", "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'asha'" in err and "none, median, sha, hyperband" in err


# --- Ray Tune --------------------------------------------------------------------------


def test_ray_trials_report_rungs_and_a_stopped_one_is_recorded_pruned(tmp_path, monkeypatch):
    pytest.importorskip("ray.tune")
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.utils import flatten_dict

    import autocompress.engine.ray_tune as ray_tune
    from autocompress.engine.stopping import Stop

    settings = SearchSettings(**QUICK, trials=2, strategy="random", pruner="sha")
    scheduler = ray_tune.scheduler_for(settings)
    assert isinstance(scheduler, ASHAScheduler)
    assert [milestone for milestone, _ in scheduler._brackets[0]._rungs] == [8, 4, 2]  # rungs at 2, 4 of 8 steps
    assert ray_tune.scheduler_for(SearchSettings(**QUICK)) is None
    reported = []
    monkeypatch.setattr(ray_tune, "_report_rung", lambda score, step: reported.append(step))
    search = prepare(load_workload(), settings, f"sqlite:///{tmp_path / 's.db'}")
    searcher = ray_tune.StrategySearcher(search, Stop())
    job = ray_tune.Job(search.workload, search.problem.space, search.settings, search.problem.limits)
    first, second = searcher.suggest("a"), searcher.suggest("b")
    assert (first["number"], second["number"]) == (0, 1)
    result = ray_tune.evaluate_on_worker(first, job)
    assert reported == [2, 4] and result["step"] == 8
    searcher.on_trial_result("a", {"score": 70.0, "step": 2, "rung": 1})
    searcher.on_trial_complete("a", flatten_dict(result, delimiter="/"))
    searcher.on_trial_complete("b", {"score": 12.5, "step": 2, "rung": 1})  # ASHA stopped it at its first rung
    history = search.study.history()
    assert [r.state for r in history] == ["complete", PRUNED]
    assert history[0].intermediate == {2: 70.0} and history[1].intermediate == {2: 12.5}
    assert finished(history) == 2


@pytest.mark.slow
def test_asha_prunes_trials_of_a_search_on_a_local_ray(tmp_path):
    pytest.importorskip("ray.tune")
    import subprocess
    import sys

    args = [sys.executable, "-m", "autocompress", "search", "--backend", "ray", "--workers", "2", "--trials", "8",
            "--strategy", "random", "--pruner", "sha", "--finetune-steps", "40", "--final-finetune-steps", "0",
            "--no-progress", "--out", "run"]
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    history = Study.open(f"sqlite:///{tmp_path / 'run' / 'study.db'}").history()
    assert finished(history) == 8 and {r.state for r in history} <= {"complete", "pruned"}
    assert any(r.state == PRUNED for r in history)  # ASHA stopped some (the first trial is always kept)
    assert all(set(r.intermediate) == {10, 20} for r in history if r.state == "complete")
    assert all(list(r.intermediate) in ([10], [10, 20]) for r in history if r.state == PRUNED)
