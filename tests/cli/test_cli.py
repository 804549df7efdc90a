from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import yaml

from autocompress.cli.main import main

USER_MODULE = textwrap.dedent('''
    import torch, torch.nn as nn

    def make_model():
        torch.manual_seed(0)
        return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.Flatten(), nn.Linear(8 * 6 * 6, 3))

    def make_data():
        g = torch.Generator().manual_seed(0)
        x = torch.randn(96, 1, 6, 6, generator=g)
        y = (x.mean(dim=(1, 2, 3)) > 0).long() + (x[:, 0, 0, 0] > 1).long()
        batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, 96, 32)]
        return batches, batches[:1]

    not_a_model = 42
''')


def _run(args, cwd):
    env = dict(os.environ)
    return subprocess.run([sys.executable, "-m", "autocompress", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=600)


def _one_clean_line(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


@pytest.mark.parametrize("budget,expect", [
    ("latency_p99=3", "unknown metric"),
    ("flops=3", "ratio above 1"),
    ("flops=0", "positive"),
    ("flops=-0.2", "positive"),
    ("flops=12Q", "unknown unit"),
    ("size=1.5", "ratio above 1"),
    ("flops", "metric=value"),
])
def test_bad_budgets_get_one_line_and_exit_2(budget, expect, capsys, tmp_path):
    assert main(["search", "--budget", budget, "--out", str(tmp_path / "r")]) == 2
    assert expect in _one_clean_line(capsys.readouterr().err)
    assert not (tmp_path / "r").exists()  # nothing is started for bad input


@pytest.mark.parametrize("content,expect", [
    (None, "cannot read recipe"),
    ("layers: [unclosed", "not valid YAML"),
    ("- just\n- a list\n", "not a mapping"),
    ("schema: 9\nmodel: {fingerprint: x}\nbudget: []\nlayers: {}\n", "schema 9"),
    ("schema: 1\nmodel: {fingerprint: x}\nbudget: []\nlayers: {a: {prune_magic: 1}}\n", "unknown operator"),
    ("schema: 1\nmodel: {fingerprint: x}\nbudget: []\nlayers: {a: {sparsity: 2}}\n", "sparsity"),
])
def test_bad_recipes_get_one_line_and_exit_2(content, expect, tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    if content is not None:
        path.write_text(content)
    for command in ("apply", "show"):
        assert main([command, str(path)]) == 2
        assert expect in _one_clean_line(capsys.readouterr().err)


def test_recipe_for_another_model_is_refused(tmp_path, capsys):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump({"schema": 1, "model": {"name": "resnet50", "fingerprint": "0123abcd"},
                                    "budget": ["flops=0.3"], "layers": {"fc": {"out_channels": 3}}}))
    assert main(["apply", str(path), "--out", str(tmp_path / "m.pt2")]) == 2
    assert "made for model 'resnet50'" in _one_clean_line(capsys.readouterr().err)
    assert not (tmp_path / "m.pt2").exists()


@pytest.mark.parametrize("spec,expect", [
    ("no_such_module_xyz:net", "cannot be imported"),
    ("usermodels:missing", "has no attribute"),
    ("usermodels:not_a_model", "not a torch.nn.Module"),
    ("usermodels", "package.module:attribute"),
])
def test_bad_model_options_get_one_line(spec, expect, tmp_path, capsys, monkeypatch):
    (tmp_path / "usermodels.py").write_text(USER_MODULE)
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--model", spec, "--data", "usermodels:make_data", "--out", str(tmp_path / "r")]) == 2
    assert expect in _one_clean_line(capsys.readouterr().err)


def test_weights_that_do_not_match_are_named(tmp_path, capsys, monkeypatch):
    import torch

    (tmp_path / "usermodels.py").write_text(USER_MODULE)
    torch.save({"0.weight": torch.zeros(2, 2)}, tmp_path / "w.pt")
    monkeypatch.chdir(tmp_path)
    assert main(["search", "--model", "usermodels:make_model", "--weights", str(tmp_path / "w.pt"),
                 "--data", "usermodels:make_data", "--out", str(tmp_path / "r")]) == 2
    assert "do not match the model" in _one_clean_line(capsys.readouterr().err)


def test_user_model_end_to_end_from_the_users_folder(tmp_path):
    """A user's own module, imported from the folder they run the command in."""
    (tmp_path / "usermodels.py").write_text(USER_MODULE)
    opts = ["--model", "usermodels:make_model", "--data", "usermodels:make_data"]
    found = _run(["search", *opts, "--budget", "flops=0.5,params=0.6", "--trials", "3", "--out", "run",
                  "--no-progress", "--final-finetune-steps", "20"], tmp_path)
    assert found.returncode == 0, found.stderr
    assert "validation split" in found.stdout  # no test split given: says which split it scored
    applied = _run(["apply", "run/recipe.yaml", *opts, "--out", "small.pt2"], tmp_path)
    assert applied.returncode == 0, applied.stderr
    check = subprocess.run(
        [sys.executable, "-c", "import sys, torch; m = torch.export.load('small.pt2').module(); "
         "print(tuple(m(torch.randn(4, 1, 6, 6)).shape), 'autocompress' in sys.modules)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert check.stdout.strip() == "(4, 3) False", check.stderr
    shown = _run(["show", "run/recipe.yaml"], tmp_path)
    assert shown.returncode == 0 and "out_channels" in shown.stdout


def _complete_trials(db):
    import sqlite3

    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute("select count(*) from trials where state = 'COMPLETE'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGINT", "SIGTERM", "SIGKILL"])
def test_stopped_search_resumes_with_the_same_command(tmp_path, sig):
    import signal
    import time

    args = [sys.executable, "-m", "autocompress", "search", "--trials", "12", "--out", "run", "--no-progress",
            "--strategy", "random", "--final-finetune-steps", "20"]
    # A shell without job control (CI) starts background commands with SIGINT ignored, and Python
    # then never raises KeyboardInterrupt; the child gets the default disposition, as in a terminal.
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while _complete_trials(tmp_path / "run" / "study.db") < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(getattr(signal, sig))
    _, err = proc.communicate(timeout=120)
    kept = _complete_trials(tmp_path / "run" / "study.db")
    assert 2 <= kept < 12
    if sig != "SIGKILL":
        assert proc.returncode == 128 + getattr(signal, sig) and "resume" in err and "Traceback" not in err
    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert _complete_trials(tmp_path / "run" / "study.db") == 12
    assert "best of 12 trials" in again.stdout


@pytest.mark.parametrize("args,expect", [
    (["--knobs", "channels,magic"], "unknown kind 'magic'"),
    (["--sparsity-pattern", "5:4"], "N:M with N < M"),
    (["--strategy", "annealing"], "unknown strategy"),
    (["--trials", "0"], "--trials 0"),
    (["--final-recovery", "annealing"], "unknown recovery regime 'annealing'; use one of distill"),
    (["--recovery-option", "rho=1"], "recovery regime 'distill' has no option 'rho'"),
    (["--recovery-option", "rho"], "--recovery-option 'rho' is not of the form key=value"),
    (["--lr", "0"], "--lr 0.0 must be a number above 0"),
])
def test_bad_search_options_get_one_line(args, expect, tmp_path, capsys):
    assert main(["search", "--out", str(tmp_path / "r"), *args]) == 2
    assert expect in _one_clean_line(capsys.readouterr().err)


@pytest.mark.parametrize("args,expect", [
    (["--recovery", "annealing"], "unknown recovery regime 'annealing'"),
    (["--recovery", "distill", "--recovery-option", "rho=1"], "has no option 'rho'"),
])
def test_bad_recovery_for_apply_gets_one_line(args, expect, tmp_path, capsys):
    from pathlib import Path

    recipe = Path(__file__).parent.parent / "data" / "recipe_demo_flops.yaml"
    assert main(["apply", str(recipe), "--out", str(tmp_path / "m.pt2"), *args]) == 2
    assert expect in _one_clean_line(capsys.readouterr().err)
    assert not (tmp_path / "m.pt2").exists()
