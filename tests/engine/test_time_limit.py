"""A search's wall-time limit (``time_limit``, ``--time-limit``): no trial starts after it,
the running one finishes, and the recipe comes from the trials so far.  The clock is a
fake one that only moves while a trial runs, so the trial counts are exact."""
from __future__ import annotations

import pytest

import autocompress.engine.trials as trial_steps
from autocompress.cli.main import main
from autocompress.core.budget import parse
from autocompress.core.errors import AutocompressError
from autocompress.core.trial import COMPLETE, search_trials
from autocompress.engine import backends
from autocompress.engine.runner import prepare, run_search
from autocompress.engine.settings import SearchSettings
from autocompress.engine.stopping import Stop
from autocompress.models.workload import load_workload

FAST = dict(budget=parse("flops=0.5"), strategy="random", finetune_steps=0, final_finetune_steps=0,
            calibration_batches=2)
TRIAL_SECONDS = 10.0


class FakeClock:
    """``time.time``/``time.sleep`` for the backends: the time moves only when told."""

    def __init__(self):
        self.now = 1_000.0

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock(monkeypatch):
    """A fake clock on which every trial takes ``TRIAL_SECONDS``."""
    fake = FakeClock()
    monkeypatch.setattr(backends, "time", fake)
    real = trial_steps.evaluate_trial

    def timed(*args, **kwargs):
        fake.now += TRIAL_SECONDS
        return real(*args, **kwargs)

    monkeypatch.setattr(trial_steps, "evaluate_trial", timed)
    return fake


def test_the_search_stops_at_the_limit_and_the_recipe_comes_from_the_trials_so_far(tmp_path, clock):
    settings = SearchSettings(trials=100, time_limit=25.0, **FAST)
    result = run_search(load_workload(), settings, tmp_path, progress=False)
    trials = search_trials(result.history)
    assert len(trials) == 3  # started at 0, 10 and 20 s; the one started at 20 s finished at 30 s and counts
    assert all(r.state == COMPLETE for r in trials)
    assert result.recipe.search["trials"] == 3
    best = max((r for r in trials if r.feasible), key=lambda r: r.score)
    assert result.recipe.search["best_trial"] == best.number
    assert (tmp_path / "recipe.yaml").is_file()

    again = run_search(load_workload(), settings, tmp_path, progress=False)  # a resume counts from its own start
    assert len(search_trials(again.history)) == 6 and again.recipe.search["trials"] == 6


def test_without_trials_a_time_limit_runs_as_many_as_fit_and_trials_still_stop_first(tmp_path, clock):
    alone = run_search(load_workload(), SearchSettings(time_limit=45.0, **FAST), tmp_path / "a", progress=False)
    assert len(search_trials(alone.history)) == 5  # more than none, fewer than random's default, by the clock
    first = run_search(load_workload(), SearchSettings(trials=2, time_limit=1e6, **FAST), tmp_path / "b",
                       progress=False)
    assert len(search_trials(first.history)) == 2


def test_shared_study_workers_stop_at_the_searchs_deadline(tmp_path, clock):
    search = prepare(load_workload(), SearchSettings(trials=100, **FAST), f"sqlite:///{tmp_path / 's.db'}",
                     shared=True)
    backends.start_clock(search.study, 15.0)
    history = backends.SharedStudyWorker().run(search, Stop())
    assert len(search_trials(history)) == 2
    backends.start_clock(search.study, None)  # a run without a limit clears the deadline
    assert search.study.deadline is None and not backends.time_is_up(search.study)


def test_the_ray_searcher_finishes_at_the_deadline(tmp_path, clock):
    pytest.importorskip("ray.tune")
    from ray.tune.search import Searcher

    from autocompress.engine.ray_tune import StrategySearcher

    search = prepare(load_workload(), SearchSettings(trials=100, **FAST), f"sqlite:///{tmp_path / 's.db'}")
    backends.start_clock(search.study, 5.0)
    searcher = StrategySearcher(search, Stop())
    assert searcher.suggest("a")["number"] == 0
    clock.now += 5.0
    assert searcher.suggest("b") == Searcher.FINISHED


@pytest.mark.parametrize("limit", [0, -3.0, float("nan")])
def test_a_limit_of_zero_or_less_is_refused_in_one_line(limit, capsys):
    with pytest.raises(AutocompressError, match="must be a number of seconds above 0"):
        SearchSettings(time_limit=limit, **FAST)
    assert main(["search", "--time-limit", str(limit), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--time-limit {limit}" in err and "above 0" in err
