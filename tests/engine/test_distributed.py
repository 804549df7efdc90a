"""Trials run elsewhere: a study shared by `search --storage` and `worker` processes, and
the Ray Tune backend (its Searcher driven in-process, plus one local-Ray smoke test)."""
from __future__ import annotations

import math
import os
import subprocess
import sys

import optuna
import pytest

from autocompress.core.budget import parse
from autocompress.core.errors import StudyError
from autocompress.engine.runner import prepare, run_worker
from autocompress.engine.settings import SearchSettings
from autocompress.engine.stopping import Stop
from autocompress.engine.study import Study
from autocompress.models.workload import load_workload

FAST = dict(budget=parse("flops=0.5"), trials=3, strategy="random", finetune_steps=0, final_finetune_steps=0,
            calibration_batches=2)


def _running_trial(url: str) -> None:
    """A trial another process is running (recorded, never finished)."""
    study = Study(url, {"model": "m"}, shared=True)
    study._study.ask()


@pytest.mark.parametrize("shared", [True, False])
def test_only_a_study_of_one_process_fails_the_running_trials_it_finds(tmp_path, shared):
    url = f"sqlite:///{tmp_path / 's.db'}"
    _running_trial(url)
    states = [r.state for r in Study(url, {"model": "m"}, shared=shared).history()]
    # shared: another worker may be running it (its heartbeat decides); alone: its process is gone
    assert states == (["running"] if shared else ["failed"])


def test_a_worker_without_a_started_study_says_so(tmp_path):
    with pytest.raises(StudyError, match="no search has started the study 'nope'"):
        run_worker(load_workload(), f"sqlite:///{tmp_path / 's.db'}", "nope", progress=False, wait=0)


def test_processes_starting_trials_at_once_never_get_the_same_trial(tmp_path):
    """Optuna's enqueue-then-ask on SQLite could hand one waiting trial to two processes,
    and a trial another process's settings (seen as UpdateFinishedTrialError in a worker)."""
    import threading
    import types

    url = f"sqlite:///{tmp_path / 's.db'}"
    Study(url, {"model": "m"}, shared=True)
    space = types.SimpleNamespace(knobs=[types.SimpleNamespace(name="a", low=0.0, high=1.0)])
    started, errors = [], []

    def process(p: int) -> None:
        try:
            study = Study(url, {"model": "m"}, shared=True)  # its own connection, as another process has
            for i in range(15):
                value = (100 * p + i) / 1000
                trial = study.start(space, {"a": value}, {"a": value})
                started.append((trial.number, value, trial.params["a"]))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(repr(exc))

    threads = [threading.Thread(target=process, args=(p,)) for p in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(started) == 45
    assert len({number for number, *_ in started}) == 45  # no trial handed out twice
    assert all(stored == value for _, value, stored in started)  # each has its own process's settings
    history = {r.number: r.candidate["a"] for r in Study(url, {"model": "m"}, shared=True).history()}
    assert sorted(history.values()) == sorted(value for _, value, _ in started)


def _complete(url: str, name: str) -> list:
    trials = optuna.load_study(study_name=name, storage=url).get_trials()
    return [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]


@pytest.mark.slow
def test_a_search_and_a_worker_share_one_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    common = ["--storage", url, "--study", "s1", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # two processes on CI's two cores (README)
    search = subprocess.Popen([sys.executable, "-m", "autocompress", "search", "--trials", "10", "--out", "run",
                               "--strategy", "random", "--final-finetune-steps", "20", *common],
                              cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    worker = subprocess.run([sys.executable, "-m", "autocompress", "worker", *common], cwd=tmp_path,
                            capture_output=True, text=True, timeout=600, env=env)
    out, err = search.communicate(timeout=600)
    assert search.returncode == 0, err
    assert worker.returncode == 0, worker.stderr
    trials = _complete(url, "s1")
    assert len(trials) >= 10 and "best of 10 trials" in out
    processes = {t.user_attrs["process"] for t in trials}
    assert len(processes) == 2  # both processes evaluated trials of the one study
    assert not (tmp_path / "run" / "study.db").exists()  # the study lives in --storage only
    report = subprocess.run([sys.executable, "-m", "autocompress", "report", "run"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0 and (tmp_path / "run" / "report.html").is_file(), report.stderr


# --- Ray Tune --------------------------------------------------------------------------


def test_the_searcher_asks_the_strategy_and_records_in_the_study(tmp_path):
    pytest.importorskip("ray.tune")
    from ray.tune.search import Searcher
    from ray.tune.utils import flatten_dict

    from autocompress.engine.ray_tune import Job, StrategySearcher, evaluate_on_worker

    search = prepare(load_workload(), SearchSettings(**FAST), f"sqlite:///{tmp_path / 's.db'}")
    searcher = StrategySearcher(search, Stop())
    first, second = searcher.suggest("a"), searcher.suggest("b")
    assert first["number"] == 0 and second["number"] == 1 and first["purpose"] == "search"
    job = Job(search.workload, search.problem.space, search.settings, search.problem.limits)
    result = evaluate_on_worker(first, job)
    searcher.on_trial_complete("a", flatten_dict(result, delimiter="/"))  # as Tune hands it over
    searcher.on_trial_complete("b", {"score": math.nan, "error": "RuntimeError: boom"})
    third = searcher.suggest("c")
    searcher.on_trial_complete("c", None, error=True)  # the worker died
    history = search.study.history()
    assert [r.state for r in history] == ["complete", "failed", "failed"]
    assert history[0].score == pytest.approx(result["score"]) and history[0].metrics == result["costs"]
    assert history[1].error == "RuntimeError: boom" and "worker died" in history[2].error
    assert third["number"] == 2
    searcher.on_trial_complete("d", {"score": 1.0})  # unknown to the searcher: ignored
    for trial_id in ("e", "f"):  # two more complete trials: the study has its 3
        config = searcher.suggest(trial_id)
        searcher.on_trial_complete(trial_id, flatten_dict(evaluate_on_worker(config, job), delimiter="/"))
    assert searcher.suggest("g") == Searcher.FINISHED


def test_a_failing_candidate_returns_its_error_from_the_worker(tmp_path, monkeypatch):
    pytest.importorskip("ray.tune")
    import autocompress.engine.ray_tune as ray_tune

    def out_of_memory(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(ray_tune, "evaluate_trial", out_of_memory)
    search = prepare(load_workload(), SearchSettings(**FAST), f"sqlite:///{tmp_path / 's.db'}")
    job = ray_tune.Job(search.workload, search.problem.space, search.settings, search.problem.limits)
    result = ray_tune.evaluate_on_worker({"candidate": {}, "purpose": "search", "channel_order": None}, job)
    assert math.isnan(result["score"]) and result["error"] == "RuntimeError: out of memory"


@pytest.mark.slow
def test_ray_backend_runs_the_demo_on_a_local_ray_and_resumes_after_the_driver_is_killed(tmp_path):
    """Two Ray workers; the driver is killed (SIGKILL) once two trials finished; the same
    command finishes the study, evaluating the trials it left running once more."""
    pytest.importorskip("ray.tune")
    import time

    url = f"sqlite:///{tmp_path / 'run' / 'study.db'}"
    args = [sys.executable, "-m", "autocompress", "search", "--backend", "ray", "--workers", "2", "--trials", "6",
            "--strategy", "random", "--final-finetune-steps", "20", "--no-progress", "--out", "run"]
    driver = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None:
        if (tmp_path / "run" / "study.db").exists():
            try:
                if len(_complete(url, "autocompress")) >= 2:
                    break
            except Exception:  # the study is still being created
                pass
        time.sleep(0.2)
    driver.kill()
    driver.wait(timeout=60)
    kept = len(_complete(url, "autocompress"))
    assert 2 <= kept < 6
    done = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "best of 6 trials" in done.stdout and (tmp_path / "run" / "recipe.yaml").is_file()
    trials = optuna.load_study(study_name="autocompress", storage=url).get_trials()
    interrupted = [t.number for t in trials if t.user_attrs.get("error", "").startswith("interrupted")]
    retried = [t.user_attrs["retry_of"] for t in trials if "retry_of" in t.user_attrs]
    assert sorted(retried) == sorted(interrupted)  # each trial the dead driver left running ran once more
    assert len(_complete(url, "autocompress")) == 6


def test_without_ray_the_ray_backend_says_how_to_install_it(monkeypatch, tmp_path, capsys):
    import autocompress.engine.ray_tune as ray_tune
    from autocompress.cli.main import main

    monkeypatch.setattr(ray_tune, "ray", None)
    assert main(["search", "--backend", "ray", "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert "pip install 'autocompress[ray]'" in capsys.readouterr().err


def test_opening_a_database_another_process_is_creating_tries_again(tmp_path, monkeypatch):
    """A search and its worker started together both create the schema; the loser of that
    race (an IntegrityError on alembic_version, seen in this suite) opens it again."""
    import sqlalchemy.exc

    import autocompress.engine.study as study_module

    calls = {"n": 0}

    class LosesTheRaceTwice(optuna.storages.RDBStorage):
        def __init__(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] <= 2:
                raise sqlalchemy.exc.IntegrityError("INSERT INTO alembic_version", {}, Exception("UNIQUE constraint"))
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(optuna.storages, "RDBStorage", LosesTheRaceTwice)
    monkeypatch.setattr(study_module.time, "sleep", lambda seconds: None)
    study = Study(f"sqlite:///{tmp_path / 's.db'}", {"model": "m"}, shared=True)
    assert calls["n"] == 3 and study.history() == []


def test_a_storage_that_cannot_be_opened_is_one_study_error(tmp_path):
    with pytest.raises(StudyError, match="cannot open the study storage nosuchdialect://x"):
        Study("nosuchdialect://x", {"model": "m"})
