from __future__ import annotations

import optuna
import pytest
import torch

import autocompress.engine.trials as trial_steps
from autocompress.cli.main import main
from autocompress.core.recipe import Recipe
from autocompress.engine import evaluation, recipes
from autocompress.models.workload import load_workload

FAST = ["--no-progress", "--final-finetune-steps", "60", "--finetune-steps", "5"]


def _trials(out):
    study = optuna.load_study(study_name="autocompress", storage=f"sqlite:///{out / 'study.db'}")
    return study.get_trials()


def test_search_writes_a_recipe_that_meets_the_budget_and_apply_replays_it(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "--budget", "flops=0.3", "--trials", "4", "--out", str(out), *FAST]) == 0
    printed = capsys.readouterr().out
    assert "FLOPs" in printed and "accuracy" in printed and "CPU latency" in printed
    assert (out / "study.db").exists()
    recipe = Recipe.load(out / "recipe.yaml")
    data = recipe.to_dict()
    assert list(data)[:6] == ["schema", "model", "budget", "layers", "metrics", "search"]
    assert recipe.search["trials"] == 4 and recipe.search["strategy"] == "bo" and recipe.search["seed"] == 0
    assert isinstance(recipe.search["best_trial"], int)
    base, small = recipe.metrics["base"], recipe.metrics["compressed"]
    for key in ("flops", "params", "accuracy"):
        assert key in base and key in small
    assert small["flops"] <= 0.3 * base["flops"]
    assert small["params"] < base["params"]
    assert recipe.layers["head"]["out_channels"] == 10

    pt2 = tmp_path / "model.pt2"
    assert main(["apply", str(out / "recipe.yaml"), "--out", str(pt2)]) == 0
    exported = torch.export.load(str(pt2)).module()
    for batch in (1, 7):
        assert exported(torch.randn(batch, 1, 8, 8)).shape == (batch, 10)

    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    capsys.readouterr()
    assert main(["apply", str(out / "recipe.yaml"), "--out", str(pt2), "--finetune", "0.5", "--onnx"]) == 0
    printed = capsys.readouterr().out
    steps = round(0.5 * len(load_workload().train))
    assert f"recovering 0.5 epochs ({steps} steps) with distill" in printed and "model.onnx" in printed
    graph = onnx.load(str(tmp_path / "model.onnx"))
    onnx.checker.check_model(graph)
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # any batch size
    assert [d.dim_value for d in graph.graph.output[0].type.tensor_type.shape.dim[1:]] == [10]

    model, metrics = recipes.replay(load_workload(), recipe)
    assert metrics["flops"] == small["flops"]
    assert abs(metrics["accuracy"] - small["accuracy"]) <= 0.5
    assert sum(p.numel() for p in model.parameters()) < sum(p.numel() for p in load_workload().model.parameters())


def test_same_command_resumes_and_keeps_finished_trials(tmp_path):
    out = tmp_path / "run"
    assert main(["search", "--trials", "3", "--out", str(out), "--strategy", "random", *FAST]) == 0
    first = [(t.number, t.params) for t in _trials(out)]
    assert main(["search", "--trials", "5", "--out", str(out), "--strategy", "random", *FAST]) == 0
    trials = _trials(out)
    assert [(t.number, t.params) for t in trials[:3]] == first
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 5
    assert Recipe.load(out / "recipe.yaml").search["trials"] == 5


def test_interrupt_keeps_trials_and_the_next_run_resumes(tmp_path, monkeypatch, capsys):
    out = tmp_path / "run"
    real = trial_steps.evaluate_trial
    calls = {"n": 0}

    def interrupted_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(trial_steps, "evaluate_trial", interrupted_on_third)
    assert main(["search", "--trials", "4", "--out", str(out), *FAST]) == 130
    assert "resume" in capsys.readouterr().err
    states = [t.state for t in _trials(out)]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 2
    assert not (out / "recipe.yaml").exists()
    monkeypatch.setattr(trial_steps, "evaluate_trial", real)
    assert main(["search", "--trials", "4", "--out", str(out), *FAST]) == 0
    trials = _trials(out)
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 4
    interrupted = trials[2]  # evaluated once more, first thing on resume, with the same candidate
    assert interrupted.state == optuna.trial.TrialState.FAIL
    assert interrupted.user_attrs["error"].startswith("interrupted")
    assert trials[3].user_attrs.get("retry_of") == 2 and trials[3].params == interrupted.params


@pytest.mark.parametrize("fault", [RuntimeError("evaluator exploded"),
                                   torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")],
                         ids=["raises", "out-of-memory"])
def test_a_failing_trial_is_recorded_and_the_search_goes_on(tmp_path, monkeypatch, fault):
    out = tmp_path / "run"
    real = trial_steps.evaluate_trial
    calls = {"n": 0}

    def fails_once(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise fault
        return real(*args, **kwargs)

    monkeypatch.setattr(trial_steps, "evaluate_trial", fails_once)
    assert main(["search", "--trials", "3", "--out", str(out), "--strategy", "random", *FAST]) == 0
    trials = _trials(out)
    failed = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and str(fault) in failed[0].user_attrs["error"]
    assert sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials) == 3


def test_a_nan_loss_fails_its_trials_and_a_streak_of_failures_stops_the_search(tmp_path):
    from autocompress.core.budget import parse
    from autocompress.core.errors import SearchError
    from autocompress.engine.runner import run_search
    from autocompress.engine.settings import SearchSettings
    from autocompress.engine.trials import FAILURES_IN_A_ROW

    settings = SearchSettings(budget=parse("flops=0.5"), trials=10, strategy="random", finetune_steps=5,
                              final_finetune_steps=0, calibration_batches=2, lr=1e30)  # the loss becomes NaN
    with pytest.raises(SearchError, match=f"the last {FAILURES_IN_A_ROW} trials failed.*fine-tune loss became nan"):
        run_search(load_workload(), settings, tmp_path / "run", progress=False)
    trials = _trials(tmp_path / "run")
    assert len(trials) == FAILURES_IN_A_ROW and all(t.state == optuna.trial.TrialState.FAIL for t in trials)


def test_no_trial_within_the_budget_keeps_the_closest_with_its_gap(tmp_path, monkeypatch, capsys):
    real = trial_steps.evaluate_trial

    def ten_percent_over(workload, space, candidate, settings, limits, *args, **kwargs):
        score, costs, _ = real(workload, space, candidate, settings, limits, *args, **kwargs)
        return score, {**costs, "flops": limits["flops"] * 1.1}, False

    monkeypatch.setattr(trial_steps, "evaluate_trial", ten_percent_over)
    out = tmp_path / "run"
    assert main(["search", "--trials", "2", "--out", str(out), "--strategy", "random", *FAST]) == 1
    err = capsys.readouterr().err
    assert "no finished trial met the budget" in err and "flops 10.0% over" in err and "closest.yaml" in err
    closest = Recipe.load(out / "closest.yaml")
    assert closest.search["over_budget"] == {"flops": pytest.approx(0.1)}
    assert not (out / "recipe.yaml").exists()


def test_a_study_for_other_options_is_not_mixed_in(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "--trials", "1", "--out", str(out), "--strategy", "uniform", *FAST]) == 0
    capsys.readouterr()
    assert main(["search", "--trials", "1", "--out", str(out), "--strategy", "uniform", "--budget", "flops=0.5",
                 *FAST]) == 2
    err = capsys.readouterr().err
    assert "budget" in err and "--out" in err and len(err.strip().splitlines()) == 1


def test_params_budget_searches_sparsity_too(tmp_path):
    out = tmp_path / "run"
    assert main(["search", "--budget", "params=0.1", "--trials", "2", "--out", str(out), "--strategy", "random",
                 *FAST]) == 0
    recipe = Recipe.load(out / "recipe.yaml")
    assert recipe.metrics["compressed"]["params"] <= 0.1 * recipe.metrics["base"]["params"]
    # the trials turned the sparsity knobs (the budget repair may have kept the best one dense)
    from autocompress.engine.study import Study

    trials = Study.open(f"sqlite:///{out / 'study.db'}").history()
    assert any(v < 1.0 for r in trials for k, v in r.candidate.items() if k.endswith("/sparsity"))


@pytest.mark.parametrize("options,check", [
    (["--budget", "flops=0.5", "--knobs", "rank"], lambda s: "rank" in s and "decomposition" in s),
    (["--budget", "params=0.7", "--knobs", "sparsity", "--sparsity-pattern", "2:4"],
     lambda s: s.get("pattern") == "2:4"),
    (["--budget", "size=0.2", "--knobs", "bits"], lambda s: s.get("bits", 32) < 32),
])
def test_rank_pattern_and_bits_knobs_end_to_end(tmp_path, options, check):
    out = tmp_path / "run"
    assert main(["search", "--trials", "2", "--out", str(out), "--strategy", "random", *FAST, *options]) == 0
    recipe = Recipe.load(out / "recipe.yaml")
    assert any(check(layer) for layer in recipe.layers.values())
    metric, ratio = options[1].split("=")
    assert recipe.metrics["compressed"][metric] <= float(ratio) * recipe.metrics["base"][metric]
    model, metrics = recipes.replay(load_workload(), recipe)
    assert metrics[metric] == recipe.metrics["compressed"][metric]
    assert not any(hasattr(m, "parametrizations") for m in model.modules())


def test_apply_int8_writes_a_real_int8_model_only_for_8_bit_recipes(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "--budget", "size=0.3", "--knobs", "bits", "--trials", "1", "--strategy", "uniform",
                 "--out", str(out), *FAST]) == 0
    recipe = Recipe.load(out / "recipe.yaml")
    recipe.layers["head"]["bits"] = 4
    recipe.save(out / "mixed.yaml")
    capsys.readouterr()
    assert main(["apply", str(out / "mixed.yaml"), "--int8"]) == 2
    assert "head at 4 bits" in capsys.readouterr().err
    for layer in recipe.layers.values():
        layer["bits"] = 8
    recipe.save(out / "int8.yaml")
    assert main(["apply", str(out / "int8.yaml"), "--int8", "--out", str(tmp_path / "m.pt2")]) == 0
    assert "int8:" in capsys.readouterr().out
    int8 = torch.jit.load(str(tmp_path / "m.int8.pt"))
    assert int8(torch.rand(3, 1, 8, 8)).shape == (3, 10)
    assert "quantized::conv2d" in str(int8.inlined_graph)  # real int8 kernels, not fake quantisation


def test_scan_trials_are_kept_apart_from_search_trials(tmp_path):
    """A strategy's sensitivity scan is recorded (purpose scan, BN recalibration only),
    does not count toward --trials and never becomes the recipe."""
    from autocompress.core.budget import parse
    from autocompress.engine.runner import run_search
    from autocompress.engine.settings import SearchSettings
    from autocompress.models.workload import load_workload
    from autocompress.search import STRATEGIES, Proposal, Strategy
    from autocompress.search.sensitivity import next_scan

    class ScanThenUniform(Strategy):
        name = "scan-then-uniform"

        def ask(self, problem, history):
            scan = next_scan(problem.space, history, (0.5,))
            return scan if scan is not None else Proposal({k.name: k.high for k in problem.space.knobs})

    STRATEGIES[ScanThenUniform.name] = ScanThenUniform
    try:
        settings = SearchSettings(budget=parse("flops=0.5"), trials=2, strategy=ScanThenUniform.name,
                                  finetune_steps=0, final_finetune_steps=0, calibration_batches=2)
        result = run_search(load_workload(), settings, tmp_path, progress=False)
    finally:
        del STRATEGIES[ScanThenUniform.name]
    history = result.history
    scans = [r for r in history if r.purpose == "scan"]
    searches = [r for r in history if r.purpose == "search"]
    space = evaluation.search_space(load_workload(), settings)
    assert len(scans) == len(space.knobs)  # one per knob, at density 0.5
    assert all(sum(v < 1 for v in r.candidate.values()) == 1 for r in scans)  # not projected
    assert len(searches) == 2 and result.recipe.search["trials"] == 2
    assert result.recipe.search["best_trial"] in {r.number for r in searches}


@pytest.mark.parametrize("strategy,knobs,kinds", [
    ("haloc", (), {"rank"}),            # a rank-only strategy: its kinds, not the budget's
    ("bo", (), {"channels"}),           # flops: the budget's default kinds
    ("haloc", ("channels", "rank"), {"channels", "rank"}),  # --knobs wins
])
def test_the_space_holds_the_strategys_kinds_unless_knobs_are_given(strategy, knobs, kinds):
    from autocompress.core.budget import parse
    from autocompress.engine.settings import SearchSettings

    settings = SearchSettings(budget=parse("flops=0.5"), strategy=strategy, knobs=knobs)
    space = evaluation.search_space(load_workload(), settings)
    assert {k.kind for k in space.knobs} == kinds


def test_without_trials_the_search_runs_the_strategys_default(tmp_path):
    from autocompress.core.budget import parse
    from autocompress.engine.runner import run_search
    from autocompress.engine.settings import SearchSettings
    from autocompress.search import STRATEGIES, Strategy

    class TwoTrials(Strategy):
        name, default_trials = "two-trials", 2

        def ask(self, problem, history):
            return {k.name: k.high for k in problem.space.knobs}

    STRATEGIES[TwoTrials.name] = TwoTrials
    try:
        settings = SearchSettings(budget=parse("flops=0.5"), strategy=TwoTrials.name,
                                  finetune_steps=0, final_finetune_steps=0, calibration_batches=2)
        result = run_search(load_workload(), settings, tmp_path, progress=False)
    finally:
        del STRATEGIES[TwoTrials.name]
    assert result.recipe.search["trials"] == 2 and len(result.history) == 2
