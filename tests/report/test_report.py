from __future__ import annotations

from autocompress.cli.main import main


def test_search_writes_a_report_with_the_pictures(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "--budget", "flops=0.5,latency=0.6@eyeriss", "--trials", "3", "--finetune-steps", "0",
                 "--final-finetune-steps", "0", "--out", str(out), "--no-progress"]) == 0
    assert f"report: {out / 'report.html'}" in capsys.readouterr().out
    page = (out / "report.html").read_text()
    for name in ("accuracy_vs_flops.png", "accuracy_vs_latency_eyeriss.png", "best_so_far.png", "layers.png"):
        data = (out / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000  # a real picture, not an empty canvas
        assert f"alt='{name}' src='data:image/png;base64," in page  # embedded: one self-contained file
    assert "Per-layer latency on eyeriss" in page and "block1.conv1" in page
    assert "flops=0.5" in page and "3 search trials" in page
    # the command on its own rewrites it
    (out / "report.html").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.html").is_file()


def test_report_of_a_folder_without_a_study_says_so(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no study (no study.db)" in capsys.readouterr().err


def test_the_page_counts_pruned_trials(tmp_path):
    from autocompress.core.trial import COMPLETE, FAILED, PRUNED, TrialRecord
    from autocompress.report.html import _page

    def trial(number, state):
        return TrialRecord(number=number, proposal={}, candidate={}, state=state,
                           score=90.0 if state == COMPLETE else None, metrics={}, feasible=state == COMPLETE)

    history = [trial(0, COMPLETE), trial(1, PRUNED), trial(2, PRUNED), trial(3, FAILED)]
    page = _page(tmp_path, {"budget": "flops=0.5", "strategy": "bo"}, history, None, [], [])
    assert "1 search trials, 0 scan trials, 1 failed, 2 pruned." in page
    page = _page(tmp_path, {"budget": "flops=0.5", "strategy": "bo"}, history[:1], None, [], [])
    assert "1 search trials, 0 scan trials, 0 failed.</p>" in page
